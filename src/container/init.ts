/**
 * Makes a container's init out of a husk, on the tracer thread (ptrace's
 * one-thread rule): the husk clones a child into new namespaces, the
 * child's setup is injected into it (it is the only task in its mount, uts
 * and net namespaces, so only it can set them up), and an injected execve
 * finally turns it into the container's program.
 *
 * Parenting: the husk that cloned the init is killed right after the
 * clone, so the init is reparented to this process (Husk.spawn made it a
 * child subreaper) and, once the CLI exits, to the nearest subreaper above
 * it or the host's init, which reaps it when it ends. No Ferry process has
 * to stay behind, and no dead container stays a zombie for want of a
 * parent. (An agent that runs containers will itself be that subreaper.)
 */
import { Husk, killAndReap } from '../native/husk.js';
import { addProcess, type Cgroup } from '../native/cgroup.js';
import { CLONE_NEW, bringUpLoopbackIn, namespaceIds, setHostnameIn, type NamespaceKind } from '../native/namespaces.js';
import { readStat } from '../native/proc.js';
import { MS, detachIn, makeReadOnlyIn, mkdirIn, mknodCharIn, mountIn, pivotRootIn, symlinkIn } from '../native/mount.js';
import { chdirIn, execIn, newSessionIn, redirectOutputIn, setUmaskIn } from '../native/exec.js';
import { detach } from '../native/attach.js';
import type { Injector } from '../native/inject.js';
import type { Op } from '../native/tracer-protocol.js';
import { plugNewContainer, type ContainerNetwork, type PlugRequest } from './network.js';

/**
 * Every namespace a container gets. The time namespace is created with
 * zero offsets, so the container's clocks read as the host's; a restore
 * elsewhere sets offsets so CLOCK_MONOTONIC and CLOCK_BOOTTIME go on from
 * where they were.
 */
export const CONTAINER_NAMESPACES =
  CLONE_NEW.PID | CLONE_NEW.NS | CLONE_NEW.UTS | CLONE_NEW.IPC | CLONE_NEW.NET | CLONE_NEW.CGROUP | CLONE_NEW.TIME;

export interface InitRequest {
  /** The empty host directory the root is mounted on before pivot_root. */
  mountPoint: string;
  rootfs: string | null;
  hostname: string;
  cwd: string;
  /** NAME=value strings, the whole environment. */
  env: string[];
  command: string[];
  logPath: string;
  cgroup: Cgroup;
  /** Its veth into this host's bridge, when it has addresses. */
  network?: PlugRequest;
}

export interface InitResult {
  /** The init's pid in our (the host's) pid namespace. */
  pid: number;
  executable: string;
  /** /proc/PID/stat's start time, to tell the init from a later process with its pid. */
  startTime: number;
  namespaces: Record<NamespaceKind, number>;
  network?: ContainerNetwork;
}

function startInit(req: InitRequest): InitResult {
  const husk = Husk.spawn();
  let init: Husk;
  try {
    // The child is born in the group, so its cgroup namespace is rooted there and nothing it forks ever runs outside.
    addProcess(req.cgroup, husk.pid);
    init = husk.clone({ flags: CONTAINER_NAMESPACES, setTid: [] });
  } finally {
    husk.release();
  }
  try {
    const inj = init.injector;
    // Opened before the root changes: the log lives on the host.
    redirectOutputIn(inj, req.logPath, 0o640);
    newSessionIn(inj);
    setHostnameIn(inj, req.hostname);
    bringUpLoopbackIn(inj);
    // Before the program runs, so it finds its addresses there from its first instruction.
    const network = req.network ? plugNewContainer(init.pid, req.network) : undefined;
    // Device nodes and mount points get exactly the modes asked for; the program gets the usual 022.
    setUmaskIn(inj, 0);
    buildRoot(inj, req);
    pivotRootIn(inj, req.mountPoint);
    setUmaskIn(inj, 0o022);
    chdirIn(inj, req.cwd);
    const executable = execIn(inj, execCandidates(req), req.command, req.env);
    // Read while it is still stopped: a short command may be a zombie with no namespaces by the time anyone else looks.
    const result: InitResult = { pid: init.pid, executable, startTime: Number(readStat(init.pid).fields[22]), namespaces: namespaceIds(init.pid), ...(network ? { network } : {}) };
    detach(init.pid);
    return result;
  } catch (e) {
    killAndReap([init.pid]);
    throw e;
  }
}

/** Where the host's own pseudo-filesystems would show through; the container gets fresh ones there. */
const PRIVATE_MOUNTS = ['proc', 'sys', 'dev', 'tmp'];

/**
 * The container's filesystem, assembled on the mount point in its own
 * mount namespace: the host's root (every mount of it, read-only) or the
 * given rootfs (writable), then its own /proc, /sys, /dev and /tmp.
 */
export function buildRoot(inj: Injector, req: Pick<InitRequest, 'mountPoint' | 'rootfs'>): void {
  const root = req.mountPoint;
  const at = (p: string): string => `${root}/${p}`;
  // Mount events must not travel back to the host through shared peer groups.
  mountIn(inj, { target: '/', flags: MS.REC | MS.PRIVATE });
  mountIn(inj, { source: req.rootfs ?? '/', target: root, flags: MS.BIND | MS.REC });
  for (const dir of PRIVATE_MOUNTS) while (detachIn(inj, at(dir)));
  if (req.rootfs === null) makeReadOnlyIn(inj, root);

  mountIn(inj, { source: 'proc', target: at('proc'), fsType: 'proc', flags: MS.NOSUID | MS.NODEV | MS.NOEXEC });
  // Most of /proc/sys is not namespaced: writing it would change the host.
  mountIn(inj, { source: at('proc/sys'), target: at('proc/sys'), flags: MS.BIND });
  mountIn(inj, { target: at('proc/sys'), flags: MS.REMOUNT | MS.BIND | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC });
  // A fresh sysfs shows the container's own network namespace under /sys/class/net.
  mountIn(inj, { source: 'sysfs', target: at('sys'), fsType: 'sysfs', flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC });
  buildDev(inj, at('dev'));
  mountIn(inj, { source: 'tmpfs', target: at('tmp'), fsType: 'tmpfs', flags: MS.NOSUID | MS.NODEV, data: 'mode=1777' });
}

/** The character devices every program may expect, as docker and runc provide them: [name, major, minor]. */
const DEVICES: Array<[string, number, number]> = [
  ['null', 1, 3], ['zero', 1, 5], ['full', 1, 7], ['random', 1, 8], ['urandom', 1, 9], ['tty', 5, 0],
];

/** A minimal /dev: the safe devices only (no disks, no host terminals), its own ptys, shm and mqueue. */
function buildDev(inj: Injector, dev: string): void {
  mountIn(inj, { source: 'tmpfs', target: dev, fsType: 'tmpfs', flags: MS.NOSUID | MS.STRICTATIME, data: 'mode=755,size=65536k' });
  for (const [name, major, minor] of DEVICES) mknodCharIn(inj, `${dev}/${name}`, 0o666, major, minor);
  for (const [fd, name] of ['stdin', 'stdout', 'stderr'].entries()) symlinkIn(inj, `/proc/self/fd/${fd}`, `${dev}/${name}`);
  symlinkIn(inj, '/proc/self/fd', `${dev}/fd`);
  symlinkIn(inj, 'pts/ptmx', `${dev}/ptmx`);
  for (const dir of ['pts', 'shm', 'mqueue']) mkdirIn(inj, `${dev}/${dir}`, 0o755);
  mountIn(inj, { source: 'devpts', target: `${dev}/pts`, fsType: 'devpts', flags: MS.NOSUID | MS.NOEXEC, data: 'newinstance,ptmxmode=0666,mode=0620' });
  mountIn(inj, { source: 'shm', target: `${dev}/shm`, fsType: 'tmpfs', flags: MS.NOSUID | MS.NODEV, data: 'mode=1777' });
  // Shows the container's IPC namespace's POSIX message queues, not the host's.
  mountIn(inj, { source: 'mqueue', target: `${dev}/mqueue`, fsType: 'mqueue', flags: MS.NOSUID | MS.NODEV | MS.NOEXEC });
}

/** The paths execve tries, in order: the command itself if it names a path, else each directory of the container's PATH. */
function execCandidates(req: InitRequest): string[] {
  const program = req.command[0]!;
  if (program.includes('/')) return [program];
  const pathVar = req.env.find((e) => e.startsWith('PATH='))?.slice(5) ?? '';
  return pathVar
    .split(':')
    .filter((dir) => dir.startsWith('/'))
    .map((dir) => `${dir.replace(/\/+$/, '')}/${program}`);
}

export const tracerOps: Record<string, Op> = {
  'container.init': (_ctx, req: InitRequest) => startInit(req),
};
