/**
 * /proc/PID/pagemap for dirty tracking: a PAGEMAP_SCAN that keeps its file
 * open across rounds and can write-protect what it reports in the same
 * walk, the per-page entries (soft-dirty, uffd-wp bits), and the probes
 * that say which tracking this kernel supports
 * (Documentation/admin-guide/mm/pagemap.rst, soft-dirty.rst).
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { asNative, PAGEMAP_SCAN, PM_SCAN_ARG_SIZE, PAGE_REGION_SIZE, PAGE_IS, type PagemapScanQuery, type PageRegion } from './memory.js';
import { kernelRelease } from './host.js';

export const PAGE = 4096;

/** pm_scan_arg.flags */
export const PM_SCAN = {
  /** Write-protect (uffd-wp) every page the scan reports, atomically with reading it. */
  WP_MATCHING: 1,
  /** Fail with EPERM instead of skipping a VMA that is not registered for async write-protection. */
  CHECK_WPASYNC: 2,
} as const;

/** Bits of a /proc/PID/pagemap entry. */
export const PM_ENTRY = {
  SOFT_DIRTY: 1n << 55n,
  EXCLUSIVE: 1n << 56n,
  UFFD_WP: 1n << 57n,
  FILE: 1n << 61n,
  SWAPPED: 1n << 62n,
  PRESENT: 1n << 63n,
} as const;

const SCAN_BATCH = 4096;

/**
 * PAGEMAP_SCAN over one process, its pagemap file held open: the file
 * keeps the address space it was opened on, so a process that execs or
 * dies makes every later scan fail with ESRCH instead of silently scanning
 * something else.
 */
export class PagemapScanner {
  private readonly fd: number;
  private readonly vec = Buffer.alloc(SCAN_BATCH * PAGE_REGION_SIZE);
  private readonly arg = Buffer.alloc(PM_SCAN_ARG_SIZE);
  private closed = false;

  constructor(readonly pid: number) {
    try {
      this.fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
    } catch (e) {
      throw asNative(e, `open(/proc/${pid}/pagemap)`);
    }
  }

  /**
   * Walks [start, end) and calls `onRegion` for every region of pages
   * matching `q`, in address order (adjacent pages with the same reported
   * categories come as one region). Returns the number of regions.
   */
  scan(start: number, end: number, q: PagemapScanQuery, onRegion: (start: number, end: number, categories: number) => void): number {
    if (this.closed) throw new NativeError(`PAGEMAP_SCAN(${this.pid})`, Errno.EBADF, 'after close');
    const { arg, vec } = this;
    const returnMask = (q.required ?? 0) | (q.anyOf ?? 0) | (q.report ?? 0);
    let regions = 0;
    for (let from = start; from < end; ) {
      arg.fill(0);
      arg.writeBigUInt64LE(BigInt(PM_SCAN_ARG_SIZE), 0);
      arg.writeBigUInt64LE(BigInt(q.flags ?? 0), 8);
      arg.writeBigUInt64LE(BigInt(from), 16);
      arg.writeBigUInt64LE(BigInt(end), 24);
      arg.writeBigUInt64LE(addressOf(vec), 40);
      arg.writeBigUInt64LE(BigInt(SCAN_BATCH), 48);
      arg.writeBigUInt64LE(BigInt(q.inverted ?? 0), 64);
      arg.writeBigUInt64LE(BigInt(q.required ?? 0), 72);
      arg.writeBigUInt64LE(BigInt(q.anyOf ?? 0), 80);
      arg.writeBigUInt64LE(BigInt(returnMask), 88);
      const n = syscall(`ioctl(/proc/${this.pid}/pagemap, PAGEMAP_SCAN, 0x${from.toString(16)}-0x${end.toString(16)})`, Sys.ioctl, this.fd, PAGEMAP_SCAN, addressOf(arg));
      for (let i = 0; i < n; i++) {
        const o = i * PAGE_REGION_SIZE;
        onRegion(Number(vec.readBigUInt64LE(o)), Number(vec.readBigUInt64LE(o + 8)), Number(vec.readBigUInt64LE(o + 16)));
      }
      regions += n;
      // A full buffer stops the walk early; pages past walk_end were neither reported nor protected.
      const walkEnd = Number(arg.readBigUInt64LE(32));
      if (walkEnd <= from) break;
      from = walkEnd;
    }
    return regions;
  }

  /** The raw pagemap entries of `pages` pages from `start` (soft-dirty, uffd-wp, present bits; PFNs need CAP_SYS_ADMIN). */
  entries(start: number, pages: number): BigUint64Array {
    const out = new BigUint64Array(pages);
    const bytes = Buffer.from(out.buffer);
    let done = 0;
    while (done < bytes.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, bytes, done, bytes.length - done, (start / PAGE) * 8 + done);
      } catch (e) {
        throw asNative(e, `pread(/proc/${this.pid}/pagemap)`);
      }
      if (n === 0) throw new NativeError(`pread(/proc/${this.pid}/pagemap)`, Errno.ESRCH, 'no entries: the address space is gone');
      done += n;
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

/**
 * PAGEMAP_SCAN (Linux 6.7+): the ranges of [start, end) whose pages match
 * the query, in one walk of the page tables instead of one pagemap word per
 * page. That matters for the huge, mostly empty reservations of runtimes
 * like Python and V8.
 */
export function pagemapScan(pid: number, start: number, end: number, q: PagemapScanQuery): PageRegion[] {
  const scanner = new PagemapScanner(pid);
  const regions: PageRegion[] = [];
  try {
    scanner.scan(start, end, q, (s, e, categories) => regions.push({ start: s, end: e, categories }));
  } finally {
    scanner.close();
  }
  return regions;
}

/** Pagemap entries of a range of another process (opens and closes the file). */
export function readPagemapEntries(pid: number, start: number, pages: number): BigUint64Array {
  const s = new PagemapScanner(pid);
  try {
    return s.entries(start, pages);
  } finally {
    s.close();
  }
}

let scanProbe: { supported: boolean; error?: string } | null = null;

/** Whether this kernel has the PAGEMAP_SCAN ioctl (6.7+): a one-page scan of our own address space, asked once. */
export function pagemapScanSupported(): { supported: boolean; error?: string } {
  if (scanProbe) return scanProbe;
  const s = new PagemapScanner(process.pid);
  try {
    s.scan(0, PAGE, { required: PAGE_IS.PRESENT }, () => undefined);
    scanProbe = { supported: true };
  } catch (e) {
    scanProbe = { supported: false, error: (e as Error).message };
  } finally {
    s.close();
  }
  return scanProbe;
}

/** /proc/PID/clear_refs "4": clears the soft-dirty bits of every page (and write-protects them so the next write sets the bit again). */
export function clearSoftDirty(pid: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '4');
  } catch (e) {
    throw asNative(e, `write(/proc/${pid}/clear_refs, 4)`);
  }
}

/** CONFIG_MEM_SOFT_DIRTY from /proc/config.gz or /boot/config-<release>: true, false, or null when neither is readable. */
export function softDirtyConfigured(): boolean | null {
  let text: string | null = null;
  try {
    text = zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString('latin1');
  } catch {
    try {
      text = fs.readFileSync(`/boot/config-${kernelRelease()}`, 'latin1');
    } catch {
      return null;
    }
  }
  if (/^CONFIG_MEM_SOFT_DIRTY=y$/m.test(text)) return true;
  return false;
}

/**
 * Whether soft-dirty bits work: a page of ours that has been written and
 * whose bits nobody has cleared shows bit 55 in /proc/self/pagemap exactly
 * when the kernel tracks soft-dirty; without CONFIG_MEM_SOFT_DIRTY the bit
 * is always clear.
 */
export function softDirtySupport(): { available: boolean; reason: string } {
  const config = softDirtyConfigured();
  const page = Buffer.alloc(2 * PAGE, 0x5a);
  const addr = Number(addressOf(page));
  const inside = Math.ceil(addr / PAGE) * PAGE;
  page[inside - addr] = 0xa5;
  let entry: bigint;
  try {
    entry = readPagemapEntries(process.pid, inside, 1)[0]!;
  } catch (e) {
    return { available: false, reason: `cannot read /proc/self/pagemap: ${(e as Error).message}` };
  }
  const configText = config === null ? 'the kernel config is not readable' : config ? 'CONFIG_MEM_SOFT_DIRTY=y' : 'the kernel is built without CONFIG_MEM_SOFT_DIRTY';
  if (!(entry & PM_ENTRY.PRESENT)) return { available: config === true, reason: `${configText}; the probe page was not present, so bit 55 says nothing` };
  if (entry & PM_ENTRY.SOFT_DIRTY) return { available: true, reason: `${configText}; a freshly written page shows the soft-dirty bit (pagemap bit 55)` };
  return { available: false, reason: `${configText}; a freshly written page does not show the soft-dirty bit (pagemap bit 55 stays clear)` };
}
