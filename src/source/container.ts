import { listThreads, nsPids } from '../native/proc.js';
import { CLOCK_BOOTTIME, CLOCK_MONOTONIC, addTime, clockGettime, listTreeIn, mqueueNames, readFileIn, sysvIpcObjects, timeOffsets, type Timespec } from '../native/namespaces.js';
import { ContainerEntry, TmpfsFileEntry } from '../image/container.js';
import { countPageRuns, packPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { ImageWriter } from '../image/format.js';
import { logPath, type ContainerState } from '../container/state.js';
import { snapshotNetwork, type NetworkSnapshot } from '../container/network.js';
import { networkState } from '../native/netdev.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpStats } from './context.js';

/**
 * What a container holds outside its processes and what this version
 * cannot carry yet; refused before anything is stopped.
 */
export function inspect(state: ContainerState, refusals: Refusal[]): void {
  const pid = state.pid;
  const refuse = (resource: string, reason: string) => refusals.push({ pid, resource: `container ${state.name}: ${resource}`, reason });
  if (state.rootfs !== null) refuse('rootfs', `it runs on its own root filesystem (${state.rootfs}); only containers on the host's root migrate yet`);
  const ipc = sysvIpcObjects(pid);
  for (const [kind, n] of Object.entries(ipc)) if (n) refuse(`System V ${kind}`, `its IPC namespace holds ${n} System V ${kind} object${n > 1 ? 's' : ''}, which do not migrate yet`);
  const queues = mqueueNames(pid);
  if (queues.length) refuse('POSIX message queues', `its IPC namespace holds message queues (${queues.join(', ')}), which do not migrate yet`);
  const network = describeNetworkOf(state);
  for (const reason of network.refusals) refuse('network', reason);
}

/**
 * The network description inspect made, by init pid, with the kernel's
 * state it was made from: dump takes it over if that state still holds
 * once the container is frozen, instead of starting `ip` while the
 * migration's clock runs.
 */
const described = new Map<number, { state: string; snapshot: NetworkSnapshot }>();

function describeNetworkOf(container: ContainerState): NetworkSnapshot {
  const pid = container.pid;
  const before = networkState(pid);
  const snapshot = snapshotNetwork(pid, container.network);
  // Something inside changed it while `ip` read it: dump reads it again, frozen.
  if (networkState(pid) === before) described.set(pid, { state: before, snapshot });
  else described.delete(pid);
  return snapshot;
}

/** The network as it is now, frozen: inspect's description if nothing changed since, else a new one. */
function frozenNetwork(container: ContainerState): NetworkSnapshot {
  const earlier = described.get(container.pid);
  described.delete(container.pid);
  return earlier && earlier.state === networkState(container.pid) ? earlier.snapshot : snapshotNetwork(container.pid, container.network);
}

/** The container's entry: its settings and every process's and thread's pid inside. */
export function dump(image: ImageWriter, state: ContainerState, pids: number[]): void {
  const pairs: Array<[number, number]> = [];
  for (const pid of pids) {
    let tids: number[];
    try {
      tids = listThreads(pid);
    } catch {
      tids = [pid]; // a zombie has no task list to speak of
    }
    for (const tid of tids) {
      const chain = nsPids(pid, tid === pid ? undefined : tid);
      pairs.push([chain[0]!, chain[chain.length - 1]!]);
    }
  }
  // Frozen, nothing inside can change it now; whatever appeared since inspect is refused all the same.
  const network = frozenNetwork(state);
  if (network.refusals.length) throw new CheckpointRefused(network.refusals.map((reason) => ({ pid: state.pid, resource: `container ${state.name}: network`, reason: `${reason} (it appeared during the checkpoint)` })));
  image.addEntry(
    ContainerEntry.make({
      name: state.name,
      hostname: state.hostname,
      command: state.command,
      executable: state.executable,
      cwd: state.cwd,
      env: state.env,
      limits: state.limits,
      clocks: clocksInside(state.pid),
      pids: pairs,
      log: logPath(state.name),
      network: network.image,
    }),
  );
}

/** The container's clocks now: the host's plus its time namespace's offsets. */
function clocksInside(pid: number): { monotonic: Timespec; boottime: Timespec } {
  const offsets = timeOffsets(pid);
  return { monotonic: addTime(clockGettime(CLOCK_MONOTONIC), offsets.monotonic), boottime: addTime(clockGettime(CLOCK_BOOTTIME), offsets.boottime) };
}

/** The container's private /tmp, file by file, parents first. Contents go to pages.bin; zero pages are counted. */
export async function dumpTmp(image: ImageWriter, pid: number, stats: DumpStats): Promise<void> {
  for (const node of listTreeIn(pid, '/tmp')) {
    const base = { path: node.path, mode: node.mode, uid: node.uid, gid: node.gid };
    if (node.type === 'dir') {
      image.addEntry(TmpfsFileEntry.make({ ...base, kind: 'dir', size: 0, segments: [] }));
    } else if (node.type === 'symlink') {
      image.addEntry(TmpfsFileEntry.make({ ...base, kind: 'symlink', size: 0, target: node.target!, segments: [] }));
    } else if (node.type === 'file') {
      const data = readFileIn(pid, `/tmp/${node.path}`);
      const padded = Buffer.alloc(Math.ceil(data.length / PAGE_SIZE) * PAGE_SIZE);
      data.copy(padded);
      const segments = [];
      if (padded.length) {
        const runs = await image.writePageRuns(padded);
        const c = countPageRuns(runs);
        stats.pages += c.pages;
        stats.dataPages += c.dataPages;
        stats.zeroPages += c.zeroPages;
        segments.push({ page: 0, runs: packPageRuns(runs) });
      }
      image.addEntry(TmpfsFileEntry.make({ ...base, kind: 'file', size: data.length, segments }));
    } else {
      throw new Error(`container /tmp/${node.path} is neither a file, a directory nor a symlink; it cannot migrate`);
    }
  }
}
