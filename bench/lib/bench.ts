import type { Tracer } from '../../src/native/tracer.js';

/** What every benchmark gets from the runner. */
export interface BenchContext {
  /** A tracer thread with the engine (checkpoint, restore) and the benchmark operations loaded. */
  tracer: Tracer;
  /** A private temporary directory; the runner removes it. */
  tmp: string;
  /** Progress for the terminal (stderr); results go into the returned section. */
  log(message: string): void;
}

export interface Benchmark {
  name: string;
  title: string;
  /** Runs the benchmark; returns its section of bench/RESULTS.md (markdown, without the heading and machine line). */
  run(ctx: BenchContext): Promise<string>;
}

const interruptHooks = new Set<() => Promise<void>>();

/**
 * Work the runner does even when it is interrupted (SIGINT, SIGTERM) in the
 * middle of a benchmark, such as taking down a lab the benchmark made: a
 * benchmark's own `finally` never runs then. Returns a function that
 * unregisters it, for when the benchmark has done the work itself.
 */
export function onInterrupt(hook: () => Promise<void>): () => void {
  interruptHooks.add(hook);
  return () => interruptHooks.delete(hook);
}

/** Runs (and forgets) every hook still registered; one that fails does not stop the others. */
export async function runInterruptHooks(log: (message: string) => void): Promise<void> {
  for (const hook of [...interruptHooks]) {
    interruptHooks.delete(hook);
    try {
      await hook();
    } catch (e) {
      log(`cleanup failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
