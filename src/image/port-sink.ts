/**
 * An ImageSink across threads. The checkpoint runs on the tracer thread;
 * the socket the image streams into lives on the main thread. The tracer
 * side (PortSink) copies each append into a message and waits while more
 * than a window of bytes is on its way; the main side (servePortSink)
 * feeds the real sink in order and hands back credit as it takes them. A
 * slow network therefore holds the checkpoint, not the memory.
 */
import type { MessagePort } from 'node:worker_threads';
import type { ENTRIES_FILE, PAGES_FILE } from './constants.js';
import type { ImageSink, Manifest } from './format.js';

type DataFile = typeof ENTRIES_FILE | typeof PAGES_FILE;

type ToMain =
  | { kind: 'append'; file: DataFile; data: Uint8Array }
  | { kind: 'finish'; manifest: Manifest }
  | { kind: 'abort'; reason: string };

type ToTracer = { kind: 'taken'; bytes: number } | { kind: 'finished' } | { kind: 'failed'; message: string };

/** Bytes the tracer thread may have in flight before an append waits. */
export const PORT_SINK_WINDOW = 16 << 20;

/** The tracer thread's end: an ImageSink that posts to `port`. */
export class PortSink implements ImageSink {
  private inFlight = 0;
  private failure: Error | null = null;
  private waiters: Array<() => void> = [];
  private finished: { resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(
    private readonly port: MessagePort,
    readonly where: string,
    private readonly window = PORT_SINK_WINDOW,
  ) {
    port.on('message', (msg: ToTracer) => this.onMessage(msg));
  }

  async append(file: DataFile, bufs: readonly Uint8Array[]): Promise<void> {
    if (this.failure) throw this.failure;
    const size = bufs.reduce((n, b) => n + b.length, 0);
    if (size === 0) return;
    // One copy, owned by the message: the writer reuses its buffers as soon as this resolves.
    const data = new Uint8Array(size);
    let at = 0;
    for (const b of bufs) {
      data.set(b, at);
      at += b.length;
    }
    this.inFlight += size;
    this.port.postMessage({ kind: 'append', file, data } satisfies ToMain, [data.buffer]);
    while (this.inFlight > this.window && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  finish(manifest: Manifest): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.finished = { resolve, reject };
      this.port.postMessage({ kind: 'finish', manifest } satisfies ToMain);
    });
  }

  async abort(reason: string): Promise<void> {
    this.port.postMessage({ kind: 'abort', reason } satisfies ToMain);
    this.port.close();
  }

  private onMessage(msg: ToTracer): void {
    if (msg.kind === 'taken') {
      this.inFlight -= msg.bytes;
    } else if (msg.kind === 'failed') {
      this.failure = new Error(`streaming the image to ${this.where} failed: ${msg.message}`);
      this.finished?.reject(this.failure);
    } else {
      this.finished?.resolve();
      this.port.close();
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * The main thread's end: feeds `sink` from `port` in the order the tracer
 * wrote, and resolves with how the image ended (finished, or aborted by
 * the checkpoint with its reason). A failing sink is reported to the
 * tracer thread, whose checkpoint then fails and rolls back.
 */
export function servePortSink(port: MessagePort, sink: ImageSink): Promise<{ finished: true } | { finished: false; reason: string }> {
  return new Promise((resolve) => {
    let chain = Promise.resolve();
    let failed = false;
    const fail = (e: unknown) => {
      if (failed) return;
      failed = true;
      port.postMessage({ kind: 'failed', message: e instanceof Error ? e.message : String(e) } satisfies ToTracer);
    };
    port.on('message', (msg: ToMain) => {
      if (msg.kind === 'append') {
        const bytes = msg.data.length;
        // Called at once, so the sink sees the appends in order; credit goes back as each is taken.
        const taken = sink.append(msg.file, [msg.data]);
        taken.catch(() => {}); // handled in the chain below, perhaps after it rejects
        chain = chain.then(() => taken).then(
          () => port.postMessage({ kind: 'taken', bytes } satisfies ToTracer),
          fail,
        );
      } else if (msg.kind === 'finish') {
        chain = chain
          .then(() => (failed ? undefined : sink.finish(msg.manifest)))
          .then(() => {
            if (failed) return;
            port.postMessage({ kind: 'finished' } satisfies ToTracer);
            port.close();
            resolve({ finished: true });
          }, fail);
      } else {
        port.close();
        void chain.then(() => sink.abort(msg.reason)).finally(() => resolve({ finished: false, reason: msg.reason }));
      }
    });
  });
}
