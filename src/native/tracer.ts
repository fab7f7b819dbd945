import { Worker, type TransferListItem } from 'node:worker_threads';
import { NativeError } from './errors.js';
import type { SerializedError, TracerReply } from './tracer-protocol.js';

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  onEvent?: (event: unknown) => void;
}

/** An error thrown inside the tracer thread, rebuilt with the same fields (errno, code, call, reason, ...). */
export class TracerError extends Error {
  [field: string]: unknown;
  constructor(s: SerializedError) {
    super(s.message);
    this.name = s.name;
    Object.assign(this, s.fields);
    if (s.stack) this.stack = s.stack;
  }
}

function rebuild(s: SerializedError): Error {
  if (s.name === 'NativeError' && typeof s.fields.errno === 'number') {
    const e = Object.create(NativeError.prototype) as NativeError;
    Object.assign(e, s.fields, { message: s.message, name: s.name, stack: s.stack });
    return e;
  }
  return new TracerError(s);
}

/**
 * A handle on the tracer thread. Operations run there in order; results come
 * back as promises, progress as events. Buffers cross as Uint8Array.
 */
export class Tracer {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(worker: Worker) {
    this.worker = worker;
    worker.on('message', (msg: TracerReply) => this.onReply(msg));
    worker.on('error', (err) => this.failAll(err));
    worker.on('exit', (code) => this.failAll(new Error(`the tracer thread exited (code ${code})`)));
  }

  /** Starts the tracer thread and loads engine modules (each exports `tracerOps`). */
  static async start(modules: URL[] = []): Promise<Tracer> {
    const tracer = new Tracer(new Worker(new URL('./tracer-worker.js', import.meta.url)));
    for (const m of modules) await tracer.load(m);
    return tracer;
  }

  load(module: URL): Promise<string[]> {
    return this.send({ load: module.href }) as Promise<string[]>;
  }

  call<T = unknown>(op: string, ...args: unknown[]): Promise<T> {
    return this.send({ op, args }) as Promise<T>;
  }

  /** Like call(), handing over `transfer` (a MessagePort the operation talks through, say) instead of copying it. */
  callTransfer<T = unknown>(op: string, args: unknown[], transfer: TransferListItem[]): Promise<T> {
    return this.send({ op, args }, undefined, transfer) as Promise<T>;
  }

  /** Like call(), with a listener for the operation's progress events. */
  callWithEvents<T = unknown>(op: string, args: unknown[], onEvent: (event: unknown) => void): Promise<T> {
    return this.send({ op, args }, onEvent) as Promise<T>;
  }

  /** Stops the thread. Tracees seized with PTRACE_O_EXITKILL (husks) die with it; others are detached by the kernel. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker.terminate();
  }

  private send(body: object, onEvent?: (event: unknown) => void, transfer: TransferListItem[] = []): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the tracer is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...(onEvent ? { onEvent } : {}) });
      this.worker.postMessage({ id, ...body }, transfer);
    });
  }

  private onReply(msg: TracerReply): void {
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (!msg.done) {
      p.onEvent?.(msg.event);
      return;
    }
    this.pending.delete(msg.id);
    if ('error' in msg) p.reject(rebuild(msg.error));
    else p.resolve(msg.result);
  }

  private failAll(err: Error): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
