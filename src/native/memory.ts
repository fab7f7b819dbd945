import fs from 'node:fs';
import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';

/** One remote range. Addresses are numbers: x86_64 user space ends below 2^47. */
export interface RemoteRange {
  addr: number;
  len: number;
}

const IOV_MAX = 1024;

function iovecs(entries: Array<{ base: bigint | number; len: number }>): Buffer {
  const buf = Buffer.alloc(entries.length * 16);
  entries.forEach((e, i) => {
    buf.writeBigUInt64LE(BigInt(e.base), i * 16);
    buf.writeBigUInt64LE(BigInt(e.len), i * 16 + 8);
  });
  return buf;
}

function transfer(write: boolean, pid: number, local: Buffer, ranges: RemoteRange[]): number {
  const name = write ? 'process_vm_writev' : 'process_vm_readv';
  const base = addressOf(local);
  let localOffset = 0;
  let done = 0;
  for (let i = 0; i < ranges.length; i += IOV_MAX) {
    const batch = ranges.slice(i, i + IOV_MAX);
    const size = batch.reduce((s, r) => s + r.len, 0);
    if (localOffset + size > local.length) throw new RangeError(`${name}: local buffer of ${local.length} bytes is smaller than the ${localOffset + size} bytes requested`);
    const liov = iovecs([{ base: base + BigInt(localOffset), len: size }]);
    const riov = iovecs(batch.map((r) => ({ base: r.addr, len: r.len })));
    const n = syscall(`${name}(${pid})`, write ? Sys.process_vm_writev : Sys.process_vm_readv, pid, addressOf(liov), 1, addressOf(riov), batch.length, 0);
    done += n;
    if (n !== size) return done;
    localOffset += size;
  }
  return done;
}

/** Reads remote ranges back to back into `into`; returns the bytes read (short when a range is unmapped or PROT_NONE). */
export function readRanges(pid: number, ranges: RemoteRange[], into: Buffer): number {
  return transfer(false, pid, into, ranges);
}

export function writeRanges(pid: number, ranges: RemoteRange[], from: Buffer): number {
  return transfer(true, pid, from, ranges);
}

/** Reads exactly `into.length` bytes at `addr`, or throws (EFAULT on a short read). */
export function readMemory(pid: number, addr: number, into: Buffer): void {
  const n = transfer(false, pid, into, [{ addr, len: into.length }]);
  if (n !== into.length) throw new NativeError(`process_vm_readv(${pid})`, Errno.EFAULT, `short read at 0x${addr.toString(16)}: ${n} of ${into.length} bytes`);
}

/** Writes exactly `from` at `addr` (the pages must be writable; use ProcMem for read-only ones). */
export function writeMemory(pid: number, addr: number, from: Buffer): void {
  const n = transfer(true, pid, from, [{ addr, len: from.length }]);
  if (n !== from.length) throw new NativeError(`process_vm_writev(${pid})`, Errno.EFAULT, `short write at 0x${addr.toString(16)}: ${n} of ${from.length} bytes`);
}

/**
 * /proc/PID/mem: slower than process_vm_*, but it reads PROT_NONE pages and
 * writes read-only ones (the kernel uses FOLL_FORCE for a tracer), which is
 * how restore fills mappings that must end up read-only.
 */
export class ProcMem {
  private fd: number;

  constructor(readonly pid: number, writable = false) {
    try {
      this.fd = fs.openSync(`/proc/${pid}/mem`, writable ? 'r+' : 'r');
    } catch (e) {
      throw asNative(e, `open(/proc/${pid}/mem)`);
    }
  }

  read(addr: number, into: Buffer): void {
    let done = 0;
    while (done < into.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, into, done, into.length - done, addr + done);
      } catch (e) {
        throw asNative(e, `pread(/proc/${this.pid}/mem, 0x${(addr + done).toString(16)})`);
      }
      if (n === 0) throw new NativeError(`pread(/proc/${this.pid}/mem)`, Errno.EIO, `nothing at 0x${(addr + done).toString(16)}`);
      done += n;
    }
  }

  write(addr: number, from: Buffer): void {
    let done = 0;
    while (done < from.length) {
      let n: number;
      try {
        n = fs.writeSync(this.fd, from, done, from.length - done, addr + done);
      } catch (e) {
        throw asNative(e, `pwrite(/proc/${this.pid}/mem, 0x${(addr + done).toString(16)})`);
      }
      if (n === 0) throw new NativeError(`pwrite(/proc/${this.pid}/mem)`, Errno.EIO, `nothing written at 0x${(addr + done).toString(16)}`);
      done += n;
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Turns a Node fs error into a NativeError so callers see one kind of kernel error. */
export function asNative(e: unknown, call: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.errno === 'number') return new NativeError(call, -err.errno >= 0 ? Math.abs(err.errno) : err.errno);
  return e as Error;
}

/**
 * The contents of the object behind a shared mapping (memfd, shared
 * anonymous memory, a deleted file), read through /proc/PID/map_files: all of
 * it, not only the pages this process happens to have mapped in.
 */
export function readMappedObject(pid: number, start: number, end: number): Buffer {
  const link = `/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`;
  let fd: number;
  try {
    fd = fs.openSync(link, 'r');
  } catch (e) {
    throw asNative(e, `open(${link})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const out = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, out, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** The permission bits of the file behind a mapping (through /proc/PID/map_files, which also reaches unlinked files). */
export function mappedObjectMode(pid: number, start: number, end: number): number {
  const link = `/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`;
  try {
    return fs.statSync(link).mode & 0o7777;
  } catch (e) {
    throw asNative(e, `stat(${link})`);
  }
}

/** Page categories of the PAGEMAP_SCAN ioctl (include/uapi/linux/fs.h). */
export const PAGE_IS = {
  WPALLOWED: 1 << 0,
  WRITTEN: 1 << 1,
  FILE: 1 << 2,
  PRESENT: 1 << 3,
  SWAPPED: 1 << 4,
  PFNZERO: 1 << 5,
  HUGE: 1 << 6,
  SOFT_DIRTY: 1 << 7,
} as const;

export const PAGEMAP_SCAN = 0xc0606610; // _IOWR('f', 16, struct pm_scan_arg)
export const PM_SCAN_ARG_SIZE = 96;
export const PAGE_REGION_SIZE = 24;

export interface PagemapScanQuery {
  /** Categories a page must have (after `inverted` is applied). */
  required?: number;
  /** Categories of which a page must have at least one (after `inverted`). */
  anyOf?: number;
  /** Categories tested as absent instead of present. */
  inverted?: number;
  /** PM_SCAN_* flags (write-protect what is found, ...). */
  flags?: number;
  /** Extra categories to report per region (regions are split where these differ). */
  report?: number;
}

export interface PageRegion {
  start: number;
  end: number;
  categories: number;
}

