/**
 * The first frames of every connection, on top of an open WebSocket:
 *
 *     client                                   server
 *       hello {v, ferry, host, role, caps, nonce, maxFrame, window}   (both at once)
 *       auth {proof(client)}      ──►
 *                                 ◄──          auth {proof(server)}   (only after a right client proof)
 *       ready                     ──►                                 (the channel is open on both ends)
 *
 * A wrong version, a wrong proof or anything unexpected ends the handshake
 * with a ProtocolError that names the peer; the caller tells the peer why
 * and closes the socket.
 */
import { readFileSync } from 'node:fs';
import type { RawData, WebSocket } from 'ws';
import { authProof, newNonce, proofMatches } from './auth.js';
import { ProtocolError } from './errors.js';
import {
  Auth,
  ErrorFrame,
  Hello,
  PROTOCOL_VERSION,
  Ready,
  VersionMismatch,
  decodeFrame,
  encodeFrame,
  type AnyMessageDef,
  type Frame,
  type Message,
  type Role,
} from './frame.js';
import { TEXT_REFUSED, closeError, peerError, socketError } from './socket.js';

/** The Ferry release this is, as the hello tells peers. */
export const FERRY_VERSION: string = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** What this end announces in its hello. */
export interface LocalInfo {
  hostName: string;
  role: Role;
  capabilities: string[];
  maxFrameBytes: number;
  windowBytes: number;
}

/** What the peer announced in its hello, and where it is. */
export interface PeerInfo {
  /** host:port of the other end of the TCP connection. */
  address: string;
  host: string;
  role: Role;
  ferryVersion: string;
  protocol: number;
  capabilities: string[];
  /** The largest frame the peer accepts. */
  maxFrameBytes: number;
  /** The credit each of our streams to the peer starts with. */
  windowBytes: number;
}

export interface Handshaken {
  peer: PeerInfo;
  /**
   * Stops buffering and returns what arrived right behind the handshake.
   * Until then nothing the peer sends is lost: the channel calls this as it
   * attaches its own listeners.
   */
  takeBacklog(): Backlog;
}

export interface Backlog {
  frames: Frame[];
  /** What went wrong after these frames (a bad frame, the peer's error frame, a socket error). */
  failure: ProtocolError | null;
  /** The socket closed already, after these frames. */
  closed: { code: number; reason: Buffer } | null;
}

/**
 * Holds the frames that arrive during the handshake until they are asked
 * for. A decode error, the peer's error frame, a close or the deadline
 * fails the next read.
 */
class Inbox {
  private readonly frames: Frame[] = [];
  /** The first thing that went wrong: expect() throws it once the frames before it are read. */
  private failure: ProtocolError | null = null;
  /** The same, unless it was the socket closing. */
  private broken: ProtocolError | null = null;
  private closed: Backlog['closed'] = null;
  private waiter: (() => void) | null = null;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ws: WebSocket,
    /** How the peer is named in errors; set once its hello arrived. */
    public peer: string,
    private readonly maxFrameBytes: number,
    timeoutMs: number | undefined,
  ) {
    ws.on('message', this.onMessage);
    ws.on('error', this.onError);
    ws.on('close', this.onClose);
    if (timeoutMs !== undefined) {
      this.timer = setTimeout(() => this.fail(new ProtocolError('TIMEOUT', `${this.peer} did not complete the handshake within ${timeoutMs} ms`)), timeoutMs);
    }
  }

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    if (this.failure) return;
    let frame: Frame;
    try {
      if (!isBinary) throw new ProtocolError('MALFORMED', TEXT_REFUSED);
      frame = decodeFrame(data, { maxBytes: this.maxFrameBytes });
    } catch (e) {
      const err = e as ProtocolError;
      this.fail(err instanceof VersionMismatch ? err : new ProtocolError(err.code, `${this.peer} sent a bad frame: ${err.message}`, { cause: err }));
      return;
    }
    if (ErrorFrame.is(frame)) return this.fail(peerError(frame as Message<typeof ErrorFrame>, this.peer));
    this.frames.push(frame);
    this.wake();
  };

  private readonly onError = (error: Error): void => this.fail(socketError(error, this.peer, this.maxFrameBytes));

  private readonly onClose = (code: number, reason: Buffer): void => {
    this.closed = { code, reason };
    const err = closeError(code, reason, this.peer);
    this.fail(err.code === 'CLOSED' ? new ProtocolError('CLOSED', `${err.message} during the handshake`) : err, true);
  };

  private fail(error: ProtocolError, isClose = false): void {
    if (this.failure) return;
    this.failure = error;
    if (!isClose) this.broken = error;
    clearTimeout(this.timer);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** The next frame, which must be of type `def`. */
  async expect<D extends AnyMessageDef>(def: D): Promise<Message<D>> {
    while (this.frames.length === 0 && !this.failure) await new Promise<void>((r) => (this.waiter = r));
    const frame = this.frames.shift();
    if (!frame) throw this.failure!;
    if (frame.t !== def.type) throw new ProtocolError('UNEXPECTED', `${this.peer} sent '${frame.t}' during the handshake, expected '${def.type}'`);
    return frame as Message<D>;
  }

  /** Stops listening; returns what arrived after the last frame read. */
  detach(): Backlog {
    clearTimeout(this.timer);
    this.ws.off('message', this.onMessage);
    this.ws.off('error', this.onError);
    this.ws.off('close', this.onClose);
    return { frames: this.frames.splice(0), failure: this.broken, closed: this.closed };
  }
}

function helloOf(local: LocalInfo, nonce: Uint8Array): Message<typeof Hello> {
  return Hello.make({
    v: PROTOCOL_VERSION,
    ferry: FERRY_VERSION,
    host: local.hostName,
    role: local.role,
    caps: local.capabilities,
    nonce,
    maxFrame: local.maxFrameBytes,
    window: local.windowBytes,
  });
}

function peerOf(hello: Message<typeof Hello>, address: string): PeerInfo {
  return {
    address,
    host: hello.host,
    role: hello.role,
    ferryVersion: hello.ferry,
    protocol: hello.v,
    capabilities: hello.caps,
    maxFrameBytes: hello.maxFrame,
    windowBytes: hello.window,
  };
}

/** "agent host2 (10.0.0.2:7468)": how a peer is named once its hello arrived. */
export function peerName(peer: PeerInfo): string {
  return `${peer.role} ${peer.host} (${peer.address})`;
}

export interface HandshakeOptions {
  token: string;
  local: LocalInfo;
  /** host:port of the peer. */
  address: string;
  /** The server's limit; the client keeps its own time (it covers the connection too). */
  timeoutMs?: number;
}

function send(ws: WebSocket, msg: Parameters<typeof encodeFrame>[0]): void {
  ws.send(encodeFrame(msg));
}

/** Listens from the moment it is called (the peer's hello may come with the upgrade response), until takeBacklog() or a failure. */
function withInbox(ws: WebSocket, name: string, opts: HandshakeOptions, run: (inbox: Inbox) => Promise<PeerInfo>): Promise<Handshaken> {
  const inbox = new Inbox(ws, name, opts.local.maxFrameBytes, opts.timeoutMs);
  return run(inbox).then(
    (peer) => ({ peer, takeBacklog: () => inbox.detach() }),
    (error: unknown) => {
      inbox.detach();
      throw error;
    },
  );
}

/** The client's side; call it as soon as the socket exists, `opened` resolving once it is open. */
export function clientHandshake(ws: WebSocket, opts: HandshakeOptions, opened: Promise<void>): Promise<Handshaken> {
  const name = `agent at ${opts.address}`;
  return withInbox(ws, name, opts, async (inbox) => {
    await opened;
    const nonce = newNonce();
    send(ws, helloOf(opts.local, nonce));
    let hello: Message<typeof Hello>;
    try {
      hello = await inbox.expect(Hello);
    } catch (e) {
      if (e instanceof VersionMismatch) throw new ProtocolError('VERSION', `${name} speaks protocol ${e.peerVersion}, this Ferry speaks ${PROTOCOL_VERSION}`);
      throw e;
    }
    send(ws, Auth.make({ proof: authProof(opts.token, 'client', opts.local.role, nonce, hello.nonce) }));
    const auth = await inbox.expect(Auth);
    if (!proofMatches(authProof(opts.token, 'server', hello.role, nonce, hello.nonce), auth.proof)) {
      throw new ProtocolError('AUTH', `${name} does not know the cluster token (its proof is wrong)`);
    }
    send(ws, Ready.make({}));
    return peerOf(hello, opts.address);
  });
}

export function serverHandshake(ws: WebSocket, opts: HandshakeOptions): Promise<Handshaken> {
  return withInbox(ws, `client at ${opts.address}`, opts, async (inbox) => {
    const nonce = newNonce();
    send(ws, helloOf(opts.local, nonce));
    let hello: Message<typeof Hello>;
    try {
      hello = await inbox.expect(Hello);
    } catch (e) {
      if (e instanceof VersionMismatch) throw new ProtocolError('VERSION', `${inbox.peer} speaks protocol ${e.peerVersion}, this agent speaks ${PROTOCOL_VERSION}`);
      throw e;
    }
    const peer = peerOf(hello, opts.address);
    inbox.peer = peerName(peer);
    const auth = await inbox.expect(Auth);
    if (!proofMatches(authProof(opts.token, 'client', hello.role, hello.nonce, nonce), auth.proof)) {
      throw new ProtocolError('AUTH', `${inbox.peer} sent a wrong token proof`);
    }
    send(ws, Auth.make({ proof: authProof(opts.token, 'server', opts.local.role, hello.nonce, nonce) }));
    await inbox.expect(Ready);
    return peer;
  });
}
