/**
 * The container runtime: the home of the containers `migrate run` starts.
 * A container is a process tree whose init is pid 1 of its own pid, mount,
 * uts, ipc, net, cgroup and time namespaces, confined to a cgroup, with
 * its stdout and stderr in a log file. This module starts, lists and stops
 * them; init.ts builds the init itself, state.ts remembers them.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  cgroupAt,
  cgroupExists,
  createCgroup,
  killAll,
  listPids,
  memoryUsage,
  removeCgroup,
  setCpuLimit,
  setMemoryLimit,
  thaw,
  type Cgroup,
  type Controller,
} from '../native/cgroup.js';
import { killAndReap } from '../native/husk.js';
import { waitUntil } from '../common/poll.js';
import { lockTables, unlockTable } from '../native/nft.js';
import { leaveTcpRepair } from '../source/tcp.js';
import { tryLockFile } from '../native/lock.js';
import { readStat, readStatus } from '../native/proc.js';
import { namespaceIds } from '../native/namespaces.js';
import { close, pidfdOpen, pidfdSendSignal } from '../native/process.js';
import type { Tracer } from '../native/tracer.js';
import { ContainerError } from './errors.js';
import type { InitRequest, InitResult } from './init.js';
import type { ContainerSpec } from './spec.js';
import { bringUp, containerMac, describeNetwork, releaseAddresses, requireFreeAddresses, runNetworkHook, withNetworkLock, type PlugRequest } from './network.js';
import { setInterfaceUp } from '../native/netdev.js';
import {
  STATE_VERSION,
  cgroupParent,
  containerDir,
  containerStatus,
  initAlive,
  listStates,
  logPath,
  readState,
  rootMountPoint,
  writeState,
  type ContainerState,
  type ContainerStatus,
} from './state.js';

/** The tracer module with the operation that builds a container's init. */
export const CONTAINER_TRACER_MODULE = new URL('./init.js', import.meta.url);

/** Memory for the limit and for `ps`; cpu for the limit. Freezing needs no controller on cgroup2 (the v1 freezer is added where there is no cgroup2). */
export const CONTAINER_CONTROLLERS: Controller[] = ['memory', 'cpu'];

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Directories the container's own filesystems are mounted on; a rootfs without them gets them created. */
const ROOTFS_MOUNT_POINTS = ['proc', 'sys', 'dev', 'tmp'];

/**
 * Starts a container and returns its recorded state. `tracer` must have
 * CONTAINER_TRACER_MODULE loaded. The container outlives this process.
 */
export async function runContainer(spec: ContainerSpec, tracer: Tracer): Promise<ContainerState> {
  const dir = containerDir(spec.name);
  const newDir = !fs.existsSync(dir);
  fs.mkdirSync(rootMountPoint(spec.name), { recursive: true });
  const unlock = lockName(spec.name);
  let started = false;
  try {
    const previous = readState(spec.name);
    if (previous && containerStatus(previous) !== 'exited') {
      throw new ContainerError('NAME_TAKEN', `container "${spec.name}" is already running (pid ${previous.pid}); stop it first or choose another name`);
    }
    const cgroup = freshCgroup(spec.name);
    let state: ContainerState;
    try {
      const net = spec.network;
      // Checked and taken under one lock: two runs at once must not both find an address free.
      state = net
        ? await withNetworkLock(() => {
            const plug: PlugRequest = { name: spec.name, bridge: requireFreeAddresses(spec.name, net.addresses), mac: containerMac(spec.name, net.addresses), ...net };
            return start(spec, cgroup, tracer, plug);
          })
        : await start(spec, cgroup, tracer);
      started = true;
    } finally {
      if (!started) removeCgroup(cgroup);
    }
    if (state.network) {
      try {
        runNetworkHook('up', spec.name, state.network);
      } catch (e) {
        // It runs, on record: the operator learns what is missing and can stop it, or put the route in by hand.
        if (e instanceof Error) e.message = `container "${spec.name}" started (pid ${state.pid}), but this host's network hook failed: ${e.message}`;
        throw e;
      }
      // A neighbour may still remember another MAC for an address now the container's; best effort, as any ARP.
      await bringUp(state.pid, state.network).catch(() => {});
    }
    return state;
  } finally {
    unlock();
    // A name that never ran leaves nothing behind; one that ran before keeps its record.
    if (!started && newDir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Puts a container's limits on its cgroup. */
export function applyLimits(cgroup: Cgroup, limits: { memoryBytes: number | null; cpus: number | null }): void {
  if (limits.memoryBytes !== null) setMemoryLimit(cgroup, limits.memoryBytes);
  if (limits.cpus !== null) setCpuLimit(cgroup, limits.cpus);
}

async function start(spec: ContainerSpec, cgroup: Cgroup, tracer: Tracer, network?: PlugRequest): Promise<ContainerState> {
  applyLimits(cgroup, { memoryBytes: spec.memoryBytes, cpus: spec.cpus });
  if (spec.rootfs !== null) for (const d of ROOTFS_MOUNT_POINTS) fs.mkdirSync(path.join(spec.rootfs, d), { recursive: true });
  // Each run starts a new log.
  fs.writeFileSync(logPath(spec.name), '', { mode: 0o640 });
  const env = { PATH: DEFAULT_PATH, HOME: '/root', HOSTNAME: spec.hostname, ...spec.env };
  const req: InitRequest = {
    mountPoint: rootMountPoint(spec.name),
    rootfs: spec.rootfs,
    hostname: spec.hostname,
    cwd: spec.cwd,
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    command: spec.command,
    logPath: logPath(spec.name),
    cgroup,
    ...(network ? { network } : {}),
  };
  let init: InitResult;
  try {
    init = await tracer.call<InitResult>('container.init', req);
  } catch (e) {
    // The error keeps its errno, code and call; the message gains what it was for.
    if (e instanceof Error) e.message = `cannot start container "${spec.name}": ${e.message}`;
    throw e;
  }
  try {
    const state: ContainerState = {
      version: STATE_VERSION,
      name: spec.name,
      pid: init.pid,
      pidInside: 1,
      startTime: init.startTime,
      namespaces: init.namespaces,
      cgroup,
      created: new Date().toISOString(),
      command: spec.command,
      executable: init.executable,
      hostname: spec.hostname,
      cwd: spec.cwd,
      env: spec.env,
      rootfs: spec.rootfs,
      limits: { memoryBytes: spec.memoryBytes, cpus: spec.cpus },
      status: 'running',
      stopped: null,
      ...(init.network ? { network: init.network } : {}),
    };
    writeState(state);
    return state;
  } catch (e) {
    // Until its state is written nobody could find or stop it. It is our child (we are a subreaper), so we reap it.
    killAndReap([init.pid]);
    throw e;
  }
}

/**
 * The container's cgroup, new. A group left with no tasks by a container
 * that ended without `migrate stop` (or by a run that died) is removed
 * first; one with tasks is somebody's, and the name is refused.
 */
export function freshCgroup(name: string): Cgroup {
  const relPath = `${cgroupParent()}/${name}`;
  const stale = cgroupAt(relPath, CONTAINER_CONTROLLERS);
  if (cgroupExists(stale)) {
    const pids = listPids(stale);
    if (pids.length) {
      throw new ContainerError('NAME_TAKEN', `cgroup ${relPath} of container "${name}" still holds processes (${pids.join(', ')}) that Ferry has no record of; end them first`);
    }
    removeCgroup(stale);
  }
  return createCgroup(relPath, CONTAINER_CONTROLLERS);
}

/** Held by `run` and `stop` for their whole length, so two of them never work on one name at once. */
function lockName(name: string): () => void {
  const unlock = tryLockFile(path.join(containerDir(name), 'lock'));
  if (!unlock) throw new ContainerError('BUSY', `another migrate is starting or stopping container "${name}"; try again when it is done`);
  return unlock;
}

function requireState(name: string): ContainerState {
  const state = readState(name);
  if (!state) throw new ContainerError('UNKNOWN_CONTAINER', `no container named "${name}"`);
  return state;
}

export interface StopReport {
  name: string;
  pid: number;
  /** Whether it was still running when asked to stop. */
  wasRunning: boolean;
  /** The signal that ended it; null when it had already exited. */
  signal: 'SIGTERM' | 'SIGKILL' | null;
}

const SIGTERM = 15;
const SIGKILL = 9;
/** After SIGKILL the kernel tears the namespace down by itself; this long means something is stuck in the kernel. */
const KILL_WAIT_MS = 10_000;

/**
 * Ends the container: SIGTERM to its init, SIGKILL once `timeoutMs` has
 * passed, and with the init every process of its pid namespace (the
 * kernel kills them when the namespace's init dies). Then its cgroup is
 * removed; its log and record stay.
 */
export async function stopContainer(name: string, timeoutMs: number): Promise<StopReport> {
  requireState(name);
  const unlock = lockName(name);
  try {
    // Read again under the lock: a `run` that held it may have replaced an exited container of this name.
    const state = requireState(name);
    const signal = containerStatus(state) !== 'exited' ? await endInit(state, timeoutMs) : null;
    letGoOfAddresses(state);
    removeCgroup(state.cgroup);
    writeState({ ...state, status: 'exited', stopped: signal ? new Date().toISOString() : state.stopped });
    return { name, pid: state.pid, wasRunning: signal !== null, signal };
  } finally {
    unlock();
  }
}

async function endInit(state: ContainerState, timeoutMs: number): Promise<StopReport['signal']> {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(state.pid);
  } catch {
    return null;
  }
  try {
    // Checked with the pidfd open: if this is still the init now, the pidfd can only ever signal the init.
    if (!initAlive(state)) return null;
    // A frozen task acts on SIGTERM only when thawed, and under the v1 freezer not even on SIGKILL.
    if (containerStatus(state) === 'frozen') thaw(state.cgroup);
    // The init of a pid namespace never gets a signal it has no handler for, not even from the host: don't wait for nothing.
    if (catchesSignal(state.pid, SIGTERM)) {
      pidfdSendSignal(pidfd, SIGTERM);
      if (await waitUntil(() => !initAlive(state), timeoutMs)) return 'SIGTERM';
    }
    pidfdSendSignal(pidfd, SIGKILL);
    if (!(await waitUntil(() => !initAlive(state), KILL_WAIT_MS))) {
      throw new ContainerError('STOP_FAILED', `container "${state.name}" (pid ${state.pid}) is still there ${KILL_WAIT_MS / 1000} s after SIGKILL`);
    }
    return 'SIGKILL';
  } finally {
    close(pidfd);
  }
}

function catchesSignal(pid: number, signal: number): boolean {
  try {
    return ((BigInt(`0x${readStatus(pid)['SigCgt']}`) >> BigInt(signal - 1)) & 1n) === 1n;
  } catch {
    return false;
  }
}

export interface ContainerSummary {
  name: string;
  pid: number;
  state: ContainerStatus;
  /** Bytes charged to its cgroup; null once it has exited. */
  memoryBytes: number | null;
  created: string;
  /** Seconds since it started; null once it has exited. */
  uptimeSeconds: number | null;
  hostname: string;
  command: string[];
}

/** Every container Ferry has a record of, with its state as the kernel sees it now. */
export function listContainers(): ContainerSummary[] {
  return listStates().map((s) => {
    const state = containerStatus(s);
    const live = state !== 'exited';
    return {
      name: s.name,
      pid: s.pid,
      state,
      memoryBytes: live ? memoryUsage(s.cgroup) : null,
      created: s.created,
      uptimeSeconds: live ? Math.max(0, Math.round((Date.now() - Date.parse(s.created)) / 1000)) : null,
      hostname: s.hostname,
      command: s.command,
    };
  });
}

/** The path of a container's log (its stdout and stderr). */
export function containerLogPath(name: string): string {
  requireState(name);
  return logPath(name);
}

/** A checkpoint that ended the container: its cgroup and its addresses go and its record says so; its log stays for the restored copy. */
export function recordCheckpointed(state: ContainerState): void {
  letGoOfAddresses(state);
  markCheckpointed(state);
}

/** The record's side of recordCheckpointed, for a caller that has let go of the addresses already. */
function markCheckpointed(state: ContainerState): void {
  removeCgroup(state.cgroup);
  writeState({ ...state, status: 'exited', stopped: new Date().toISOString() });
}

/**
 * Ends a container a migration held frozen, now that its copy on the
 * target has taken over: every process dies without running again (a
 * thaw first would let it act twice), then it is recorded as checkpointed.
 */
export function killHeld(state: ContainerState): void {
  // First, while it is still frozen: the copy taking over is about to announce the same MAC and addresses from its host.
  letGoOfAddresses(state);
  killAll(state.cgroup);
  markCheckpointed(state);
}

/**
 * Tells the network hook and deletes an ending container's veth now
 * rather than when the kernel gets round to its namespace (see
 * network.releaseAddresses). A failure must not stop what called it (a
 * migration's commit, a stop): the pair goes with the namespace anyway,
 * and a hook that failed says so in its own logs, if anywhere.
 */
function letGoOfAddresses(state: ContainerState): void {
  if (!state.network) return;
  try {
    releaseAddresses(state.name, state.network);
  } catch {
    // It goes with the namespace.
  }
}

/** A migration rolled back: the container held frozen for it runs on. */
export function releaseHeld(state: ContainerState): void {
  if (!cgroupExists(state.cgroup)) return;
  const pids = listPids(state.cgroup);
  // Its TCP sockets were left in repair mode for a silent end; it lives on, so they speak again, and its peers' packets pass again.
  leaveTcpRepair(pids);
  if (pids.length) unlockNetwork(state.pid);
  thaw(state.cgroup);
}

/** Removes every network lock Ferry holds in the network namespace of `pid` (nftables tables of src/native/nft.ts). */
export function unlockNetwork(pid: number): void {
  for (const table of lockTables({ pid })) unlockTable(table, { pid });
}

/** What a restore knows about the container it brought back. */
export interface RestoredContainer {
  name: string;
  cgroup: Cgroup;
  hostname: string;
  command: string[];
  executable: string;
  cwd: string;
  env: Record<string, string>;
  limits: { memoryBytes: number | null; cpus: number | null };
  /** [host pid, pid inside] of every process and thread, the host pids as this host gave them (not the image's). */
  pids: Array<[number, number]>;
}

/**
 * Records a restored container like a started one, so ps, stop and logs
 * know it, by `pid`: its init's host pid now (the restore's `pid`), which
 * need not be the one it had when it was checkpointed. Being on record is
 * what makes a copy the container here, so its addresses go live with it:
 * the host end of its veth, left down by the restore, comes up, and its
 * addresses are announced (network.bringUp). Both callers come here at the
 * moment the copy takes over: `migrate restore` right after the restore,
 * a migration's target at resume, after the source let go of its own.
 */
export function recordRestored(c: RestoredContainer, pid: number): ContainerState {
  fs.mkdirSync(containerDir(c.name), { recursive: true });
  const network = describeNetwork(pid, c.name);
  const state: ContainerState = {
    version: STATE_VERSION,
    name: c.name,
    pid,
    pidInside: 1,
    startTime: Number(readStat(pid).fields[22]),
    namespaces: namespaceIds(pid),
    cgroup: c.cgroup,
    created: new Date().toISOString(),
    command: c.command,
    executable: c.executable,
    hostname: c.hostname,
    cwd: c.cwd,
    env: c.env,
    rootfs: null,
    limits: c.limits,
    status: 'running',
    stopped: null,
    ...(network ? { network } : {}),
  };
  writeState(state);
  if (network) {
    // This copy is now the container: its link comes up here, where a failure is the caller's to see...
    setInterfaceUp(network.hostVeth);
    runNetworkHook('up', c.name, network);
    // ...and the announcement follows in the background, best effort like any ARP (announceAddresses awaits it again).
    void bringUp(pid, network).catch(() => {});
  }
  return state;
}
