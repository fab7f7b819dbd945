import fs from 'node:fs';
import { asNative } from './memory.js';

/** Reads a /proc file; a vanished process surfaces as ESRCH-like NativeError (ENOENT from procfs). */
export function readProcFile(path: string): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw asNative(e, `read(${path})`);
  }
}

export interface MapsEntry {
  start: number;
  end: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  shared: boolean;
  offset: number;
  dev: string;
  inode: number;
  /** The path, a bracketed pseudo-name ([heap], [stack], [vdso], ...), or '' for anonymous memory. */
  path: string;
  /** The kernel appends " (deleted)" to the path of an unlinked file. */
  deleted: boolean;
}

/** /proc/PID/maps, one entry per VMA. */
export function readMaps(pid: number | 'self'): MapsEntry[] {
  const text = readProcFile(`/proc/${pid}/maps`);
  const out: MapsEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$/.exec(line);
    if (!m) throw new Error(`unparsable line in /proc/${pid}/maps: ${line}`);
    let path = m[10]!;
    const deleted = path.endsWith(' (deleted)');
    if (deleted) path = path.slice(0, -' (deleted)'.length);
    out.push({
      start: parseInt(m[1]!, 16),
      end: parseInt(m[2]!, 16),
      read: m[3] === 'r',
      write: m[4] === 'w',
      exec: m[5] === 'x',
      shared: m[6] === 's',
      offset: parseInt(m[7]!, 16),
      dev: m[8]!,
      inode: Number(m[9]),
      path,
      deleted,
    });
  }
  return out;
}

/** /proc/PID/status as key → raw value. */
export function readStatus(pid: number | 'self', tid?: number): Record<string, string> {
  const path = tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`;
  const out: Record<string, string> = {};
  for (const line of readProcFile(path).split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Thread ids of a process, ascending. */
export function listThreads(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => a - b);
  } catch (e) {
    throw asNative(e, `readdir(/proc/${pid}/task)`);
  }
}

/** Fields of /proc/PID/stat after the command name, indexed from 3 as in proc(5) (3 = state). */
export function readStat(pid: number, tid?: number): { comm: string; fields: string[] } {
  const path = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`;
  const text = readProcFile(path);
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const comm = text.slice(open + 1, close);
  const rest = text.slice(close + 2).trim().split(' ');
  return { comm, fields: ['', '', '', ...rest] };
}

export function processExists(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`);
}

/** The VmFlags line of every VMA in /proc/PID/smaps, by start address (two-letter codes: gd, dd, dc, wf, hg, nh, ...). */
export function readVmFlags(pid: number): Map<number, string[]> {
  const out = new Map<number, string[]>();
  let current = -1;
  for (const line of readProcFile(`/proc/${pid}/smaps`).split('\n')) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (head) current = parseInt(head[1]!, 16);
    else if (line.startsWith('VmFlags:')) out.set(current, line.slice(8).trim().split(/\s+/));
  }
  return out;
}

/** Open file descriptors of a process, ascending. */
export function listFds(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
  } catch (e) {
    throw asNative(e, `readdir(/proc/${pid}/fd)`);
  }
}

export function readLink(path: string): string {
  try {
    return fs.readlinkSync(path);
  } catch (e) {
    throw asNative(e, `readlink(${path})`);
  }
}

/** The children of every thread of a process (/proc/PID/task/TID/children), ascending. */
export function readChildren(pid: number): number[] {
  const out = new Set<number>();
  for (const tid of listThreads(pid)) {
    let text = '';
    try {
      text = readProcFile(`/proc/${pid}/task/${tid}/children`);
    } catch {
      continue; // the thread exited meanwhile
    }
    for (const c of text.split(/\s+/)) if (c) out.add(Number(c));
  }
  return [...out].sort((a, b) => a - b);
}

export function isZombie(pid: number): boolean {
  return readStat(pid).fields[3] === 'Z';
}

/**
 * A task's pid in each pid namespace it belongs to, from ours inwards
 * (/proc/PID/status NSpid): [host pid] for a task in our namespace,
 * [host pid, pid inside] for one in a container.
 */
export function nsPids(pid: number, tid?: number): number[] {
  const line = readStatus(pid, tid).NSpid;
  if (!line) return [tid ?? pid];
  return line.split(/\s+/).map(Number);
}
