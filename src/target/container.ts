import { Sys } from '../native/syscalls.js';
import { CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLONE_NEW, bringUpLoopbackIn, clockGettime, setHostnameIn, setTimeOffsetsForChildren, subTime, writeTreeNodeIn } from '../native/namespaces.js';
import type { Husk } from '../native/husk.js';
import { MS, mountIn, pivotRootIn } from '../native/mount.js';
import type { Injector } from '../native/inject.js';
import type { Cgroup } from '../native/cgroup.js';
import { ContainerEntry, TmpfsFileEntry } from '../image/container.js';
import { unpackPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { ImageReader } from '../image/format.js';
import { buildRoot, CONTAINER_NAMESPACES } from '../container/init.js';
import { applyLimits, freshCgroup } from '../container/runtime.js';
import { containerStatus, logPath, readState, rootMountPoint } from '../container/state.js';
import { addressConflicts, needsIp, recreateNetwork, restoreProblem } from '../container/network.js';
import fs from 'node:fs';
import path from 'node:path';

/** The container an image holds, if it is one. */
export function containerOf(image: ImageReader): ContainerEntry | null {
  return image.entriesOf(ContainerEntry)[0] ?? null;
}

/** The path a restored fd opens on this host: the container's log moves to this host's log for it; everything else stays. */
export function pathHere(image: ImageReader, p: string): string {
  const box = containerOf(image);
  if (!box?.log || box.log !== p) return p;
  const here = logPath(box.name);
  fs.mkdirSync(path.dirname(here), { recursive: true });
  fs.closeSync(fs.openSync(here, 'a'));
  return here;
}

/** Whether `p` is the container's log on the checkpointed host, which the restore makes here rather than finds. */
export function isContainerLog(image: ImageReader, p: string): boolean {
  return containerOf(image)?.log === p;
}

/**
 * The clone flags of a container's init: the namespaces `migrate run` gives
 * it, but the time namespace, which the first husk makes beforehand (see
 * prepareClocks).
 */
export const CONTAINER_CLONE_FLAGS = CONTAINER_NAMESPACES & ~CLONE_NEW.TIME;

/**
 * Makes the time namespace the container's init is born into, with offsets
 * that continue CLOCK_MONOTONIC and CLOCK_BOOTTIME from where the container
 * read them at the checkpoint: however long it was away and whatever this
 * host's uptime, its clocks neither jump back nor forward. The kernel takes
 * offsets only before a task enters the namespace, hence unshare in the
 * first husk (its children enter it) and the offsets written right away.
 */
export function prepareClocks(first: Husk, c: ContainerEntry): void {
  first.injector.call('unshare(CLONE_NEWTIME)', Sys.unshare, CLONE_NEW.TIME);
  setTimeOffsetsForChildren(first.pid, {
    monotonic: subTime(c.clocks.monotonic, clockGettime(CLOCK_MONOTONIC)),
    boottime: subTime(c.clocks.boottime, clockGettime(CLOCK_BOOTTIME)),
  });
}

export function preflight(c: ContainerEntry, problems: string[]): void {
  const running = readState(c.name);
  if (running && containerStatus(running) !== 'exited') problems.push(`container "${c.name}" is running (pid ${running.pid}); stop it first`);
  const bridge = restoreProblem(c.network);
  if (bridge) problems.push(`container "${c.name}" has addresses: ${bridge}`);
  // The bridge was reported just above; what is left are addresses taken here.
  const addresses = c.network.interfaces.filter((i) => i.kind === 'veth').flatMap((i) => i.addresses.map((a) => `${a.local}/${a.prefixlen}`));
  if (!bridge) problems.push(...addressConflicts({ container: c.name, addresses }));
}

/** A fresh cgroup for the container, with its limits; the first husk joins it, so everything restored is born in it. */
export function prepareCgroup(c: ContainerEntry): Cgroup {
  const cgroup = freshCgroup(c.name);
  applyLimits(cgroup, c.limits);
  return cgroup;
}

/**
 * What only the init can do for its new namespaces before anything else:
 * hostname, private mounts, and its network as the image has it, made
 * before any process runs: the loopback, and a veth pair with the image's
 * MAC, MTU, addresses and routes whose host end waits, down, in this
 * host's bridge until the copy becomes the container of record
 * (runtime.recordRestored brings it up and announces the addresses).
 */
export function setupNamespaces(init: Injector, c: ContainerEntry): void {
  setHostnameIn(init, c.hostname);
  if (needsIp(c.network)) recreateNetwork(init.pid, c.name, c.network);
  // The common case, a container with its loopback alone, needs no `ip` (a process start, while the migration's clock runs).
  else if (c.network.interfaces.find((i) => i.kind === 'loopback')?.up) bringUpLoopbackIn(init);
  mountIn(init, { target: '/', flags: MS.REC | MS.PRIVATE });
}

/**
 * For the coordinator, once a migrated container is resumed here: its
 * link comes up and its addresses are announced (see
 * container/network.ts). recordRestored already starts this; calling it
 * again is harmless and reports a failure.
 */
export { announceAddresses } from '../container/network.js';

/**
 * The container's filesystem, built and entered after every process's
 * files are restored: until then paths resolve as on the host, where the
 * image took them (the container's log, for one, is read-only inside). Then
 * its /tmp gets back what it held.
 */
export async function enterRoot(init: Injector, initPid: number, c: ContainerEntry, image: ImageReader): Promise<void> {
  const mountPoint = rootMountPoint(c.name);
  fs.mkdirSync(mountPoint, { recursive: true });
  buildRoot(init, { mountPoint, rootfs: null });
  pivotRootIn(init, mountPoint);
  init.call('chdir(/)', Sys.chdir, init.put(Buffer.from('/\0')));
  init.reset();
  for (const f of image.entriesOf(TmpfsFileEntry)) {
    let contents: Buffer | undefined;
    if (f.kind === 'file') {
      contents = Buffer.alloc(Math.ceil(f.size / PAGE_SIZE) * PAGE_SIZE);
      for (const seg of f.segments) await image.readPageRuns(unpackPageRuns(seg.runs), contents.subarray(seg.page * PAGE_SIZE));
      contents = contents.subarray(0, f.size);
    }
    writeTreeNodeIn(initPid, '/tmp', { path: f.path, type: f.kind, mode: f.mode, uid: f.uid, gid: f.gid, size: f.size, ...(f.target ? { target: f.target } : {}) }, contents);
  }
}
