/**
 * The face of dirty tracking that pre-copy sessions use (session.ts): one
 * process, its method, the pages written since the previous collect, and
 * stop. DirtyTracker (tracker.ts) is the implementation.
 */
import type { Injector } from '../native/inject.js';
import { DirtyTracker, type TrackerOptions } from './tracker.js';
import type { DirtyRange, RoundOptions } from './dirty.js';

export type { DirtyRange } from './dirty.js';

export interface Tracking {
  readonly pid: number;
  /** 'uffd-wp', 'soft-dirty' or 'hashing'. */
  readonly method: string;
  /** Why this method (and why not better ones). */
  readonly reason: string;
  collect(opts?: RoundOptions): DirtyRange[];
  stop(injector?: Injector): void;
}

/**
 * Starts tracking `pid` on the tracer thread; without an injector it stops
 * one thread of the process for a moment itself (it must not be traced
 * already by someone else).
 */
export function startTracking(pid: number, injector: Injector | null = null, options: TrackerOptions = {}): Tracking {
  return DirtyTracker.start(pid, injector, options);
}
