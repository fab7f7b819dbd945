import { listThreads, nsPids } from '../native/proc.js';
import { CLOCK_BOOTTIME, CLOCK_MONOTONIC, addTime, clockGettime, listTreeIn, mqueueNames, netInterfaces, readFileIn, sysvIpcObjects, timeOffsets, type Timespec } from '../native/namespaces.js';
import { ContainerEntry, TmpfsFileEntry } from '../image/container.js';
import { countPageRuns, packPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { ImageWriter } from '../image/format.js';
import { logPath, type ContainerState } from '../container/state.js';
import type { Refusal } from './refusal.js';
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
  const extra = netInterfaces(pid).filter((i) => i !== 'lo');
  if (extra.length) refuse('network', `its network namespace has interfaces besides lo (${extra.join(', ')}); container networking migrates with the network work`);
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
