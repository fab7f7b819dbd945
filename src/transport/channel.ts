/**
 * A channel: one authenticated WebSocket between two Ferry ends, carrying
 * one-way messages, requests with replies, and streams (stream.ts).
 *
 * Whatever goes wrong on the wire (a malformed or unexpected frame, a
 * heartbeat timeout, the peer's error frame, a lost connection) closes the
 * channel: every pending request, stream write and stream read rejects with
 * that error and `closed` resolves with it. Nothing is thrown out of a
 * socket event, so a bad peer cannot crash the process. Errors are delivered
 * through `closed` (a promise that never rejects) rather than an 'error'
 * event, because an 'error' event nobody listens to would crash the process.
 *
 * Handlers (on, handle, onStream) must be registered before the channel's
 * first frame is handled: in listen()'s onChannel before it awaits, and
 * right after connect() resolves. A one-way message nobody handles closes
 * the channel; a request nobody handles gets an UNKNOWN_REQUEST error reply.
 */
import type { RawData, WebSocket } from 'ws';
import type { z } from 'zod';
import { ProtocolError, RemoteError, asProtocolError } from './errors.js';
import {
  Abort,
  Cancel,
  Credit,
  Done,
  End,
  ErrorFrame,
  Open,
  Reply,
  Request,
  decodeFrame,
  encodeData,
  encodeFrame,
  isData,
  messageDef,
  type AnyMessage,
  type AnyMessageDef,
  type DataFrame,
  type Frame,
  type Message,
} from './frame.js';
import { peerName, type Backlog, type LocalInfo, type PeerInfo } from './handshake.js';
import { TEXT_REFUSED, closeCleanly, closeError, closeWithError, peerError, socketError } from './socket.js';
import { StreamReader, StreamWriter, type StreamLink } from './stream.js';

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 2000;
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/**
 * Stream writes wait while more than this is handed to the socket and not
 * yet written to the kernel: ws's bufferedAmount, counted through send
 * callbacks so that a waiting writer is woken instead of polling.
 */
export const SOCKET_HIGH_WATER_BYTES = 4 * 1024 * 1024;

export interface ChannelOptions {
  /** How often a WebSocket ping goes out (default 2 s). */
  heartbeatIntervalMs?: number;
  /**
   * The channel closes with TIMEOUT after this long without a frame, ping or
   * pong from the peer (default 10 s). It must exceed the time the slowest
   * link takes to carry one frame.
   */
  heartbeatTimeoutMs?: number;
  /** request()'s timeout when it is not given one (default 30 s). */
  requestTimeoutMs?: number;
}

export interface ChannelStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Handed to the socket, not yet written to the kernel. */
  unflushedBytes: number;
  streamsOut: number;
  streamsIn: number;
  /** The most credit any stream of this channel ever had in flight (never above the peer's window). */
  maxStreamInFlightBytes: number;
}

export type MessageHandler<D extends AnyMessageDef> = (msg: Message<D>, channel: Channel) => void | Promise<void>;
export type RequestHandler<D extends AnyMessageDef> = (msg: Message<D>, channel: Channel) => AnyMessage | Promise<AnyMessage>;
export type StreamHandler<M> = (reader: StreamReader, meta: M, channel: Channel) => void | Promise<void>;

interface Pending {
  type: string;
  expect: AnyMessageDef;
  resolve: (msg: AnyMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface StreamRegistration {
  handler: StreamHandler<unknown>;
  meta: z.ZodType<unknown> | undefined;
}

function errorCode(e: unknown, fallback: string): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length > 0 && code.length <= 64 ? code : fallback;
}

function errorMessage(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).slice(0, 4096);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

export class Channel {
  /** Resolves when the channel is closed: null for a clean close by either end, else why it closed. Never rejects. */
  readonly closed: Promise<ProtocolError | null>;
  /** How the peer is named in errors: "agent host2 (10.0.0.2:7468)". */
  readonly name: string;

  private state: 'starting' | 'open' | 'closed' = 'starting';
  private error: ProtocolError | null = null;
  private resolveClosed!: (e: ProtocolError | null) => void;
  private readonly socketClosed: Promise<void>;
  private readonly backlog: Frame[];
  /** What ended the socket before start(): handled after the backlog, as it happened after those frames. */
  private pendingFailure: ProtocolError | null;
  private pendingClose: Backlog['closed'];
  private readonly heartbeatIntervalMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private pinger: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private lastHeard = Date.now();

  private nextRequestId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly messageHandlers = new Map<string, MessageHandler<AnyMessageDef>>();
  private readonly requestHandlers = new Map<string, RequestHandler<AnyMessageDef>>();
  private readonly streamHandlers = new Map<string, StreamRegistration>();
  private lastWriterId = 0;
  private lastReaderId = 0;
  private readonly writers = new Map<number, StreamWriter>();
  private readonly readers = new Map<number, StreamReader>();

  private unflushed = 0;
  private drainWaiters: (() => void)[] = [];
  private readonly counters = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, maxStreamInFlightBytes: 0 };
  private readonly link: StreamLink;

  /** Made by listen() and connect() once the handshake is through; start() begins handling frames. */
  constructor(
    private readonly ws: WebSocket,
    readonly peer: PeerInfo,
    readonly local: LocalInfo,
    backlog: Backlog,
    options: ChannelOptions = {},
  ) {
    this.name = peerName(peer);
    this.backlog = backlog.frames;
    this.pendingFailure = backlog.failure;
    this.pendingClose = backlog.closed ?? (ws.readyState === ws.CLOSED ? { code: 1006, reason: Buffer.alloc(0) } : null);
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.socketClosed = ws.readyState === ws.CLOSED ? Promise.resolve() : new Promise((r) => ws.once('close', () => r()));
    this.link = {
      peer: this.name,
      sendControl: (msg) => this.sendControl(msg),
      sendData: (s, n, payload, zeros) => this.transmit(encodeData(s, n, payload, zeros, { maxBytes: this.peer.maxFrameBytes })),
      writable: () => this.writable(),
      closedWith: () => (this.state === 'closed' ? this.closeReason() : null),
      noteInFlight: (bytes) => (this.counters.maxStreamInFlightBytes = Math.max(this.counters.maxStreamInFlightBytes, bytes)),
      forgetWriter: (id) => this.writers.delete(id),
      forgetReader: (id) => this.readers.delete(id),
    };
    ws.on('message', this.onMessage);
    ws.on('ping', this.onActivity);
    ws.on('pong', this.onActivity);
    ws.on('error', this.onSocketError);
    ws.on('close', this.onSocketClose);
  }

  /** Handles the frames that arrived with the handshake, then each as it comes; starts the heartbeat. */
  start(): void {
    if (this.state !== 'starting') return;
    this.state = 'open';
    this.lastHeard = Date.now();
    this.pinger = setInterval(() => {
      try {
        this.ws.ping();
      } catch {
        // The socket is closing; its 'close' event ends the channel.
      }
    }, this.heartbeatIntervalMs);
    this.armWatchdog(this.heartbeatTimeoutMs);
    for (const frame of this.backlog.splice(0)) {
      if (this.state !== 'open') break;
      this.dispatch(frame);
    }
    if (this.pendingFailure) this.fail(this.pendingFailure, this.ws.readyState === this.ws.OPEN);
    else if (this.pendingClose) this.onSocketClose(this.pendingClose.code, this.pendingClose.reason);
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  get stats(): ChannelStats {
    return { ...this.counters, unflushedBytes: this.unflushed, streamsOut: this.writers.size, streamsIn: this.readers.size };
  }

  // ---- the API -------------------------------------------------------------------

  /** Sends a one-way message. Throws ProtocolError: CLOSED, UNKNOWN_TYPE, BAD_FIELDS, TOO_LARGE. */
  send(msg: AnyMessage): void {
    if (messageDef(msg.t)?.internal) throw new ProtocolError('BAD_FIELDS', `'${msg.t}' is a frame of the transport itself`);
    this.sendControl(msg);
  }

  /**
   * Sends a request and resolves with the peer's reply, which must be of
   * type `expect`. Rejects with RemoteError (the peer's handler failed, with
   * its code and message), or ProtocolError: TIMEOUT, UNEXPECTED (a reply of
   * another type), or why the channel closed.
   */
  request<D extends AnyMessageDef>(msg: AnyMessage, expect: D, timeoutMs = this.requestTimeoutMs): Promise<Message<D>> {
    let frame: Uint8Array;
    try {
      this.throwIfClosed();
      frame = encodeFrame(Request.make({ id: this.nextRequestId, msg }), { maxBytes: this.peer.maxFrameBytes });
    } catch (e) {
      return Promise.reject(e);
    }
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('TIMEOUT', `${this.name} did not answer '${msg.t}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { type: msg.t, expect, resolve: resolve as (m: AnyMessage) => void, reject, timer });
      this.transmit(frame);
    });
  }

  /**
   * Answers requests of type `def`. The handler returns the reply message; a
   * handler that throws sends back an error whose code is the error's `code`
   * (a string), else 'ERROR', and whose message is the error's message.
   */
  handle<D extends AnyMessageDef>(def: D, handler: RequestHandler<D>): void {
    this.checkHandlerType(def, this.requestHandlers);
    this.requestHandlers.set(def.type, handler as unknown as RequestHandler<AnyMessageDef>);
  }

  /** Handles one-way messages of type `def`. A handler that throws closes the channel (HANDLER). */
  on<D extends AnyMessageDef>(def: D, handler: MessageHandler<D>): void {
    this.checkHandlerType(def, this.messageHandlers);
    this.messageHandlers.set(def.type, handler as unknown as MessageHandler<AnyMessageDef>);
  }

  /** Opens a stream to the peer's onStream(name) handler. Throws if the channel is closed. */
  openStream(name: string, meta: Record<string, unknown> = {}): StreamWriter {
    this.throwIfClosed();
    const id = this.lastWriterId + 1;
    this.sendControl(Open.make({ s: id, name, meta }));
    this.lastWriterId = id;
    const writer = new StreamWriter(this.link, id, name, this.peer.windowBytes, this.peer.maxFrameBytes);
    this.writers.set(id, writer);
    return writer;
  }

  /**
   * Receives the streams the peer opens under `name`. `metaSchema` checks
   * the stream's meta (a stream with bad meta is cancelled). When the handler
   * throws, the stream is cancelled with its error. The writer's end()
   * resolves once the handler has returned and the reader has been read to
   * its end.
   */
  onStream<M = Record<string, unknown>>(name: string, handler: StreamHandler<M>, metaSchema?: z.ZodType<M>): void {
    if (this.streamHandlers.has(name)) throw new Error(`a handler for stream '${name}' is already registered`);
    this.streamHandlers.set(name, { handler: handler as StreamHandler<unknown>, meta: metaSchema });
  }

  /** Closes the channel cleanly: what is pending rejects with CLOSED; resolves when the socket is closed. */
  close(): Promise<void> {
    if (this.state !== 'closed') {
      this.shutDown(null, new ProtocolError('CLOSED', `the channel to ${this.name} was closed by this side`));
      closeCleanly(this.ws);
    }
    return this.socketClosed;
  }

  // ---- sending -------------------------------------------------------------------

  private throwIfClosed(): void {
    if (this.state === 'closed') throw this.closeReason();
  }

  private closeReason(): ProtocolError {
    return this.error ?? new ProtocolError('CLOSED', `the channel to ${this.name} is closed`);
  }

  private sendControl(msg: AnyMessage): void {
    this.throwIfClosed();
    this.transmit(encodeFrame(msg, { maxBytes: this.peer.maxFrameBytes }));
  }

  private transmit(frame: Uint8Array): void {
    const size = frame.byteLength;
    this.unflushed += size;
    this.counters.framesSent++;
    this.counters.bytesSent += size;
    this.ws.send(frame, () => {
      this.unflushed -= size;
      if (this.unflushed <= SOCKET_HIGH_WATER_BYTES) this.wakeWriters();
    });
  }

  private wakeWriters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private writable(): Promise<void> {
    if (this.unflushed <= SOCKET_HIGH_WATER_BYTES || this.state === 'closed') return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  // ---- receiving -----------------------------------------------------------------

  private readonly onActivity = (): void => {
    this.lastHeard = Date.now();
  };

  private armWatchdog(ms: number): void {
    this.watchdog = setTimeout(() => {
      const silent = Date.now() - this.lastHeard;
      if (silent >= this.heartbeatTimeoutMs) {
        this.fail(new ProtocolError('TIMEOUT', `${this.name} sent nothing for ${silent} ms (heartbeat timeout ${this.heartbeatTimeoutMs} ms)`));
      } else {
        this.armWatchdog(this.heartbeatTimeoutMs - silent);
      }
    }, ms);
  }

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    if (this.state === 'closed' || this.pendingFailure) return;
    this.lastHeard = Date.now();
    this.counters.framesReceived++;
    let frame: Frame;
    try {
      if (!isBinary) throw new ProtocolError('MALFORMED', TEXT_REFUSED);
      this.counters.bytesReceived += (data as Buffer).byteLength;
      frame = decodeFrame(data, { maxBytes: this.local.maxFrameBytes });
    } catch (e) {
      const err = e as ProtocolError;
      this.fail(new ProtocolError(err.code, `${this.name} sent a bad frame: ${err.message}`, { cause: err }));
      return;
    }
    if (this.state === 'starting') this.backlog.push(frame);
    else this.dispatch(frame);
  };

  private readonly onSocketError = (error: Error): void => {
    this.fail(socketError(error, this.name, this.local.maxFrameBytes), false);
  };

  private readonly onSocketClose = (code: number, reason: Buffer): void => {
    if (this.state === 'starting') {
      this.pendingClose = { code, reason };
      return;
    }
    if (this.state === 'closed') return;
    const error = code === 1000 ? null : closeError(code, reason, this.name);
    this.shutDown(error, error ?? new ProtocolError('CLOSED', `${this.name} closed the channel`));
  };

  private dispatch(frame: Frame): void {
    try {
      if (isData(frame)) this.reader(frame.s, 'data').onData(frame as DataFrame);
      else this.dispatchControl(frame);
    } catch (e) {
      this.fail(asProtocolError(e, 'UNEXPECTED'));
    }
  }

  private dispatchControl(frame: AnyMessage): void {
    switch (frame.t) {
      case Request.type:
        return this.onRequest(frame as Message<typeof Request>);
      case Reply.type:
        return this.onReply(frame as Message<typeof Reply>);
      case Open.type:
        return this.onOpen(frame as Message<typeof Open>);
      case End.type:
        return this.reader((frame as Message<typeof End>).s, 'end').onEnd(frame as Message<typeof End>);
      case Abort.type:
        return this.reader((frame as Message<typeof Abort>).s, 'abort').onAbort(frame as Message<typeof Abort>);
      case Credit.type:
        return this.writer((frame as Message<typeof Credit>).s)?.onCredit((frame as Message<typeof Credit>).bytes);
      case Done.type:
        return this.writer((frame as Message<typeof Done>).s)?.onDone();
      case Cancel.type:
        return this.writer((frame as Message<typeof Cancel>).s)?.onCancel(frame as Message<typeof Cancel>);
      case ErrorFrame.type:
        return this.fail(peerError(frame as Message<typeof ErrorFrame>, this.name));
    }
    if (messageDef(frame.t)?.internal) throw new ProtocolError('UNEXPECTED', `${this.name} sent '${frame.t}' after the handshake`);
    const handler = this.messageHandlers.get(frame.t);
    if (!handler) throw new ProtocolError('UNEXPECTED', `${this.name} sent '${frame.t}', which nothing on this side handles`);
    this.runHandler(frame.t, () => handler(frame, this));
  }

  /** Runs a one-way message handler: a throw or a rejection closes the channel instead of escaping. */
  private runHandler(type: string, run: () => unknown): void {
    const failed = (e: unknown): void => this.fail(asProtocolError(e, 'HANDLER', `the handler for '${type}' failed`), true);
    try {
      const result = run();
      if (isThenable(result)) result.then(undefined, failed);
    } catch (e) {
      failed(e);
    }
  }

  private onRequest(frame: Message<typeof Request>): void {
    const { id, msg } = frame;
    const reply = (outcome: { msg: AnyMessage } | { error: { code: string; message: string } }): void => {
      if (this.state === 'closed') return;
      let encoded: Uint8Array;
      try {
        encoded = encodeFrame(Reply.make({ id, ...outcome }), { maxBytes: this.peer.maxFrameBytes });
      } catch (e) {
        const message = `the reply to '${msg.t}' could not be sent: ${errorMessage(e)}`.slice(0, 4096);
        encoded = encodeFrame(Reply.make({ id, error: { code: errorCode(e, 'ERROR'), message } }));
      }
      this.transmit(encoded);
    };
    const handler = this.requestHandlers.get(msg.t);
    if (!handler) return reply({ error: { code: 'UNKNOWN_REQUEST', message: `${this.local.hostName} has no handler for '${msg.t}'` } });
    const failed = (e: unknown): void => reply({ error: { code: errorCode(e, 'ERROR'), message: errorMessage(e) } });
    try {
      const result = handler(msg, this);
      if (isThenable(result)) result.then((m) => reply({ msg: m as AnyMessage }), failed);
      else reply({ msg: result });
    } catch (e) {
      failed(e);
    }
  }

  private onReply(frame: Message<typeof Reply>): void {
    const entry = this.pending.get(frame.id);
    if (!entry) {
      // A reply after its request timed out is late, not wrong; one to a request never made is wrong.
      if (frame.id >= this.nextRequestId || frame.id === 0) throw new ProtocolError('UNEXPECTED', `${this.name} replied to request ${frame.id}, which was never sent`);
      return;
    }
    this.pending.delete(frame.id);
    clearTimeout(entry.timer);
    if ('error' in frame) {
      entry.reject(new RemoteError(frame.error.code, `${this.name} failed '${entry.type}': ${frame.error.message}`, entry.type));
    } else if (frame.msg.t !== entry.expect.type) {
      entry.reject(new ProtocolError('UNEXPECTED', `${this.name} answered '${entry.type}' with '${frame.msg.t}', expected '${entry.expect.type}'`));
    } else {
      entry.resolve(frame.msg);
    }
  }

  private onOpen(frame: Message<typeof Open>): void {
    if (frame.s <= this.lastReaderId) throw new ProtocolError('UNEXPECTED', `${this.name} opened stream ${frame.s} again (stream ids must increase)`);
    this.lastReaderId = frame.s;
    const reader = new StreamReader(this.link, frame.s, frame.name, frame.meta, this.local.windowBytes);
    this.readers.set(frame.s, reader);
    const registration = this.streamHandlers.get(frame.name);
    if (!registration) return reader.cancel(`${this.local.hostName} has no handler for stream '${frame.name}'`);
    let meta: unknown = frame.meta;
    if (registration.meta) {
      const parsed = registration.meta.safeParse(frame.meta);
      if (!parsed.success) return reader.cancel(`bad meta for stream '${frame.name}': ${parsed.error.message}`, 'BAD_FIELDS');
      meta = parsed.data;
    }
    const failed = (e: unknown): void => reader.cancel(`the handler for stream '${frame.name}' failed: ${errorMessage(e)}`, errorCode(e, 'ERROR'));
    try {
      const result = registration.handler(reader, meta, this);
      if (isThenable(result)) result.then(() => reader.handlerFinished(), failed);
      else reader.handlerFinished();
    } catch (e) {
      failed(e);
    }
  }

  private reader(id: number, what: string): StreamReader {
    const reader = this.readers.get(id);
    if (!reader) {
      throw new ProtocolError('UNEXPECTED', `${this.name} sent '${what}' for stream ${id}, which ${id > this.lastReaderId ? 'was never opened' : 'is already over'}`);
    }
    return reader;
  }

  /** The writer of a credit, done or cancel; none for a stream this side has given up (the frame crossed our abort). */
  private writer(id: number): StreamWriter | undefined {
    const writer = this.writers.get(id);
    if (!writer && (id > this.lastWriterId || id === 0)) throw new ProtocolError('UNEXPECTED', `${this.name} answered on stream ${id}, which was never opened`);
    return writer;
  }

  private checkHandlerType(def: AnyMessageDef, handlers: Map<string, unknown>): void {
    if (messageDef(def.type) !== def) throw new Error(`message type '${def.type}' is not one defined with defineMessage()`);
    if (def.internal) throw new Error(`'${def.type}' is a frame of the transport itself`);
    if (handlers.has(def.type)) throw new Error(`a handler for '${def.type}' is already registered`);
  }

  // ---- closing -------------------------------------------------------------------

  /** Closes the channel because of `error`; tells the peer why unless it already knows (it closed, or told us). */
  private fail(error: ProtocolError, tellPeer = true): void {
    if (this.state === 'starting') {
      this.pendingFailure ??= error;
      return;
    }
    if (this.state === 'closed') return;
    this.shutDown(error, error);
    if (tellPeer) closeWithError(this.ws, error);
  }

  /** Marks the channel closed, rejects everything pending with `pendingError`, resolves `closed` with `error`. */
  private shutDown(error: ProtocolError | null, pendingError: ProtocolError): void {
    this.state = 'closed';
    this.error = pendingError;
    clearInterval(this.pinger);
    clearTimeout(this.watchdog);
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(pendingError);
    }
    this.pending.clear();
    for (const w of [...this.writers.values()]) w.onClosed(pendingError);
    for (const r of [...this.readers.values()]) r.onClosed(pendingError);
    this.writers.clear();
    this.readers.clear();
    this.wakeWriters();
    this.resolveClosed(error);
  }
}
