/**
 * Dirty tracking as tracer operations (load this module into a Tracer):
 * trackers live on the tracer thread, which owns every ptrace session and
 * the userfaultfds, and are named by an id.
 *
 *   precopyChoose(pid?)          -> MethodChoice (what would be used, and why)
 *   precopyPreflight(pid?)       -> MethodChoice + lines for a doctor report
 *   precopyStart(pid, options?)  -> { id, pid, method, reason, fallbacks }
 *   precopyRefresh(id)           -> LayoutChange
 *   precopyCollect(id)           -> { ranges, stats }
 *   precopyStop(id)
 *   precopyStopAll()             -> how many were stopped
 *
 * The process runs freely between calls: with uffd-wp only start stops
 * one of its threads, for two injected syscalls.
 */
import type { Op } from '../native/tracer-protocol.js';
import { DirtyTracker, type TrackerOptions } from './tracker.js';
import { chooseMethod, precopyPreflight } from './method.js';
import type { DirtyRange, RoundStats } from './dirty.js';

const trackers = new Map<number, DirtyTracker>();
let nextId = 1;

function tracker(id: number): DirtyTracker {
  const t = trackers.get(id);
  if (!t) throw new Error(`no dirty tracker ${id} on this tracer`);
  return t;
}

export interface StartedTracker {
  id: number;
  pid: number;
  method: string;
  reason: string;
  fallbacks: string[];
}

export interface CollectResult {
  ranges: DirtyRange[];
  stats: RoundStats;
}

export const tracerOps: Record<string, Op> = {
  precopyChoose: (_ctx, pid?: number) => chooseMethod(pid),
  precopyPreflight: (_ctx, pid?: number) => precopyPreflight(pid),
  precopyStart: (_ctx, pid: number, options: TrackerOptions = {}): StartedTracker => {
    const t = DirtyTracker.start(pid, null, options);
    const id = nextId++;
    trackers.set(id, t);
    return { id, pid, method: t.method, reason: t.reason, fallbacks: t.fallbacks };
  },
  precopyRefresh: (_ctx, id: number) => tracker(id).refresh(),
  precopyCollect: (_ctx, id: number): CollectResult => {
    const t = tracker(id);
    const ranges = t.collect();
    return { ranges, stats: t.lastRound! };
  },
  precopyStop: (_ctx, id: number) => {
    const t = trackers.get(id);
    trackers.delete(id);
    t?.stop();
  },
  precopyStopAll: () => {
    const n = trackers.size;
    for (const t of trackers.values()) t.stop();
    trackers.clear();
    return n;
  },
};
