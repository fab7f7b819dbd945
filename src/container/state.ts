/**
 * What Ferry remembers about each container: one directory per name under
 * the state directory, holding state.json, the log, and the mount point its
 * root is built on. The file says what was started; the kernel says whether
 * it still runs, and the two are reconciled on every read.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Cgroup } from '../native/cgroup.js';
import { freezerState } from '../native/cgroup.js';
import type { NamespaceKind } from '../native/namespaces.js';
import type { ContainerNetwork } from './network.js';
import { readStat } from '../native/proc.js';

export const STATE_VERSION = 1;

export interface ContainerState {
  version: typeof STATE_VERSION;
  name: string;
  /** The init's pid in the host's pid namespace. */
  pid: number;
  /** The init's pid inside the container: always 1, it is the namespace's init. */
  pidInside: number;
  /** The init's start time (clock ticks after boot, /proc/PID/stat field 22): a recycled pid has another. */
  startTime: number;
  namespaces: Record<NamespaceKind, number>;
  cgroup: Cgroup;
  /** ISO 8601. */
  created: string;
  command: string[];
  /** The program execve ran, after the PATH search. */
  executable: string;
  hostname: string;
  cwd: string;
  env: Record<string, string>;
  rootfs: string | null;
  limits: { memoryBytes: number | null; cpus: number | null };
  /** As last written; see containerStatus for the truth. */
  status: 'running' | 'exited';
  /** ISO 8601, when `migrate stop` ended it; null while running or when it ended on its own. */
  stopped: string | null;
  /**
   * Its interface on this host's bridge, when it has addresses (`run
   * --ip`, or restored from an image that had them). Absent for a
   * container with its loopback only, and in records written before
   * containers had addresses, which is why it is optional and the state
   * version stayed 1.
   */
  network?: ContainerNetwork;
}

export type ContainerStatus = 'running' | 'frozen' | 'exited';

/** FERRY_STATE_DIR, or /var/lib/ferry. */
export function stateDir(): string {
  return path.resolve(process.env['FERRY_STATE_DIR'] || '/var/lib/ferry');
}

/** FERRY_CGROUP_PARENT, or "ferry": the group every container's cgroup is made in, on each hierarchy. */
export function cgroupParent(): string {
  return process.env['FERRY_CGROUP_PARENT'] || 'ferry';
}

export function containersDir(): string {
  return path.join(stateDir(), 'containers');
}

export function containerDir(name: string): string {
  return path.join(containersDir(), name);
}

export function logPath(name: string): string {
  return path.join(containerDir(name), 'log');
}

/** The empty directory the container's root is mounted on (in its own mount namespace only) before pivot_root. */
export function rootMountPoint(name: string): string {
  return path.join(containerDir(name), 'root');
}

function statePath(name: string): string {
  return path.join(containerDir(name), 'state.json');
}

export function readState(name: string): ContainerState | null {
  let text: string;
  try {
    text = fs.readFileSync(statePath(name), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const state = JSON.parse(text) as ContainerState;
  if (state.version !== STATE_VERSION) throw new Error(`${statePath(name)}: state version ${state.version}, this Ferry reads ${STATE_VERSION}`);
  return state;
}

/** Replaces state.json in one step (write, fsync, rename), so a reader never sees half a file. */
export function writeState(state: ContainerState): void {
  const file = statePath(state.name);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o644);
  try {
    fs.writeFileSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Every container with a state file, by name. */
export function listStates(): ContainerState[] {
  let names: string[];
  try {
    names = fs.readdirSync(containersDir()).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.map(readState).filter((s): s is ContainerState => s !== null);
}

/**
 * Whether the container's init is still the process that was started: the
 * pid exists, is not a zombie, and has the recorded start time.
 */
export function initAlive(state: ContainerState): boolean {
  let stat: { fields: string[] };
  try {
    stat = readStat(state.pid);
  } catch {
    return false;
  }
  const s = stat.fields[3];
  return s !== 'Z' && s !== 'X' && Number(stat.fields[22]) === state.startTime;
}

/** A group still freezing counts as frozen: it has been told to stop, and its tasks are stopping. */
export function containerStatus(state: ContainerState): ContainerStatus {
  if (state.status === 'exited' || !initAlive(state)) return 'exited';
  return freezerState(state.cgroup) === 'thawed' ? 'running' : 'frozen';
}
