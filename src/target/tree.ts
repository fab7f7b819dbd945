import { Husk } from '../native/husk.js';
import { Sys } from '../native/syscalls.js';
import { readStat, processExists } from '../native/proc.js';
import { setSigmask } from '../native/ptrace.js';
import { detach } from '../native/attach.js';
import { kill } from '../native/process.js';
import { isNativeError } from '../native/errors.js';
import { ProcessEntry, ZombieEntry } from '../image/process.js';
import type { ImageReader } from '../image/format.js';

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

const CLONE_FLAGS_PROCESS = 0;

/**
 * Creates a husk for every process of the image, each with its pid, as the
 * child of its parent's husk. A process that led a session calls setsid
 * before its own children exist, so they are born into it, as they were.
 * The root is cloned from `first`, which is then released: the root becomes
 * the restorer's child.
 */
export function buildTree(first: Husk, order: TreeMember[]): Map<number, Husk> {
  const husks = new Map<number, Husk>();
  for (const m of order) {
    const e = m.entry;
    const parent = husks.get(e.ppid) ?? first;
    const husk = parent.clone({ setTid: [e.pid], flags: CLONE_FLAGS_PROCESS, exitSignal: e.exitSignal });
    husks.set(e.pid, husk);
    if (parent === first) first.release();
    if (m.kind === 'live' && e.sid === e.pid) husk.injector.call('setsid', Sys.setsid);
  }
  return husks;
}

/**
 * Puts every process in its process group, leaders first. Groups whose
 * leader is not in the image (the root's, usually) stay as the restore made
 * them.
 */
export function joinGroups(husks: Map<number, Husk>, order: TreeMember[]): void {
  const inImage = new Set(order.map((m) => m.entry.pid));
  const leaders = order.filter((m) => m.entry.pgid === m.entry.pid && m.entry.sid !== m.entry.pid);
  const members = order.filter((m) => m.entry.pgid !== m.entry.pid && inImage.has(m.entry.pgid));
  for (const m of [...leaders, ...members]) {
    if (Number(readStat(m.entry.pid).fields[5]) === m.entry.pgid) continue;
    husks.get(m.entry.pid)!.injector.call(`setpgid(0, ${m.entry.pgid})`, Sys.setpgid, 0, m.entry.pgid);
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
      setSigmask(z.pid, 0n);
      detach(z.pid);
      kill(z.pid, signal);
    }
    waitUntilZombie(z.pid);
    const parent = husks.get(z.ppid)!;
    parent.injector.reset();
    const set = Buffer.alloc(8);
    set.writeBigUInt64LE(1n << BigInt(z.exitSignal - 1));
    const timeout = Buffer.alloc(16);
    parent.injector.callRaw(Sys.rt_sigtimedwait, parent.injector.put(set), 0, parent.injector.put(timeout), 8);
    parent.injector.reset();
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
