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
