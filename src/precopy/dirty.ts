/** What every dirty-tracking method reports, and how its rounds are put together. */
import { PAGE } from '../native/pagemap.js';
import type { Layout } from './layout.js';

export type DirtyMethod = 'uffd-wp' | 'soft-dirty' | 'hashing';

/**
 * Pages of the process that may differ from what a previous round copied:
 * `pages` pages from `addr`. With `zero`, the kernel showed no data there
 * (the pages were discarded, or never populated in a mapping new since the
 * last round): they read as zero, and a copy can say so without reading
 * them. A consumer that ignores the flag and reads them gets zeros too.
 */
export interface DirtyRange {
  addr: number;
  pages: number;
  zero?: true;
}

/** One round, as measured. */
export interface RoundStats {
  round: number;
  /** Time the round took in the tracer thread, reading the layout included. */
  ms: number;
  dataPages: number;
  zeroPages: number;
  ranges: number;
  /** Tracked mappings and their size. */
  vmas: number;
  trackedBytes: number;
  /** Bytes registered this round (mappings new, moved or replaced since the last one). */
  registeredBytes: number;
  /** Private mappings that could not be tracked: all their data is reported every round. */
  untrackable: number;
}

/** The part each method implements; DirtyTracker does the layout, the errors and the bookkeeping. */
export interface Backend {
  readonly method: DirtyMethod;
  /** One round: adds what was written since the previous round to `out`. The first round (at start) only sets the baseline. */
  round(layout: Layout, out: RangeSink, stats: RoundStats, opts: RoundOptions): void;
  /** Removes every trace of the tracking; must not throw when the process is gone. */
  stop(): void;
}

export interface RoundOptions {
  /** The caller has every thread of the process stopped (at the freeze): a method that needs it stopped need not stop it. */
  stopped?: boolean;
}

/** Collects page ranges in any order; `ranges()` sorts and joins them. */
export class RangeSink {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private readonly zero: boolean[] = [];

  add(start: number, end: number, zero = false): void {
    if (end <= start) return;
    const n = this.starts.length;
    if (n && this.ends[n - 1] === start && this.zero[n - 1] === zero) {
      this.ends[n - 1] = end;
      return;
    }
    this.starts.push(start);
    this.ends.push(end);
    this.zero.push(zero);
  }

  get length(): number {
    return this.starts.length;
  }

  ranges(): DirtyRange[] {
    const order = this.starts.map((_, i) => i).sort((a, b) => this.starts[a]! - this.starts[b]!);
    const out: DirtyRange[] = [];
    let last: { start: number; end: number; zero: boolean } | null = null;
    const flush = () => {
      if (!last) return;
      const r: DirtyRange = { addr: last.start, pages: (last.end - last.start) / PAGE };
      if (last.zero) r.zero = true;
      out.push(r);
    };
    for (const i of order) {
      const start = this.starts[i]!;
      const end = this.ends[i]!;
      const zero = this.zero[i]!;
      if (last && start <= last.end && zero === last.zero) {
        last.end = Math.max(last.end, end);
        continue;
      }
      flush();
      last = { start, end, zero };
    }
    flush();
    return out;
  }
}
