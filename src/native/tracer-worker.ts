import { parentPort } from 'node:worker_threads';
import { serializeError, type Op, type TracerReply, type TracerRequest } from './tracer-protocol.js';
import { coreOps } from './tracer-ops.js';

/**
 * The tracer thread. ptrace requests must come from the thread that attached,
 * so every operation on a traced task runs here, one at a time, while the
 * agent's event loop stays free. Engine modules add operations with `load`.
 */
const port = parentPort;
if (!port) throw new Error('tracer-worker.js must run as a worker thread');

const ops = new Map<string, Op>(Object.entries(coreOps));

function reply(msg: TracerReply): void {
  port!.postMessage(msg);
}

let queue: Promise<void> = Promise.resolve();

port.on('message', (req: TracerRequest) => {
  // Strictly one operation at a time, even when an operation is async.
  queue = queue.then(() => handle(req));
});

async function handle(req: TracerRequest): Promise<void> {
  try {
    if ('load' in req) {
      const mod = (await import(req.load)) as { tracerOps?: Record<string, Op> };
      if (!mod.tracerOps) throw new Error(`${req.load} exports no tracerOps`);
      for (const [name, fn] of Object.entries(mod.tracerOps)) ops.set(name, fn);
      reply({ id: req.id, done: true, result: Object.keys(mod.tracerOps) });
      return;
    }
    const fn = ops.get(req.op);
    if (!fn) throw new Error(`the tracer has no operation '${req.op}'`);
    const ctx = { emit: (event: unknown) => reply({ id: req.id, done: false, event }) };
    const result = await fn(ctx, ...req.args);
    reply({ id: req.id, done: true, result });
  } catch (e) {
    reply({ id: req.id, done: true, error: serializeError(e) });
  }
}
