/**
 * Control groups, v2 and v1 side by side. Hosts differ: some mount only
 * cgroup2 with every controller, some mount cgroup2 with no controllers next
 * to v1 hierarchies that own them (a "hybrid" host). A Cgroup here is one
 * group spread over whatever hierarchies serve it: the unified directory
 * when there is a cgroup2 mount (its cgroup.freeze needs no controller), and
 * a v1 directory for each controller the unified hierarchy cannot offer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { asNative } from './memory.js';
import { listMounts } from './mount.js';

export type Controller = 'memory' | 'cpu';

export interface Cgroup {
  /** The group's path below each hierarchy's root, e.g. "ferry/web". */
  path: string;
  /** Its directory on the cgroup2 hierarchy; null when the host has none. */
  unified: string | null;
  /** Controllers that the unified directory serves. */
  v2Controllers: Controller[];
  /** Its directories on v1 hierarchies, by controller; `freezer` only when it freezes with v1. */
  v1: Partial<Record<Controller | 'freezer', string>>;
  /** cgroup2's cgroup.freeze, or the v1 freezer controller's freezer.state. */
  freezer: 'v2' | 'v1';
}

export interface CgroupOptions {
  /**
   * Freeze with the v1 freezer even where cgroup2 could: for a host whose
   * cgroup2 mount cannot freeze (read-only, or a kernel before 5.2).
   */
  v1Freezer?: boolean;
}

export type FreezerState = 'thawed' | 'freezing' | 'frozen';

interface Hierarchies {
  unified: string | null;
  v1: Map<string, string>;
}

/** The cgroup mounts of this mount namespace; the first mount of each wins. */
function hierarchies(): Hierarchies {
  let unified: string | null = null;
  const v1 = new Map<string, string>();
  for (const m of listMounts('self')) {
    if (m.fsType === 'cgroup2' && unified === null) unified = m.mountPoint;
    if (m.fsType !== 'cgroup') continue;
    for (const option of m.superOptions) if (!v1.has(option)) v1.set(option, m.mountPoint);
  }
  return { unified, v1 };
}

/**
 * Where the group `relPath` lives on this host for `controllers`, without
 * creating anything: each controller goes to cgroup2 if its root offers it,
 * else to the v1 hierarchy that carries it.
 */
export function cgroupAt(relPath: string, controllers: Controller[], options: CgroupOptions = {}): Cgroup {
  const clean = path.posix.normalize(relPath);
  if (clean.startsWith('/') || clean.startsWith('..') || clean === '.') {
    throw new NativeError(`cgroup ${relPath}`, Errno.EINVAL, 'a cgroup path is relative and stays below the hierarchy root');
  }
  const h = hierarchies();
  const offered = h.unified ? readList(h.unified, 'cgroup.controllers') : [];
  const freezer = h.unified && !options.v1Freezer ? 'v2' : 'v1';
  const cg: Cgroup = { path: clean, unified: h.unified ? path.join(h.unified, clean) : null, v2Controllers: [], v1: {}, freezer };
  for (const c of controllers) {
    if (offered.includes(c)) cg.v2Controllers.push(c);
    else if (h.v1.has(c)) cg.v1[c] = path.join(h.v1.get(c)!, clean);
    else throw new NativeError(`cgroup ${c} controller`, Errno.ENODEV, 'neither cgroup2 nor a v1 hierarchy offers it on this host');
  }
  if (freezer === 'v1') {
    const mount = h.v1.get('freezer');
    if (!mount) throw new NativeError('cgroup freezer', Errno.ENODEV, h.unified ? 'no v1 freezer hierarchy' : 'no cgroup2 mount and no v1 freezer hierarchy');
    cg.v1.freezer = path.join(mount, clean);
  }
  return cg;
}

/** Every directory of the group. */
export function cgroupDirs(cg: Cgroup): string[] {
  return [...(cg.unified ? [cg.unified] : []), ...Object.values(cg.v1)];
}

export function cgroupExists(cg: Cgroup): boolean {
  return cgroupDirs(cg).some((dir) => fs.existsSync(dir));
}

/**
 * Creates the group on every hierarchy it spans, with its parents, and
 * enables its v2 controllers on the way down. The group itself must be new
 * (EEXIST otherwise): creating it is how two callers that want the same
 * name find out about each other. Nothing is left behind on failure.
 */
export function createCgroup(relPath: string, controllers: Controller[], options: CgroupOptions = {}): Cgroup {
  const cg = cgroupAt(relPath, controllers, options);
  const created: string[] = [];
  try {
    if (cg.unified) makeGroupDir(cg.unified, cg.path, created, (parent) => enableControllers(parent, cg.v2Controllers));
    for (const dir of Object.values(cg.v1)) makeGroupDir(dir, cg.path, created);
  } catch (e) {
    for (const dir of created.reverse()) removeQuietly(dir);
    throw e;
  }
  return cg;
}

/**
 * Creates `dir`, which is `relPath` below a hierarchy root, and any missing
 * parents (another group may be creating the same parents right now, so an
 * existing parent is fine; an existing `dir` is not). `prepare` runs on each
 * parent before its child is made.
 */
function makeGroupDir(dir: string, relPath: string, created: string[], prepare?: (parent: string) => void): void {
  let current = dir.slice(0, dir.length - relPath.length - 1);
  const parts = relPath.split('/');
  for (const [i, part] of parts.entries()) {
    prepare?.(current);
    current = path.join(current, part);
    try {
      fs.mkdirSync(current);
      created.push(current);
    } catch (e) {
      const err = asNative(e, `mkdir(${current})`);
      if (i === parts.length - 1 || !(err instanceof NativeError && err.errno === Errno.EEXIST)) throw err;
    }
  }
}

/** A child group can use a v2 controller only once its parent lists it in cgroup.subtree_control. */
function enableControllers(dir: string, controllers: Controller[]): void {
  const enabled = readList(dir, 'cgroup.subtree_control');
  const missing = controllers.filter((c) => !enabled.includes(c));
  if (missing.length) writeFile(dir, 'cgroup.subtree_control', missing.map((c) => `+${c}`).join(' '));
}

/**
 * Removes the group's directories. A group can only go once its last task
 * has exited, which trails a SIGKILL by a little: EBUSY is waited out for
 * up to `timeoutMs`, then reported with the pids still inside.
 */
export function removeCgroup(cg: Cgroup, timeoutMs = 5_000): void {
  const deadline = performance.now() + timeoutMs;
  let pauseUs = 50;
  for (const dir of cgroupDirs(cg)) {
    while (!tryRemoveDir(dir)) {
      if (performance.now() >= deadline) {
        const pids = readPids(dir);
        throw new NativeError(`rmdir(${dir})`, Errno.EBUSY, `still holds ${pids.length ? `pids ${pids.join(', ')}` : 'a child group'} after ${timeoutMs} ms`);
      }
      pauseUs = pause(pauseUs);
    }
  }
}

/** true once `dir` is gone, false while the group is busy (tasks or child groups inside). */
function tryRemoveDir(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
    return true;
  } catch (e) {
    const err = asNative(e, `rmdir(${dir})`);
    if (err instanceof NativeError && err.errno === Errno.ENOENT) return true;
    if (err instanceof NativeError && err.errno === Errno.EBUSY) return false;
    throw err;
  }
}

function removeQuietly(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // Best effort while undoing a failed create; the original error is what matters.
  }
}

/**
 * SIGKILLs every task of the group, frozen or not, without letting any run
 * a single instruction of its own: cgroup2's cgroup.kill where the group
 * is on the unified hierarchy (a frozen task dies there), else a SIGKILL to
 * each task and then a thaw (a v1-frozen task only dies once thawed, and a
 * pending SIGKILL is taken before it returns to user space). Returns once
 * the group is empty.
 */
export function killAll(cg: Cgroup, timeoutMs = 10_000): void {
  if (cg.unified && fs.existsSync(path.join(cg.unified, 'cgroup.kill'))) {
    writeFile(cg.unified, 'cgroup.kill', '1');
  } else {
    for (const pid of listPids(cg)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
  if (freezerState(cg) !== 'thawed') requestFreezer(cg, false);
  const deadline = performance.now() + timeoutMs;
  let pauseUs = 50;
  while (listPids(cg).length) {
    if (performance.now() >= deadline) throw new NativeError(`kill cgroup ${cg.path}`, Errno.ETIMEDOUT, `pids ${listPids(cg).join(', ')} still there after ${timeoutMs} ms`);
    pauseUs = pause(pauseUs);
  }
}

/** Moves a process (all its threads) into the group on every hierarchy. */
export function addProcess(cg: Cgroup, pid: number): void {
  for (const dir of cgroupDirs(cg)) writeFile(dir, 'cgroup.procs', String(pid));
}

/** The processes in the group (their thread-group ids); none once the group is gone. */
export function listPids(cg: Cgroup): number[] {
  const dir = cgroupDirs(cg).find((d) => fs.existsSync(d));
  return dir ? readPids(dir) : [];
}

function readPids(dir: string): number[] {
  return readFile(dir, 'cgroup.procs')
    .split('\n')
    .filter(Boolean)
    .map(Number);
}

/** Caps the group's memory (page cache included); the kernel reclaims, then OOM-kills inside the group. */
export function setMemoryLimit(cg: Cgroup, bytes: number): void {
  if (cg.v2Controllers.includes('memory')) writeFile(cg.unified!, 'memory.max', String(bytes));
  else writeFile(controllerDir(cg, 'memory'), 'memory.limit_in_bytes', String(bytes));
}

const CPU_PERIOD_US = 100_000;
/** The kernel refuses CFS quotas below 1 ms. */
const CPU_MIN_QUOTA_US = 1_000;

/** Caps the group's CPU time to `cpus` CPUs' worth per period (CFS bandwidth control). */
export function setCpuLimit(cg: Cgroup, cpus: number): void {
  const quota = Math.max(CPU_MIN_QUOTA_US, Math.round(cpus * CPU_PERIOD_US));
  if (cg.v2Controllers.includes('cpu')) {
    writeFile(cg.unified!, 'cpu.max', `${quota} ${CPU_PERIOD_US}`);
    return;
  }
  const dir = controllerDir(cg, 'cpu');
  writeFile(dir, 'cpu.cfs_period_us', String(CPU_PERIOD_US));
  writeFile(dir, 'cpu.cfs_quota_us', String(quota));
}

/** Lifts the group's CPU limit. */
export function clearCpuLimit(cg: Cgroup): void {
  if (cg.v2Controllers.includes('cpu')) {
    writeFile(cg.unified!, 'cpu.max', `max ${CPU_PERIOD_US}`);
    return;
  }
  writeFile(controllerDir(cg, 'cpu'), 'cpu.cfs_quota_us', '-1');
}

/** Bytes of memory charged to the group now; null when the group has no memory controller or is gone. */
export function memoryUsage(cg: Cgroup): number | null {
  const onV2 = cg.v2Controllers.includes('memory');
  const dir = onV2 ? cg.unified : cg.v1.memory;
  if (!dir) return null;
  try {
    return Number(readFile(dir, onV2 ? 'memory.current' : 'memory.usage_in_bytes'));
  } catch (e) {
    if (e instanceof NativeError && e.errno === Errno.ENOENT) return null;
    throw e;
  }
}

function controllerDir(cg: Cgroup, c: Controller): string {
  const dir = cg.v1[c];
  if (!dir) throw new NativeError(`cgroup ${cg.path}`, Errno.ENODEV, `was created without the ${c} controller`);
  return dir;
}

/**
 * The freezer's view of the group. With cgroup2 the truth is cgroup.events
 * ("frozen 1" once every task has stopped; a frozen ancestor also counts),
 * with v1 freezer.state, which reads FREEZING until the last task stops.
 */
export function freezerState(cg: Cgroup): FreezerState {
  if (cg.freezer === 'v2') {
    if (/^frozen 1$/m.test(readFile(cg.unified!, 'cgroup.events'))) return 'frozen';
    return readFile(cg.unified!, 'cgroup.freeze') === '1' ? 'freezing' : 'thawed';
  }
  const state = readFile(cg.v1.freezer!, 'freezer.state');
  if (state === 'FROZEN') return 'frozen';
  return state === 'FREEZING' ? 'freezing' : 'thawed';
}

/**
 * Stops every task in the group and returns once all of them are stopped.
 * Tasks that cannot stop in time (uninterruptible sleep on a dead NFS
 * server, say) make it throw ETIMEDOUT after thawing the group again, so a
 * caller never holds a half-frozen group.
 */
export function freeze(cg: Cgroup, timeoutMs = 10_000): void {
  requestFreezer(cg, true);
  try {
    waitForFreezer(cg, 'frozen', timeoutMs);
  } catch (e) {
    requestFreezer(cg, false);
    throw e;
  }
}

/** Lets every task of the group run again and returns once the freezer says so. */
export function thaw(cg: Cgroup, timeoutMs = 10_000): void {
  requestFreezer(cg, false);
  waitForFreezer(cg, 'thawed', timeoutMs);
}

function requestFreezer(cg: Cgroup, frozen: boolean): void {
  if (cg.freezer === 'v2') writeFile(cg.unified!, 'cgroup.freeze', frozen ? '1' : '0');
  else writeFile(cg.v1.freezer!, 'freezer.state', frozen ? 'FROZEN' : 'THAWED');
}

/** Polls with a backoff from 50 µs to 5 ms: a freeze usually completes in microseconds, but a busy task may take a scheduler tick or more. */
function waitForFreezer(cg: Cgroup, want: FreezerState, timeoutMs: number): void {
  const deadline = performance.now() + timeoutMs;
  let pauseUs = 50;
  for (;;) {
    const state = freezerState(cg);
    if (state === want) return;
    if (performance.now() >= deadline) {
      throw new NativeError(`${want === 'frozen' ? 'freeze' : 'thaw'} cgroup ${cg.path}`, Errno.ETIMEDOUT, `still ${state} after ${timeoutMs} ms (pids ${listPids(cg).join(', ')})`);
    }
    pauseUs = pause(pauseUs);
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps `us` microseconds and returns the next, doubled, pause (at most 5 ms). */
function pause(us: number): number {
  Atomics.wait(sleepCell, 0, 0, us / 1000);
  return Math.min(us * 2, 5_000);
}

function readFile(dir: string, name: string): string {
  const file = path.join(dir, name);
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw asNative(e, `read(${file})`);
  }
}

function readList(dir: string, name: string): string[] {
  return readFile(dir, name).split(/\s+/).filter(Boolean);
}

function writeFile(dir: string, name: string, value: string): void {
  const file = path.join(dir, name);
  try {
    fs.writeFileSync(file, value);
  } catch (e) {
    throw asNative(e, `write(${file}, ${JSON.stringify(value)})`);
  }
}
