/**
 * Streams over a channel, with end-to-end back-pressure.
 *
 * The reader announces a window (bytes) in its hello; each stream towards
 * it starts with that much credit. Every chunk costs its payload plus
 * CHUNK_COST (so chunks of zero pages only are not free), the writer sends
 * only against credit, and the reader gives credit back as its consumer
 * takes chunks. A slow consumer therefore stops the writer, and neither end
 * ever holds more than one window of a stream. The reader enforces it: a
 * writer that sends beyond its credit is a protocol error.
 *
 * The writer ends with the sha256 of every payload byte, the chunk, byte and
 * zero-page counts; the reader checks them as the data arrives. The writer's
 * end() resolves once the reader has checked the stream, its consumer has
 * taken every chunk and the stream handler has returned: the data was
 * delivered *and processed*. Either side can give up: abort() on the writer,
 * cancel() (or leaving a for-await loop early) on the reader.
 */
import { createHash, timingSafeEqual, type Hash } from 'node:crypto';
import { ProtocolError } from './errors.js';
import { Abort, Cancel, Credit, DATA_FRAME_OVERHEAD, Done, End, type AnyMessage, type DataFrame, type Message } from './frame.js';

/** What a chunk costs in credit beyond its payload. */
export const CHUNK_COST = DATA_FRAME_OVERHEAD;
/** Room in a frame for the data frame's fields around the payload. */
const FRAME_SLACK = 1024;

export interface StreamChunk {
  payload: Uint8Array;
  /** Zero pages the writer attached to this chunk, sent as a count. */
  zeros: number;
}

/** The channel as its streams see it. */
export interface StreamLink {
  /** How the peer is named in errors. */
  readonly peer: string;
  sendControl(msg: AnyMessage): void;
  sendData(s: number, n: number, payload: Uint8Array, zeros: number): void;
  /** Resolves when the socket's send buffer is below its high-water mark, or the channel closed. */
  writable(): Promise<void>;
  /** The error the channel closed with, once it is closed. */
  closedWith(): ProtocolError | null;
  noteInFlight(bytes: number): void;
  forgetWriter(id: number): void;
  forgetReader(id: number): void;
}

export interface WriterStats {
  /** The credit the stream started with: the reader's window. */
  window: number;
  /** Credit spent and not yet given back: sent, or buffered at the reader. Never above `window`. */
  inFlight: number;
  /** The highest `inFlight` ever was. */
  maxInFlight: number;
  bytes: number;
  chunks: number;
  zeros: number;
  /** A write is waiting for the reader to give credit back. */
  waitingForCredit: boolean;
}

function noop(): void {}

export class StreamWriter {
  /** The largest payload one write() takes: what fits the reader's window and frame limit. */
  readonly maxChunkBytes: number;
  private credit: number;
  private maxInFlight = 0;
  private bytes = 0;
  private chunks = 0;
  private zeros = 0;
  private readonly hash: Hash = createHash('sha256');
  private tail: Promise<void> = Promise.resolve();
  private error: ProtocolError | null = null;
  private ending = false;
  /** End or Abort went out: the reader expects nothing more on this id. */
  private sentLast = false;
  private waitingForCredit = false;
  private wake: () => void = noop;
  private finish: { resolve: () => void; reject: (e: ProtocolError) => void } | null = null;

  constructor(
    private readonly link: StreamLink,
    readonly id: number,
    readonly name: string,
    private readonly window: number,
    peerMaxFrameBytes: number,
  ) {
    this.credit = window;
    this.maxChunkBytes = Math.min(window, peerMaxFrameBytes - FRAME_SLACK) - CHUNK_COST;
  }

  get stats(): WriterStats {
    return {
      window: this.window,
      inFlight: this.window - this.credit,
      maxInFlight: this.maxInFlight,
      bytes: this.bytes,
      chunks: this.chunks,
      zeros: this.zeros,
      waitingForCredit: this.waitingForCredit,
    };
  }

  /**
   * Queues a chunk; resolves once it is on the wire, which waits for credit
   * from the reader and for the socket to drain. Writes keep their order. A
   * write of at most maxChunkBytes arrives as one chunk; a larger one is cut
   * into chunks of maxChunkBytes, its zero count riding on the last.
   */
  write(payload: Uint8Array, opts: { zeros?: number } = {}): Promise<void> {
    const zeros = opts.zeros ?? 0;
    if (!(payload instanceof Uint8Array)) return Promise.reject(new TypeError(`stream '${this.name}': a chunk must be a Uint8Array`));
    if (!Number.isSafeInteger(zeros) || zeros < 0) return Promise.reject(new TypeError(`stream '${this.name}': zeros must be a non-negative integer`));
    if (this.ending) return Promise.reject(this.error ?? new Error(`stream '${this.name}': write after end()`));
    const written = this.tail.then(async () => {
      let at = 0;
      for (; payload.byteLength - at > this.maxChunkBytes; at += this.maxChunkBytes) await this.send(payload.subarray(at, at + this.maxChunkBytes), 0);
      await this.send(payload.subarray(at), zeros);
    });
    this.tail = written.catch(noop);
    return written;
  }

  private async send(payload: Uint8Array, zeros: number): Promise<void> {
    const cost = payload.byteLength + CHUNK_COST;
    while (!this.failed() && this.credit < cost) {
      this.waitingForCredit = true;
      await new Promise<void>((r) => (this.wake = r));
    }
    this.waitingForCredit = false;
    this.throwIfFailed();
    await this.link.writable();
    this.throwIfFailed();
    this.credit -= cost;
    const inFlight = this.window - this.credit;
    if (inFlight > this.maxInFlight) {
      this.maxInFlight = inFlight;
      this.link.noteInFlight(inFlight);
    }
    this.hash.update(payload);
    this.link.sendData(this.id, this.chunks, payload, zeros);
    this.chunks++;
    this.bytes += payload.byteLength;
    this.zeros += zeros;
  }

  /** Sends the checksum after the queued writes; resolves when the reader has verified and processed the stream. */
  end(): Promise<void> {
    if (this.ending) return Promise.reject(this.error ?? new Error(`stream '${this.name}': end() called twice`));
    this.ending = true;
    return this.tail.then(() => {
      this.throwIfFailed();
      this.link.sendControl(End.make({ s: this.id, chunks: this.chunks, bytes: this.bytes, zeros: this.zeros, sha256: this.hash.digest() }));
      this.sentLast = true;
      return new Promise<void>((resolve, reject) => (this.finish = { resolve, reject }));
    });
  }

  /** Gives up: pending and later writes and end() reject with ABORTED, the reader's iteration throws it. */
  abort(reason: string): void {
    if (this.error) return;
    this.ending = true;
    if (!this.sentLast && !this.link.closedWith()) {
      this.link.sendControl(Abort.make({ s: this.id, reason: reason.slice(0, 4096) }));
      this.sentLast = true;
    }
    this.fail(new ProtocolError('ABORTED', `stream '${this.name}' aborted: ${reason}`));
  }

  private failed(): boolean {
    return this.error !== null || this.link.closedWith() !== null;
  }

  private throwIfFailed(): void {
    const error = this.error ?? this.link.closedWith();
    if (error) throw error;
  }

  private fail(error: ProtocolError): void {
    if (this.error) return;
    this.error = error;
    this.wake();
    this.finish?.reject(error);
    this.link.forgetWriter(this.id);
  }

  /** The reader gave credit back. */
  onCredit(bytes: number): void {
    if (this.credit + bytes > this.window) {
      throw new ProtocolError('UNEXPECTED', `${this.link.peer} gave back more credit than stream '${this.name}' had in flight`);
    }
    this.credit += bytes;
    this.wake();
  }

  onDone(): void {
    if (!this.finish) throw new ProtocolError('UNEXPECTED', `${this.link.peer} confirmed stream '${this.name}' before it ended`);
    this.finish.resolve();
    this.link.forgetWriter(this.id);
  }

  onCancel(frame: Message<typeof Cancel>): void {
    if (!this.sentLast) {
      // The reader keeps the stream id until the writer's last word about it.
      this.link.sendControl(Abort.make({ s: this.id, reason: 'cancelled by the reader' }));
      this.sentLast = true;
    }
    this.fail(
      frame.code === 'CHECKSUM'
        ? new ProtocolError('CHECKSUM', `${this.link.peer} refused stream '${this.name}': ${frame.message}`)
        : new ProtocolError('ABORTED', `${this.link.peer} cancelled stream '${this.name}': ${frame.message}`),
    );
  }

  onClosed(error: ProtocolError): void {
    this.fail(error);
  }
}

export interface ReaderStats {
  /** Credit held by chunks that arrived and the consumer has not taken. */
  buffered: number;
  bytes: number;
  chunks: number;
  zeros: number;
}

type ReaderState = 'open' | 'ended' | 'done';

/**
 * The receiving end of a stream: an async iterator of chunks. Taking a
 * chunk gives its credit back to the writer. Single consumer.
 */
export class StreamReader implements AsyncIterableIterator<StreamChunk> {
  private readonly queue: StreamChunk[] = [];
  private buffered = 0;
  private ungranted = 0;
  private credit: number;
  private bytes = 0;
  private chunks = 0;
  private zeros = 0;
  private readonly hash: Hash = createHash('sha256');
  private state: ReaderState = 'open';
  private error: ProtocolError | null = null;
  /** We cancelled: frames still in flight from the writer are dropped. */
  private cancelled = false;
  private handlerDone = false;
  /** Done went out. */
  private confirmed = false;
  private wake: () => void = noop;
  private waiting = false;

  constructor(
    private readonly link: StreamLink,
    readonly id: number,
    readonly name: string,
    readonly meta: Record<string, unknown>,
    private readonly window: number,
  ) {
    this.credit = window;
  }

  get stats(): ReaderStats {
    return { buffered: this.buffered, bytes: this.bytes, chunks: this.chunks, zeros: this.zeros };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<StreamChunk, undefined>> {
    if (this.waiting) throw new Error(`stream '${this.name}': next() called while a previous next() is pending`);
    for (;;) {
      if (this.error) throw this.error;
      const chunk = this.queue.shift();
      if (chunk) {
        const cost = chunk.payload.byteLength + CHUNK_COST;
        this.buffered -= cost;
        this.ungranted += cost;
        if (this.ungranted >= this.window / 4) this.grant();
        return { value: chunk, done: false };
      }
      if (this.state !== 'open') {
        this.state = 'done';
        this.confirm();
        return { value: undefined, done: true };
      }
      // Whatever the consumer took goes back before we wait: the writer may be waiting for it.
      this.grant();
      this.waiting = true;
      await new Promise<void>((r) => (this.wake = r));
      this.waiting = false;
    }
  }

  /** A for-await loop left early: the writer is told to stop. */
  async return(): Promise<IteratorResult<StreamChunk, undefined>> {
    // When an exception left the loop, the stream handler fails with it a few microtasks later: a better reason to give the writer.
    setImmediate(() => this.cancel('the receiver stopped reading'));
    return { value: undefined, done: true };
  }

  /** Stops the stream: the writer's writes and end() reject, and so does this reader's iteration. */
  cancel(reason: string, code = 'ABORTED'): void {
    if (this.error || this.confirmed) return;
    this.cancelled = true;
    this.error = new ProtocolError('ABORTED', `stream '${this.name}' cancelled: ${reason}`);
    if (!this.link.closedWith()) this.link.sendControl(Cancel.make({ s: this.id, code: code.slice(0, 64), message: reason.slice(0, 4096) }));
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = noop;
    w();
  }

  private grant(): void {
    if (this.ungranted === 0 || this.state !== 'open' || this.cancelled || this.link.closedWith()) return;
    this.link.sendControl(Credit.make({ s: this.id, bytes: this.ungranted }));
    this.credit += this.ungranted;
    this.ungranted = 0;
  }

  /** The stream handler returned; the writer hears "done" once the consumer has also reached the end. */
  handlerFinished(): void {
    this.handlerDone = true;
    this.confirm();
  }

  private confirm(): void {
    if (this.state === 'done' && this.handlerDone && !this.confirmed && !this.error && !this.link.closedWith()) {
      this.link.sendControl(Done.make({ s: this.id }));
      this.confirmed = true;
    }
  }

  onData(frame: DataFrame): void {
    if (this.cancelled) return;
    if (this.state !== 'open') throw new ProtocolError('UNEXPECTED', `${this.link.peer} sent data on stream '${this.name}' after its end`);
    if (frame.n !== this.chunks) {
      throw new ProtocolError('UNEXPECTED', `${this.link.peer} sent chunk ${frame.n} of stream '${this.name}' where chunk ${this.chunks} was due (sequence gap)`);
    }
    const cost = frame.p.byteLength + CHUNK_COST;
    if (cost > this.credit) throw new ProtocolError('UNEXPECTED', `${this.link.peer} sent beyond the credit of stream '${this.name}'`);
    this.credit -= cost;
    this.hash.update(frame.p);
    this.chunks++;
    this.bytes += frame.p.byteLength;
    this.zeros += frame.z;
    this.buffered += cost;
    this.queue.push({ payload: frame.p, zeros: frame.z });
    this.wakeUp();
  }

  onEnd(frame: Message<typeof End>): void {
    this.link.forgetReader(this.id);
    if (this.cancelled) return;
    if (this.state !== 'open') throw new ProtocolError('UNEXPECTED', `${this.link.peer} ended stream '${this.name}' twice`);
    this.state = 'ended';
    const mismatch: string[] = [];
    if (frame.chunks !== this.chunks) mismatch.push(`${this.chunks} chunks arrived, ${frame.chunks} were sent`);
    if (frame.bytes !== this.bytes) mismatch.push(`${this.bytes} bytes arrived, ${frame.bytes} were sent`);
    if (frame.zeros !== this.zeros) mismatch.push(`${this.zeros} zero pages arrived, ${frame.zeros} were sent`);
    if (!timingSafeEqual(this.hash.digest(), frame.sha256)) mismatch.push('the sha256 of the data differs');
    if (mismatch.length > 0) {
      const message = `stream '${this.name}' from ${this.link.peer} is corrupt: ${mismatch.join('; ')}`;
      if (!this.link.closedWith()) this.link.sendControl(Cancel.make({ s: this.id, code: 'CHECKSUM', message }));
      this.cancelled = true;
      this.error = new ProtocolError('CHECKSUM', message);
    }
    this.wakeUp();
  }

  onAbort(frame: Message<typeof Abort>): void {
    this.link.forgetReader(this.id);
    if (this.cancelled) return;
    this.error = new ProtocolError('ABORTED', `${this.link.peer} aborted stream '${this.name}': ${frame.reason}`);
    this.wakeUp();
  }

  onClosed(error: ProtocolError): void {
    if (this.confirmed) return;
    this.error ??= error;
    this.wakeUp();
  }
}
