/**
 * A whole subtree of control groups, on every hierarchy mounted here: what
 * is left to remove when the processes that made groups below it (each
 * with its own choice of hierarchies) are gone and nothing remembers them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { asNative } from './memory.js';
import { listMounts } from './mount.js';

/** The directory of group `relPath` on each cgroup hierarchy (v2 and every v1) where it exists. */
export function cgroupTreeDirs(relPath: string): string[] {
  const roots = new Set(listMounts('self').filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2').map((m) => m.mountPoint));
  return [...roots].map((root) => path.join(root, relPath)).filter((dir) => fs.existsSync(dir));
}

/**
 * Removes group `relPath` and every group below it on every hierarchy,
 * deepest first. A group whose last task has just been killed stays busy
 * until that task has fully exited: EBUSY is waited out for up to
 * `timeoutMs`, then reported with the pids still inside.
 */
export function removeCgroupTree(relPath: string, timeoutMs = 5_000): void {
  const deadline = performance.now() + timeoutMs;
  for (const top of cgroupTreeDirs(relPath)) {
    for (const dir of depthFirst(top)) {
      let pauseUs = 50;
      while (!tryRmdir(dir)) {
        if (performance.now() >= deadline) {
          throw new NativeError(`rmdir(${dir})`, Errno.EBUSY, `still holds pids ${readPids(dir).join(', ') || '(none listed)'} after ${timeoutMs} ms`);
        }
        Atomics.wait(sleepCell, 0, 0, pauseUs / 1000);
        pauseUs = Math.min(pauseUs * 2, 5_000);
      }
    }
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** `dir` and the groups below it, children before their parents. */
function depthFirst(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw asNative(e, `readdir(${dir})`);
  }
  return [...entries.filter((e) => e.isDirectory()).flatMap((e) => depthFirst(path.join(dir, e.name))), dir];
}

/** true once `dir` is gone, false while the group still has tasks. */
function tryRmdir(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return true;
    if (code === 'EBUSY') return false;
    throw asNative(e, `rmdir(${dir})`);
  }
}

function readPids(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
