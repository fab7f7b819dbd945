import path from 'node:path';
import { stopThreadGroup, seizeAndInterrupt, waitForTrapStop, detach } from '../native/attach.js';
import { freeze, thaw } from '../native/cgroup.js';
import type { ContainerState } from '../container/state.js';
import * as container from './container.js';
import { Injector } from '../native/inject.js';
import { kill } from '../native/process.js';
import { waitpid, WAIT } from '../native/wait.js';
import { processExists, readStatus, readStat, readChildren, isZombie, listThreads } from '../native/proc.js';
import { PTRACE_O } from '../native/ptrace.js';
import { NativeError } from '../native/errors.js';
import { Errno } from '../native/errno.js';
import type { Op } from '../native/tracer-protocol.js';
import type { MessagePort } from 'node:worker_threads';
import { ImageWriter, type ImageSink } from '../image/format.js';
import { PortSink } from '../image/port-sink.js';
import { endPrecopySession, precopySession } from '../precopy/session.js';
import '../image/all.js';
import { ZombieEntry } from '../image/process.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpContext } from './context.js';
import * as thread from './thread.js';
import * as proc from './process.js';
import * as memory from './memory.js';
import * as signals from './signals.js';
import * as files from './files.js';
import * as creds from './creds.js';
import * as timers from './timers.js';
import { TcpCheckpoint } from './tcp.js';

/** A resource the checkpoint knows: checked before the process is touched, dumped while it is stopped. Order matters: thread first (it records the registers from before injection). */
interface SourceResource {
  /** `scope` is every process the image will hold: what they share with each other is fine. */
  inspect(pid: number, refusals: Refusal[], scope: Set<number>, opts: InspectOptions): void;
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

/** What the checks may accept besides what always travels. */
export interface InspectOptions {
  /** TCP sockets travel (src/source/tcp.ts). */
  tcp: boolean;
}

export interface CheckpointOptions {
  /** Let the process continue after the checkpoint instead of killing it. */
  leaveRunning?: boolean;
  /** Take the process and all its descendants, as one image. */
  tree?: boolean;
  /** The container whose init `pid` is: its whole tree is taken, frozen through its cgroup. */
  container?: ContainerState;
  /**
   * A container only: once the image is complete, leave every process
   * frozen in its cgroup instead of killing it or letting it run. A
   * migration holds the source copy so until the target has taken over:
   * then it is killed, or thawed on rollback (runtime.ts).
   */
  holdFrozen?: boolean;
  /**
   * Take the process's TCP sockets, connections and listeners: their
   * endpoints are locked with nftables once the processes are stopped, and
   * the lock stays until the restored copy runs. Always on for a container
   * (its network namespace is its own); a bare process holding TCP sockets
   * without it is refused.
   */
  tcpEstablished?: boolean;
  /**
   * The pre-copy session (src/precopy) whose image this checkpoint
   * completes: pages its rounds copied and that were not written since are
   * referred to, not read again.
   */
  precopy?: string;
}

export interface CheckpointSummary {
  pid: number;
  /** Every process in the image, parents before children. */
  pids: number[];
  dir: string;
  pages: number;
  dataPages: number;
  zeroPages: number;
  /** Of `pages`, those pre-copy rounds had sent already (see src/precopy). */
  precopiedPages: number;
  /** Bytes of page data in the image. */
  bytes: number;
  entries: number;
  /** From the moment the first process stopped until the processes were released or killed. */
  frozenMs: number;
  totalMs: number;
  /** Where the time went, in order: checks, preparation, each resource's dump, writing the image, releasing the processes. */
  phases: Array<{ phase: string; ms: number }>;
  leftRunning: boolean;
  /** The processes are frozen in their cgroup, waiting to be killed or thawed. */
  heldFrozen: boolean;
  /**
   * TCP sockets taken, and the network locks left in place (none when the
   * processes were left running). A held-frozen copy keeps its connected
   * sockets in repair mode: a rollback that thaws it must take them out
   * (leaveTcpRepair in src/source/tcp.ts) and remove the locks (unlockTable).
   */
  tcp?: { sockets: number; locks: Array<{ table: string; netns: string; pid: number }> };
}

/** The process, or with `tree` the process and every descendant, parents before children. */
export function collectProcesses(pid: number, tree: boolean): number[] {
  if (!tree) return [pid];
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    if (!processExists(p)) continue;
    out.push(p);
    queue.push(...readChildren(p));
  }
  return out;
}

/** Everything that would make the checkpoint fail or restore wrongly, found without touching any process. */
export function inspectProcess(pid: number, opts: Pick<CheckpointOptions, 'tree' | 'tcpEstablished'> = {}): Refusal[] {
  if (!processExists(pid)) throw new NativeError('checkpoint', Errno.ESRCH, `pid ${pid}`);
  const pids = collectProcesses(pid, !!opts.tree);
  return inspectAll(pid, pids, !!opts.tree, { tcp: !!opts.tcpEstablished });
}

function inspectAll(root: number, pids: number[], tree: boolean, opts: InspectOptions): Refusal[] {
  const refusals: Refusal[] = [];
  const scope = new Set(pids);
  if (!tree) {
    const children = readChildren(root);
    if (children.length) {
      refusals.push({ pid: root, resource: 'children', reason: `it has children (pid ${children.join(', ')}), which would be lost: checkpoint the whole tree (--tree)` });
    }
  }
  if (isZombie(root)) refusals.push({ pid: root, resource: 'state', reason: 'it is a zombie' });
  for (const pid of pids) {
    if (pid !== root && isZombie(pid)) continue;
    for (const [, r] of RESOURCES) r.inspect(pid, refusals, scope, opts);
  }
  return refusals;
}

/** A stopped process of the checkpoint: its threads and an injector into each. */
interface Stopped {
  pid: number;
  threads: Array<{ tid: number; injector: Injector }>;
}

/** Checkpoints into a directory, or into a sink that streams the image to another host. */
export async function checkpointProcess(pid: number, dir: string | ImageSink, opts: CheckpointOptions = {}): Promise<CheckpointSummary> {
  const started = performance.now();
  const phases: Array<{ phase: string; ms: number }> = [];
  let mark = started;
  const lap = (phase: string) => {
    const now = performance.now();
    phases.push({ phase, ms: now - mark });
    mark = now;
  };
  if (opts.container) opts = { ...opts, tree: true, tcpEstablished: true };
  if (opts.holdFrozen && (!opts.container || opts.leaveRunning)) throw new Error('holdFrozen is for a container that is not left running');
  const refusals = inspectProcess(pid, opts);
  if (opts.container) container.inspect(opts.container, refusals);
  if (refusals.length) throw new CheckpointRefused(refusals);
  let pids = collectProcesses(pid, !!opts.tree);
  lap('inspect');
  for (const p of pids) if (!isZombie(p)) for (const [, r] of RESOURCES) r.prepare?.(p);
  const precopy = opts.precopy === undefined ? null : precopySession(opts.precopy);
  const image = precopy ? precopy.writer : typeof dir === 'string' ? await ImageWriter.create(dir) : ImageWriter.toSink(dir);
  lap('prepare');
  let frozenAt = 0;
  const stopped: Stopped[] = [];
  let net: TcpCheckpoint | null = null;
  /** The originals are gone: their sockets with them, so the lock must stay whatever happens next. */
  let killed = false;
  const zombies: number[] = [];
  try {
    const stopThreads = (p: number, tids: number[]) => {
      const leader = new Injector(p);
      const threads = [{ tid: p, injector: leader }];
      for (const tid of tids.filter((t) => t !== p)) {
        const inj = new Injector(tid, leader.gadget);
        inj.shareScratchOf(leader);
        threads.push({ tid, injector: inj });
      }
      stopped.push({ pid: p, threads });
    };
    if (opts.container) {
      // The cgroup freezer stops every task at once; seized while frozen, they trap as soon as it thaws.
      const cgroup = opts.container.cgroup;
      freeze(cgroup);
      frozenAt = performance.now();
      const tasks = new Map<number, number[]>();
      try {
        pids = collectProcesses(pid, true);
        for (const p of pids) {
          if (p !== pid && isZombie(p)) zombies.push(p);
          else tasks.set(p, seizeAndInterrupt(listThreads(p)));
        }
      } finally {
        thaw(cgroup);
      }
      for (const [p, tids] of tasks) {
        for (const tid of tids) waitForTrapStop(tid, 10_000);
        stopThreads(p, tids);
      }
    }
    // Children born while the tree is being stopped are traced from birth (TRACEFORK), so none slips out.
    const options = opts.tree ? PTRACE_O.TRACEFORK | PTRACE_O.TRACEVFORK | PTRACE_O.TRACECLONE : 0;
    for (;;) {
      for (const p of pids) {
        if (stopped.some((s) => s.pid === p) || zombies.includes(p)) continue;
        if (p !== pid && isZombie(p)) {
          zombies.push(p);
          continue;
        }
        const tids = stopThreadGroup(p, { options });
        if (!frozenAt) frozenAt = performance.now();
        stopThreads(p, tids);
      }
      const now = collectProcesses(pid, !!opts.tree);
      const born = now.filter((p) => !pids.includes(p));
      if (!born.length) break;
      const late = inspectAll(pid, now, !!opts.tree, { tcp: !!opts.tcpEstablished }).filter((r) => born.includes(r.pid));
      if (late.length) throw new CheckpointRefused(late.map((r) => ({ ...r, reason: `${r.reason} (it was born during the checkpoint)` })));
      pids = now;
    }
    lap('stop');
    const scope = new Set(pids);
    if (opts.tcpEstablished) {
      // Before any socket is read: from here on no segment reaches them and none leaves.
      net = TcpCheckpoint.begin(stopped.map((s) => s.pid), scope);
      lap('lock network');
    }
    const stats = { pages: 0, dataPages: 0, zeroPages: 0, precopiedPages: 0 };
    const shared = { shmemIds: new Map<string, number>(), fileIds: [], pipeIds: new Map<string, number>(), ghostIds: new Map<string, number>() };
    for (const s of stopped) {
      const sent = precopy?.finish(s.pid, s.threads[0]!.injector);
      const ctx: DumpContext = { pid: s.pid, injector: s.threads[0]!.injector, threads: s.threads, image, stats, scope, ...shared, ...(sent ? { sent } : {}) };
      for (const [name, r] of RESOURCES) {
        await r.dump(ctx);
        lap(stopped.length > 1 ? `dump ${name} ${s.pid}` : `dump ${name}`);
      }
    }
    for (const z of zombies) dumpZombie(image, z);
    if (opts.container) {
      container.dump(image, opts.container, pids);
      await container.dumpTmp(image, pid, stats);
      lap('dump container');
    }
    // The processes go on (or are killed) with the lock left in place: the image says where it is, for the restore to remove.
    if (net && !opts.leaveRunning) for (const e of net.lockEntries()) image.addEntry(e);
    for (const s of stopped) endInjection(s.threads);
    const allTids = stopped.flatMap((s) => s.threads.map((t) => t.tid));
    let frozenMs = 0;
    if (opts.leaveRunning) {
      // A socket in repair mode refuses the program's reads and writes.
      net?.leaveRepair();
      net?.release();
      // Everything is captured: the processes need not wait for the image to reach the disk.
      detachAll(allTids);
      stopped.length = 0;
      frozenMs = performance.now() - frozenAt;
      net?.unlock();
      lap('release');
    }
    const manifest = await image.finish({ pid, pids, kind: opts.container ? 'container' : opts.tree ? 'tree' : 'process', ...(opts.container ? { container: opts.container.name } : {}) });
    lap('write image');
    // Ferry's copies go; sockets still in repair mode vanish silently with their processes.
    net?.release();
    if (opts.holdFrozen) {
      // Ptrace-stopped tasks count as frozen, so the freeze completes at once and they stay stopped when detached.
      freeze(opts.container!.cgroup);
      detachAll(allTids);
      stopped.length = 0;
      frozenMs = performance.now() - frozenAt;
      lap('hold frozen');
    } else if (!opts.leaveRunning) {
      // Only once the image is safely on disk may the originals go.
      killed = true;
      for (const s of stopped) kill(s.pid, 9);
      frozenMs = performance.now() - frozenAt;
      stopped.length = 0;
      await releasePids(pids, allTids);
      lap('release');
    }
    return {
      pid,
      pids,
      dir: typeof dir === 'string' ? path.resolve(dir) : dir.where,
      ...stats,
      bytes: manifest.files.find((f) => f.name === 'pages.bin')?.size ?? 0,
      entries: image.entryCount,
      frozenMs,
      totalMs: performance.now() - started,
      leftRunning: !!opts.leaveRunning,
      heldFrozen: !!opts.holdFrozen,
      phases,
      ...(net ? { tcp: { sockets: net.sockets, locks: opts.leaveRunning ? [] : net.locks.map((l) => ({ table: l.table, netns: l.netns, pid: l.pid })) } } : {}),
    };
  } catch (e) {
    // Leave every process exactly as it was: registers, masks, no scratch, sockets out of repair mode, running.
    abortTcp(net, 'before');
    for (const s of stopped) {
      endInjection(s.threads);
      detachAll(s.threads.map((t) => t.tid));
    }
    if (!killed) abortTcp(net, 'after');
    await image.abort(e instanceof Error ? e.message : String(e));
    throw e;
  } finally {
    if (opts.precopy !== undefined) endPrecopySession(opts.precopy);
  }
}

/** A failed checkpoint puts the sockets back as they were before the processes run again, and unlocks once they do. */
function abortTcp(net: TcpCheckpoint | null, when: 'before' | 'after'): void {
  if (!net) return;
  try {
    if (when === 'before') {
      net.leaveRepair();
      net.release();
    } else {
      net.unlock();
    }
  } catch {
    // the error that failed the checkpoint is the one to report; a process already killed has no sockets left
  }
}

function dumpZombie(image: ImageWriter, pid: number): void {
  const f = readStat(pid).fields;
  image.addEntry(
    ZombieEntry.make({ pid, ppid: Number(f[4]), pgid: Number(f[5]), sid: Number(f[6]), exitSignal: Number(f[38]), status: Number(f[52]) }),
  );
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
 * Waits until the killed processes' pids are free. Every traced thread's
 * exit is reported to us first (a thread group leader is released only after
 * all of them); then each parent reaps its child: us, another killed process
 * (whose orphans go to the nearest subreaper), or whoever started the root.
 * A parent that never reaps keeps a pid taken, and a restore with it would
 * fail, so say so.
 */
async function releasePids(pids: number[], tids: number[]): Promise<void> {
  const deadline = Date.now() + 10_000;
  const pending = new Set(tids);
  for (;;) {
    for (const tid of pending) {
      try {
        if (waitpid(tid, WAIT.WNOHANG)) pending.delete(tid);
      } catch {
        pending.delete(tid); // not ours to reap: its parent will
      }
    }
    for (const p of pids) {
      try {
        waitpid(p, WAIT.WNOHANG);
      } catch {
        // not our child
      }
    }
    const left = pids.filter(processExists);
    if (!left.length) return;
    if (Date.now() > deadline) {
      const who = left.map((p) => `${p} (parent ${readStatus(p).PPid})`).join(', ');
      throw new NativeError('checkpoint', Errno.EBUSY, `the processes were killed but not yet reaped by their parents: ${who}; their pids stay taken until they are`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const tracerOps: Record<string, Op> = {
  checkpoint: (_ctx, pid: number, dir: string, opts: CheckpointOptions) => checkpointProcess(pid, dir, opts),
  /** The image goes to the main thread through `port` (servePortSink), and from there over the network. */
  checkpointToPort: (_ctx, pid: number, port: MessagePort, where: string, opts: CheckpointOptions) => checkpointProcess(pid, new PortSink(port, where), opts),
  inspect: (_ctx, pid: number, opts: Pick<CheckpointOptions, 'tree' | 'tcpEstablished'>) => inspectProcess(pid, opts),
};
