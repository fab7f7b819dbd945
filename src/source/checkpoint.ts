import path from 'node:path';
import { stopThreadGroup, detach } from '../native/attach.js';
import { Injector } from '../native/inject.js';
import { kill } from '../native/process.js';
import { waitpid, WAIT } from '../native/wait.js';
import { processExists, readStatus } from '../native/proc.js';
import { NativeError } from '../native/errors.js';
import { Errno } from '../native/errno.js';
import type { Op } from '../native/tracer-protocol.js';
import { ImageWriter } from '../image/format.js';
import '../image/all.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpContext } from './context.js';
import * as thread from './thread.js';
import * as proc from './process.js';
import * as memory from './memory.js';
import * as signals from './signals.js';
import * as files from './files.js';
import * as creds from './creds.js';
import * as timers from './timers.js';

/** A resource the checkpoint knows: checked before the process is touched, dumped while it is stopped. Order matters: thread first (it records the registers from before injection). */
interface SourceResource {
  inspect(pid: number, refusals: Refusal[]): void;
  /** Work that needs no freeze (hashing mapped files), done before it to keep downtime short. */
  prepare?(pid: number): void;
  dump(ctx: DumpContext): void | Promise<void>;
}

const RESOURCES: Array<[string, SourceResource]> = [
  ['thread', thread],
  ['process', proc],
  ['memory', memory],
  ['signals', signals],
  ['creds', creds],
  ['files', files],
  ['timers', timers],
];

export interface CheckpointOptions {
  /** Let the process continue after the checkpoint instead of killing it. */
  leaveRunning?: boolean;
}

export interface CheckpointSummary {
  pid: number;
  dir: string;
  pages: number;
  dataPages: number;
  zeroPages: number;
  /** Bytes of page data in the image. */
  bytes: number;
  entries: number;
  /** From the moment the process stopped until it was released or killed. */
  frozenMs: number;
  totalMs: number;
  /** Where the time went, in order: checks, preparation, each resource's dump, writing the image, releasing the process. */
  phases: Array<{ phase: string; ms: number }>;
  leftRunning: boolean;
}

/** Everything that would make the checkpoint of `pid` fail or restore wrongly, found without touching the process. */
export function inspectProcess(pid: number): Refusal[] {
  if (!processExists(pid)) throw new NativeError('checkpoint', Errno.ESRCH, `pid ${pid}`);
  const refusals: Refusal[] = [];
  for (const [, r] of RESOURCES) r.inspect(pid, refusals);
  return refusals;
}

export async function checkpointProcess(pid: number, dir: string, opts: CheckpointOptions = {}): Promise<CheckpointSummary> {
  const started = performance.now();
  const phases: Array<{ phase: string; ms: number }> = [];
  let mark = started;
  const lap = (phase: string) => {
    const now = performance.now();
    phases.push({ phase, ms: now - mark });
    mark = now;
  };
  const refusals = inspectProcess(pid);
  if (refusals.length) throw new CheckpointRefused(refusals);
  lap('inspect');
  for (const [, r] of RESOURCES) r.prepare?.(pid);
  const image = await ImageWriter.create(dir);
  lap('prepare');
  let frozenAt = 0;
  let threads: Array<{ tid: number; injector: Injector }> = [];
  let stoppedTids: number[] = [];
  try {
    stoppedTids = stopThreadGroup(pid);
    frozenAt = performance.now();
    const leader = new Injector(pid);
    threads = [{ tid: pid, injector: leader }];
    for (const tid of stoppedTids.slice(1)) {
      const inj = new Injector(tid, leader.gadget);
      inj.shareScratchOf(leader);
      threads.push({ tid, injector: inj });
    }
    lap('stop');
    const ctx: DumpContext = { pid, injector: threads[0]!.injector, threads, image, stats: { pages: 0, dataPages: 0, zeroPages: 0 }, shmemIds: new Map() };
    for (const [name, r] of RESOURCES) {
      await r.dump(ctx);
      lap(`dump ${name}`);
    }
    endInjection(threads);
    let frozenMs = 0;
    if (opts.leaveRunning) {
      // Everything is captured: the process need not wait for the image to reach the disk.
      detachAll(stoppedTids);
      stoppedTids = [];
      frozenMs = performance.now() - frozenAt;
      lap('release');
    }
    const manifest = await image.finish({ pid, kind: 'process' });
    lap('write image');
    if (!opts.leaveRunning) {
      // Only once the image is safely on disk may the original go.
      kill(pid, 9);
      frozenMs = performance.now() - frozenAt;
      const tids = stoppedTids;
      stoppedTids = [];
      await releasePid(pid, tids);
      lap('release');
    }
    return {
      pid,
      dir: path.resolve(dir),
      ...ctx.stats,
      bytes: manifest.files.find((f) => f.name === 'pages.bin')?.size ?? 0,
      entries: image.entryCount,
      frozenMs,
      totalMs: performance.now() - started,
      leftRunning: !!opts.leaveRunning,
      phases,
    };
  } catch (e) {
    // Leave the process exactly as it was: registers, masks, no scratch, running.
    endInjection(threads);
    detachAll(stoppedTids);
    await image.abort();
    throw e;
  }
}

/** Puts back every thread's registers and mask; the leader last, because it owns the scratch mapping. */
function endInjection(threads: Array<{ injector: Injector }>): void {
  for (const { injector } of [...threads].reverse()) {
    try {
      injector.end();
    } catch {
      // the thread or the process is gone: nothing to put back
    }
  }
}

function detachAll(tids: number[]): void {
  for (const tid of tids) {
    try {
      detach(tid);
    } catch {
      // gone
    }
  }
}

/**
 * Waits until a killed process's pid is free: we collect the tracer's exit
 * notification, then its parent (us, or whoever started it) reaps it. A
 * parent that never reaps would keep the pid taken, and a restore with it
 * would fail, so say so.
 */
async function releasePid(pid: number, tids: number[]): Promise<void> {
  const deadline = Date.now() + 10_000;
  // Every traced thread's exit is reported to us first; the leader is released only after all of them.
  const pending = new Set(tids);
  while (processExists(pid)) {
    for (const tid of [...pending, pid]) {
      try {
        if (waitpid(tid, WAIT.WNOHANG)) pending.delete(tid);
      } catch {
        // not ours to reap: its parent will
        pending.delete(tid);
      }
    }
    if (!processExists(pid)) return;
    if (Date.now() > deadline) {
      const ppid = readStatus(pid).PPid;
      throw new NativeError(`checkpoint ${pid}`, Errno.EBUSY, `the process was killed but its parent (pid ${ppid}) has not reaped it; its pid stays taken until it does`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const tracerOps: Record<string, Op> = {
  checkpoint: (_ctx, pid: number, dir: string, opts: CheckpointOptions) => checkpointProcess(pid, dir, opts),
  inspect: (_ctx, pid: number) => inspectProcess(pid),
};
