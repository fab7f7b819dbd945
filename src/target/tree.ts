import { Husk } from '../native/husk.js';
import { Sys } from '../native/syscalls.js';
import { readStat, processExists } from '../native/proc.js';
import { setSigmask } from '../native/ptrace.js';
import { detach } from '../native/attach.js';
import { kill } from '../native/process.js';
import { isNativeError } from '../native/errors.js';
import { ProcessEntry, ZombieEntry } from '../image/process.js';
import type { ImageReader } from '../image/format.js';
import type { PidTranslation } from './context.js';

/** A process of the image, live or zombie, with its place in the tree. */
export type TreeMember = { kind: 'live'; entry: ProcessEntry } | { kind: 'zombie'; entry: ZombieEntry };

/**
 * The processes of an image, parents before children (breadth first from the
 * root). The root is the one whose parent is not in the image.
 */
export function treeOrder(image: ImageReader): TreeMember[] {
  const members: TreeMember[] = [
    ...image.entriesOf(ProcessEntry).map((entry): TreeMember => ({ kind: 'live', entry })),
    ...image.entriesOf(ZombieEntry).map((entry): TreeMember => ({ kind: 'zombie', entry })),
  ];
  const pids = new Set(members.map((m) => m.entry.pid));
  const roots = members.filter((m) => !pids.has(m.entry.ppid));
  if (roots.length !== 1 || roots[0]!.kind !== 'live') {
    throw new Error(`the image must hold one tree with a live root; it has ${roots.length} processes whose parent is not in it`);
  }
  const out: TreeMember[] = [];
  const queue: TreeMember[] = [roots[0]!];
  while (queue.length) {
    const m = queue.shift()!;
    out.push(m);
    queue.push(...members.filter((c) => c.entry.ppid === m.entry.pid && c !== m).sort((a, b) => a.entry.pid - b.entry.pid));
  }
  if (out.length !== members.length) throw new Error('the image holds processes that are not in its tree');
  return out;
}

const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG_WALL = 0x40000001;

/** How the tree is placed: the pids each process gets (and where they are noted), and the root's namespaces. */
export interface TreePlacement {
  pids: PidTranslation;
  rootFlags: number;
}

/**
 * Creates a husk for every process of the image, each with its pid, as the
 * child of its parent's husk, and records the live pids. A process that led
 * a session calls setsid before its own children exist, so they are born
 * into it, as they were. A process in a session that neither it nor its
 * parent leads (an orphan reparented to a subreaper) is born the way it came
 * to be: a helper under the session leader clones it and exits, and it is
 * reparented to the subreaper. The root is cloned from `first`, which is then
 * released: the root becomes the restorer's child. The map is keyed by image
 * pid.
 */
export function buildTree(first: Husk, order: TreeMember[], place: TreePlacement): Map<number, Husk> {
  const husks = new Map<number, Husk>();
  const entries = new Map(order.map((m) => [m.entry.pid, m.entry]));
  const pending = [...order];
  while (pending.length) {
    const i = pending.findIndex((m) => canCreate(m.entry, husks, entries, m === order[0]));
    if (i < 0) throw new Error(`cannot recreate the sessions of processes ${pending.map((m) => m.entry.pid).join(', ')}`);
    const [m] = pending.splice(i, 1);
    const e = m!.entry;
    const parent = husks.get(e.ppid) ?? first;
    let husk: Husk;
    if (bornInAnotherSession(e, entries)) {
      husk = cloneThroughSessionLeader(husks.get(e.sid)!, e, place.pids);
      place.pids.record(e.pid, husk.pid);
      const ppid = Number(readStat(husk.pid).fields[4]);
      if (ppid !== parent.pid) throw new Error(`pid ${e.pid} was reparented to ${ppid}, not to ${parent.pid} (${e.ppid} in the image): its parent must be a subreaper above its session leader`);
    } else {
      const root = parent === first;
      husk = parent.clone({ setTid: place.pids.setTid(e.pid), exitSignal: e.exitSignal, flags: root ? place.rootFlags : 0 });
      place.pids.record(e.pid, husk.pid);
      if (root) first.release();
    }
    husks.set(e.pid, husk);
    if (m!.kind === 'live') {
      if (e.sid === e.pid) husk.injector.call('setsid', Sys.setsid);
      // Before any child of it is created: an orphan restored below it must come back to it.
      if (m!.entry.childSubreaper) husk.injector.call('prctl(PR_SET_CHILD_SUBREAPER)', Sys.prctl, PR_SET_CHILD_SUBREAPER, 1);
    }
  }
  return husks;
}

type Placed = { pid: number; ppid: number; sid: number };

/** In a session that it does not lead and its parent is not in: an orphan that was reparented after its session began. */
function bornInAnotherSession(e: Placed, entries: Map<number, Placed>): boolean {
  const parent = entries.get(e.ppid);
  return e.sid !== e.pid && parent !== undefined && e.sid !== parent.sid;
}

/** A process can be created once its parent exists and, when it must be born in another's session, once that session's leader exists. */
function canCreate(e: Placed, husks: Map<number, Husk>, entries: Map<number, Placed>, isRoot: boolean): boolean {
  if (isRoot) return true;
  if (!husks.has(e.ppid)) return false;
  return !bornInAnotherSession(e, entries) || husks.has(e.sid);
}

function cloneThroughSessionLeader(leader: Husk, e: { pid: number; exitSignal: number }, pids: PidTranslation): Husk {
  const helper = leader.clone();
  const husk = helper.clone({ setTid: pids.setTid(e.pid), exitSignal: e.exitSignal });
  helper.release();
  // The helper's exit left a zombie and a SIGCHLD in the leader, neither of which the original had.
  leader.injector.callRaw(Sys.wait4, -1, 0, WNOHANG_WALL, 0);
  consumeSignal(leader, SIGCHLD);
  return husk;
}

const SIGCHLD = 17;

/** Takes a pending (blocked) signal back out of a husk's queue, if it is there. */
function consumeSignal(husk: Husk, signo: number): void {
  const inj = husk.injector;
  inj.reset();
  const set = Buffer.alloc(8);
  set.writeBigUInt64LE(1n << BigInt(signo - 1));
  inj.callRaw(Sys.rt_sigtimedwait, inj.put(set), 0, inj.put(Buffer.alloc(16)), 8);
  inj.reset();
}

/**
 * Puts every process in its process group, leaders first. Groups whose
 * leader is not in the image (the root's, usually) stay as the restore made
 * them.
 */
export function joinGroups(husks: Map<number, Husk>, order: TreeMember[], pids: PidTranslation): void {
  const inImage = new Set(order.map((m) => m.entry.pid));
  const leaders = order.filter((m) => m.entry.pgid === m.entry.pid && m.entry.sid !== m.entry.pid);
  const members = order.filter((m) => m.entry.pgid !== m.entry.pid && inImage.has(m.entry.pgid));
  for (const m of [...leaders, ...members]) {
    const husk = husks.get(m.entry.pid)!;
    if (Number(readStat(husk.pid).fields[5]) === pids.liveOf(m.entry.pgid)) continue;
    husk.injector.call(`setpgid(0, ${m.entry.pgid})`, Sys.setpgid, 0, pids.vpid(m.entry.pgid));
  }
}

const RLIMIT_CORE = 4;

/**
 * Ends the zombies' husks the way the originals ended: exit_group with the
 * saved code, or the saved signal (no core file). Their parents then hold
 * them unreaped, as before; the SIGCHLD this sends them was received long
 * ago by the original, so it is taken back out of the parent's queue.
 */
export function finishZombies(husks: Map<number, Husk>, order: TreeMember[]): void {
  for (const m of order) {
    if (m.kind !== 'zombie') continue;
    const z = m.entry;
    const husk = husks.get(z.pid)!;
    const pid = husk.pid;
    const signal = z.status & 0x7f;
    if (signal === 0) {
      try {
        husk.injector.callRaw(Sys.exit_group, (z.status >> 8) & 0xff);
      } catch (e) {
        // The injector reports the task's end as an error; here it is the point.
        if (!isNativeError(e, 'ESRCH')) throw e;
      }
    } else {
      husk.injector.call('prlimit64(RLIMIT_CORE)', Sys.prlimit64, 0, RLIMIT_CORE, husk.injector.put(Buffer.alloc(16)), 0);
      husk.injector.reset();
      setSigmask(pid, 0n);
      detach(pid);
      kill(pid, signal);
    }
    waitUntilZombie(pid);
    if (z.exitSignal) consumeSignal(husks.get(z.ppid)!, z.exitSignal);
  }
}

function waitUntilZombie(pid: number): void {
  const deadline = Date.now() + 5_000;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (processExists(pid) && readStat(pid).fields[3] !== 'Z') {
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not become a zombie`);
    Atomics.wait(pause, 0, 0, 1);
  }
}
