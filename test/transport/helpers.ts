/**
 * What the transport tests share: test messages, servers and clients that
 * are closed after each test whatever happens, a peer that speaks the
 * protocol by hand (to misbehave in ways the real one cannot), and a seeded
 * PRNG.
 */
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { WebSocket, WebSocketServer, type ClientOptions, type RawData } from 'ws';
import { z } from 'zod';
import { authProof } from '../../src/transport/auth.js';
import { Auth, Hello, PROTOCOL_VERSION, Ready, decodeFrame, encodeFrame, type AnyMessage, type Frame } from '../../src/transport/frame.js';
import { FERRY_PATH } from '../../src/transport/server.js';
import {
  ProtocolError,
  connect,
  defineMessage,
  listen,
  type Channel,
  type ConnectOptions,
  type ListenOptions,
  type Server,
} from '../../src/transport/index.js';
import { waitFor } from '../helpers/wait.js';

export const TOKEN = 'the-cluster-token-for-tests';

export const Echo = defineMessage('test.echo', z.object({ text: z.string() }));
export const EchoReply = defineMessage('test.echo.reply', z.object({ text: z.string() }));
export const Fail = defineMessage('test.fail', z.object({ code: z.string(), message: z.string() }));
export const Never = defineMessage('test.never', z.object({}));
export const Note = defineMessage('test.note', z.object({ n: z.number().int() }));

const closers: (() => unknown)[] = [];

/** Registers `close` to run after the current test, pass or fail (latest first). */
export function onCleanup(close: () => unknown): void {
  closers.push(close);
}

/** In a describe: after every test, closes everything the test opened through these helpers. */
export function useCleanup(): void {
  afterEach(async () => {
    const errors: unknown[] = [];
    for (const close of closers.splice(0).reverse()) {
      try {
        await close();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length) throw errors[0];
  });
}

export interface TestServer {
  server: Server;
  address: string;
  /** One line per refused connection. */
  logs: string[];
  /** Channels the server accepted, in order. */
  channels: Channel[];
  /** The n-th accepted channel (from 0), once it exists. */
  channel(n: number): Promise<Channel>;
}

/** The handlers every test server has: echo, fail on demand, never answer, count notes. */
export function serveBasics(channel: Channel, notes: number[] = []): void {
  channel.handle(Echo, (m) => EchoReply.make({ text: m.text }));
  channel.handle(Fail, (m) => {
    throw Object.assign(new Error(m.message), { code: m.code });
  });
  channel.handle(Never, () => new Promise<never>(() => {}));
  channel.on(Note, (m) => void notes.push(m.n));
}

export async function startServer(opts: Partial<ListenOptions> = {}): Promise<TestServer> {
  const logs: string[] = [];
  const channels: Channel[] = [];
  const server = await listen({
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    hostName: 'server',
    log: (line) => logs.push(line),
    ...opts,
    onChannel: (channel) => {
      channels.push(channel);
      if (opts.onChannel) return opts.onChannel(channel);
      serveBasics(channel);
    },
  });
  onCleanup(() => server.close());
  return {
    server,
    address: server.address,
    logs,
    channels,
    async channel(n) {
      await waitFor(`the server to accept channel #${n}`, () => channels.length > n);
      return channels[n]!;
    },
  };
}

export async function dial(address: string, opts: Partial<ConnectOptions> = {}): Promise<Channel> {
  const channel = await connect(address, { token: TOKEN, hostName: 'client', role: 'cli', timeoutMs: 5000, ...opts });
  onCleanup(() => channel.close());
  return channel;
}

/** Asserts that `promise` rejects with a ProtocolError of `code` whose message matches `message`; returns it. */
export async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ProtocolError> {
  let error: unknown;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  assert.ok(error, `expected a ProtocolError ${code}, but it resolved`);
  assert.ok(error instanceof ProtocolError, `expected a ProtocolError ${code}, got ${String(error)}`);
  assert.equal(error.code, code, `expected code ${code}: ${error.message}`);
  if (message) assert.match(error.message, message);
  return error;
}

/** The server still takes a good client and answers it. */
export async function assertServes(address: string): Promise<void> {
  const channel = await dial(address);
  const reply = await channel.request(Echo.make({ text: 'still there?' }), EchoReply, 5000);
  assert.equal(reply.text, 'still there?');
  await channel.close();
}

// Frames that break the rules are packed without the transport's checks.
const rawPackr = new Packr({ useRecords: false, moreTypes: false });

export function pack(value: unknown): Uint8Array {
  return rawPackr.pack(value);
}

/**
 * A WebSocket that speaks the protocol by hand: it can send anything,
 * collects what it receives, and can run either side of the handshake.
 */
export class RawPeer {
  readonly frames: Frame[] = [];
  readonly undecodable: ProtocolError[] = [];
  /** The close code and reason once the socket closed. */
  closedWith: { code: number; reason: string } | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(readonly ws: WebSocket) {
    ws.on('error', () => {});
    ws.on('message', (data: RawData) => {
      try {
        this.frames.push(decodeFrame(data));
      } catch (e) {
        this.undecodable.push(e as ProtocolError);
      }
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closedWith = { code, reason: reason.toString() };
        resolve(this.closedWith);
      }),
    );
    onCleanup(() => ws.terminate());
  }

  static async connect(address: string, options: ClientOptions = {}): Promise<RawPeer> {
    const ws = new WebSocket(`ws://${address}${FERRY_PATH}`, { perMessageDeflate: false, ...options });
    const peer = new RawPeer(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return peer;
  }

  send(data: Uint8Array | string): void {
    this.ws.send(data);
  }

  sendMsg(msg: AnyMessage): void {
    this.ws.send(encodeFrame(msg));
  }

  /** The next frame received of type `t` (earlier ones of other types are skipped and kept). */
  async expect(t: string, timeoutMs = 5000): Promise<AnyMessage> {
    let found: Frame | undefined;
    await waitFor(`a '${t}' frame`, () => (found = this.frames.find((f) => f.t === t)) !== undefined || this.closedWith !== null, timeoutMs);
    if (!found) throw new Error(`the socket closed (${JSON.stringify(this.closedWith)}) before a '${t}' frame arrived; got ${this.frames.map((f) => f.t).join(', ')}`);
    this.frames.splice(this.frames.indexOf(found), 1);
    return found as AnyMessage;
  }

  /** The client side of the handshake, done right (or with another version). */
  async handshake(opts: { token?: string; version?: number } = {}): Promise<void> {
    const nonce = new Uint8Array(32).fill(7);
    const hello = { ...Hello.make({ v: PROTOCOL_VERSION, ferry: 'raw', host: 'raw', role: 'agent', caps: [], nonce, maxFrame: 1 << 24, window: 1 << 23 }) };
    hello.v = opts.version ?? PROTOCOL_VERSION;
    this.send(pack(hello));
    if (opts.version !== undefined && opts.version !== PROTOCOL_VERSION) return;
    const theirs = (await this.expect('hello')) as unknown as { nonce: Uint8Array };
    this.sendMsg(Auth.make({ proof: authProof(opts.token ?? TOKEN, 'client', 'agent', nonce, theirs.nonce) }));
    await this.expect('auth');
    this.sendMsg(Ready.make({}));
  }
}

/**
 * A WebSocket server that speaks the protocol by hand: `script` runs for
 * each connection with a RawPeer. `handshakeAsServer` does the server side.
 */
export async function startRawServer(script: (peer: RawPeer) => void | Promise<void>, options: { autoPong?: boolean } = {}): Promise<string> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: FERRY_PATH, autoPong: options.autoPong ?? true });
  wss.on('connection', (ws) => void script(new RawPeer(ws)));
  await new Promise<void>((r) => wss.once('listening', r));
  onCleanup(() => new Promise<void>((r) => wss.close(() => r())));
  return `127.0.0.1:${(wss.address() as { port: number }).port}`;
}

/** The server side of the handshake, by hand; `version` makes its hello speak another protocol. */
export async function handshakeAsServer(peer: RawPeer, opts: { version?: number } = {}): Promise<void> {
  const nonce = new Uint8Array(32).fill(9);
  const hello: Record<string, unknown> = { ...Hello.make({ v: PROTOCOL_VERSION, ferry: 'raw', host: 'raw-server', role: 'agent', caps: [], nonce, maxFrame: 1 << 24, window: 1 << 23 }) };
  hello.v = opts.version ?? PROTOCOL_VERSION;
  peer.send(pack(hello));
  if (hello.v !== PROTOCOL_VERSION) return;
  const theirs = (await peer.expect('hello')) as unknown as { nonce: Uint8Array; role: 'agent' | 'cli' };
  await peer.expect('auth');
  peer.sendMsg(Auth.make({ proof: authProof(TOKEN, 'server', 'agent', theirs.nonce, nonce) }));
  await peer.expect('ready');
}

/** mulberry32: a small seeded PRNG, so a failing fuzz run can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
