import fs from 'node:fs';
import { Husk } from '../native/husk.js';
import { detach } from '../native/attach.js';
import { findSyscallGadget } from '../native/inject.js';
import { processExists, readStat } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import type { Op } from '../native/tracer-protocol.js';
import { ImageReader, hostFacts } from '../image/format.js';
import '../image/all.js';
import { newSharedObjects, PidTranslation, type RestoreContext, type SharedObjects } from './context.js';
import { treeOrder, buildTree, joinGroups, finishZombies, type TreeMember } from './tree.js';
import * as container from './container.js';
import { containerOf } from './container.js';
import { addProcess, freeze, removeCgroup, type Cgroup } from '../native/cgroup.js';
import type { RestoredContainer } from '../container/runtime.js';
import * as memory from './memory.js';
import * as proc from './process.js';
import * as thread from './thread.js';
import * as signals from './signals.js';
import * as files from './files.js';
import * as unix from './unix.js';
import * as tcp from './tcp.js';
import { inNetns } from '../native/process.js';
import * as creds from './creds.js';
import * as timers from './timers.js';

/** The image cannot be restored here; nothing was created. */
export class RestoreRefused extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`refusing to restore: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'RestoreRefused';
    this.problems = problems;
  }
}

export interface RestoreSummary {
  /** The root of the restored tree (the only process for a single-process image), by its pid on this host (a container's init: its host pid). */
  pid: number;
  /** Every process restored, parents before children, by their pids on this host. */
  pids: number[];
  dir: string;
  /** From the first husk to the processes running. */
  restoreMs: number;
  /** For a container: what ps, stop and logs need to know of it, and the cgroup it now runs in. */
  container?: RestoredContainer;
  /**
   * TCP sockets rebuilt, and the network locks the checkpoint had left:
   * removed once the processes run, or, for a restore that leaves them
   * frozen, still in place for whoever thaws them (unlockTable in
   * src/native/nft.ts, in the namespace of `pid`, a live pid).
   */
  tcp?: { sockets: number; locks: tcp.LockState[] };
}

/** Candidate husk bases: the husk, its scratch and the vdso parking area need 4 MiB that no process of the image uses. */
const HUSK_BASES = [0x10000000, 0x20000000, 0x200000000, 0x100000000000, 0x7e0000000000];
const HUSK_WINDOW = 4 << 20;
const SCRATCH_OFFSET = 0x10000;
const PARKING_OFFSET = 0x200000;

function chooseHuskBase(occupied: Array<{ start: number; end: number }>): number {
  for (const base of HUSK_BASES) {
    if (!occupied.some((r) => r.start < base + HUSK_WINDOW && r.end > base)) return base;
  }
  throw new RestoreRefused(['the image uses every address range Ferry could place its restore helper at']);
}

/** The lowest fd number above every fd the image restores. */
function fdFloor(image: ImageReader): number {
  let max = 2;
  for (const e of image.entries()) {
    const fd = (e as { fd?: unknown }).fd;
    if (e.type === 'fd' && typeof fd === 'number') max = Math.max(max, fd);
  }
  return max + 1;
}

function preflight(image: ImageReader, order: TreeMember[], pids: PidTranslation): void {
  const problems: string[] = [];
  // A container's pids inside come from a new namespace and its host pids are this host's choice: only a bare tree needs pids free.
  for (const m of pids.keepsHostPids ? order : []) {
    if (!processExists(m.entry.pid)) continue;
    let who = '';
    try {
      who = ` by ${readStat(m.entry.pid).comm}`;
    } catch {
      // it went away between the two looks
    }
    problems.push(`pid ${m.entry.pid} is in use${who}; the restored process needs exactly that pid`);
  }
  // The restored processes keep calling into the vdso at the offsets of the kernel they were checkpointed on.
  const here = hostFacts();
  const there = image.manifest.host;
  if (there.arch !== here.arch) problems.push(`the image is for ${there.arch}, this host is ${here.arch}`);
  if (there.kernel !== here.kernel || there.kernelBuild !== here.kernelBuild) {
    problems.push(`the image was taken on kernel ${there.kernel} (${there.kernelBuild}); this host runs ${here.kernel} (${here.kernelBuild}), and a process needs the exact kernel build its vdso came from`);
  }
  const box = containerOf(image);
  if (box) container.preflight(box, problems);
  memory.preflight({ image }, problems);
  files.preflight({ image }, problems);
  unix.preflight({ image }, problems);
  tcp.preflight({ image }, problems);
  creds.preflight({ image }, problems);
  if (problems.length) throw new RestoreRefused(problems);
}

/**
 * Restores every process of an image: first the whole tree of husks with
 * their pids, sessions and groups (and threads), then each process's state,
 * parents first, then the zombies' ends. Objects processes share are made by
 * the first that needs them and fetched by the others. Nothing runs until
 * everything is in place; on any failure every husk is killed.
 */
export interface RestoreOptions {
  /**
   * A container only: it comes back frozen in its cgroup, every process in
   * place but none running. A migration's target holds it so until the
   * source has let go of its own copy, then thaws it.
   */
  frozen?: boolean;
  /**
   * A bare process or tree only: restore it into this network namespace
   * (a namespace file, /run/netns/NAME or /proc/PID/ns/net) instead of
   * Ferry's own: the one its TCP connections were checkpointed in, say.
   */
  netns?: string;
}

export async function restoreProcess(dir: string, opts: RestoreOptions = {}): Promise<RestoreSummary> {
  const image = await ImageReader.open(dir);
  try {
    const order = treeOrder(image);
    const box = containerOf(image);
    const pids = new PidTranslation(box);
    if (box && opts.netns) throw new RestoreRefused([`container ${box.name} gets a network namespace of its own; a namespace to restore into is for a bare process`]);
    if (opts.netns && !fs.existsSync(opts.netns)) throw new RestoreRefused([`the network namespace ${opts.netns} to restore into does not exist`]);
    preflight(image, order, pids);

    const started = performance.now();
    const base = chooseHuskBase(memory.occupiedRanges({ image }));
    const cgroup = box ? container.prepareCgroup(box) : null;
    let husks = new Map<number, Husk>();
    let first: Husk | null = null;
    let shared: SharedObjects | null = null;
    let unlocked = false;
    try {
      // Every husk is cloned from the first, so the whole tree lives in its network namespace.
      first = opts.netns ? inNetns(opts.netns, () => Husk.spawn(base, 10_000, base + SCRATCH_OFFSET)) : Husk.spawn(base, 10_000, base + SCRATCH_OFFSET);
      // Born in the container's cgroup, so nothing restored ever runs outside it.
      if (cgroup) addProcess(cgroup, first.pid);
      if (box) container.prepareClocks(first, box);
      husks = buildTree(first, order, { pids, rootFlags: box ? container.CONTAINER_CLONE_FLAGS : 0 });
      const init = husks.get(order[0]!.entry.pid)!;
      if (box) container.setupNamespaces(init.injector, box);
      joinGroups(husks, order, pids);
      const objects = newSharedObjects();
      shared = objects;
      const floor = fdFloor(image);
      const live = order.filter((m): m is Extract<TreeMember, { kind: 'live' }> => m.kind === 'live');
      const contexts: RestoreContext[] = live.map(({ entry }) => {
        const husk = husks.get(entry.pid)!;
        return {
          pid: husk.pid,
          imagePid: entry.pid,
          image,
          husk,
          injector: husk.injector,
          threads: [{ tid: husk.pid, imageTid: entry.pid, injector: husk.injector }],
          shmemFds: new Map(),
          parkedFds: new Set(),
          fdFloor: floor,
          shared: objects,
          pids,
        };
      });
      for (const ctx of contexts) thread.createThreads(ctx, proc.processOf(ctx).threads);
      for (const ctx of contexts) await restoreContents(ctx, base, box !== null);
      if (box) {
        await container.enterRoot(init.injector, init.pid, box, image);
        for (const ctx of contexts) await files.restore(ctx, 'inside');
      }
      for (const ctx of contexts) restoreIdentity(ctx);
      finishZombies(husks, order);
      // Now that no process needs another's objects any more, each drops what it only held for the others.
      for (const ctx of contexts) for (const fd of [...ctx.parkedFds]) ctx.injector.call('close(parked)', Sys.close, fd);
      for (const ctx of contexts) {
        // The leader owns the scratch mapping, so it ends last.
        for (const t of [...ctx.threads].reverse()) t.injector.end(false);
        thread.restoreCpu(ctx);
      }
      const sockets = tcp.count(objects);
      // The processes are about to run: their peers may reach the sockets again. Unlocked before the sockets leave
      // repair mode, so that the window probe this sends and the data sent again reach the peers at once.
      const locks = opts.frozen ? tcp.locks(image, pids) : tcp.unlock(image, pids);
      unlocked = !opts.frozen && locks.length > 0;
      tcp.resume(objects);
      // Ptrace-stopped tasks count as frozen, so the freeze completes at once and they stay put when detached.
      if (opts.frozen && cgroup) freeze(cgroup);
      for (const ctx of contexts) for (const t of ctx.threads) detach(t.tid);
      return {
        pid: init.pid,
        pids: order.map((m) => pids.liveOf(m.entry.pid)),
        dir,
        restoreMs: performance.now() - started,
        ...(sockets || locks.length ? { tcp: { sockets, locks } } : {}),
        ...(box && cgroup
          ? {
              container: {
                name: box.name,
                cgroup,
                hostname: box.hostname,
                command: box.command,
                executable: box.executable,
                cwd: box.cwd,
                env: box.env,
                limits: box.limits,
                pids: pids.containerPids(),
              },
            }
          : {}),
      };
    } catch (e) {
      // The sockets vanish silently with the husks; the lock, put back, keeps the peers waiting for another try.
      if (shared) tcp.abort(shared);
      if (unlocked) tcp.relock(image, pids);
      first?.kill();
      husks.get(order[0]!.entry.pid)?.kill();
      if (cgroup) removeCgroupQuietly(cgroup);
      throw e;
    }
  } finally {
    await image.close();
  }
}

function removeCgroupQuietly(cgroup: Cgroup): void {
  try {
    removeCgroup(cgroup);
  } catch {
    // still emptying: the next run of this container removes a stale group
  }
}

/**
 * What a process holds: memory, signals, timers, fds. Paths still resolve
 * as on the host, where the image took them (a container's root is entered
 * only after this, for every process).
 */
async function restoreContents(ctx: RestoreContext, base: number, inContainer: boolean): Promise<void> {
  await memory.restore(ctx, base + PARKING_OFFSET);
  signals.restore(ctx);
  timers.restore(ctx);
  // Sockets first: the fd table places the sockets the unix and tcp modules made.
  await unix.restore(ctx);
  await tcp.restore(ctx);
  await files.restore(ctx, inContainer ? 'host' : 'all');
}

/** Who the process is: directories, mm fields, per-thread state, limits, and credentials last. */
function restoreIdentity(ctx: RestoreContext): void {
  proc.restore(ctx);
  // From here on injected calls go through the restored program's own code, so the husk's page can go.
  const gadget = findSyscallGadget(ctx.pid, null, ctx.husk.layout);
  for (const t of ctx.threads) t.injector.useGadget(gadget);
  ctx.injector.call('munmap(husk)', Sys.munmap, ctx.husk.layout.start, ctx.husk.layout.end - ctx.husk.layout.start);
  memory.restoreMm(ctx);
  thread.restoreKernelState(ctx);
  proc.restoreLimits(ctx);
  // Credentials belong to each thread (the raw setresuid changes only the caller).
  for (const t of ctx.threads) creds.restore({ ...ctx, injector: t.injector });
  proc.restoreAfterCreds(ctx);
}

export const tracerOps: Record<string, Op> = {
  restore: (_ctx, dir: string, opts?: RestoreOptions) => restoreProcess(dir, opts),
};
