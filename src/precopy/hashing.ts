/**
 * The last resort, for kernels with neither userfaultfd write-protection
 * nor soft-dirty bits: every round reads every data page of the tracked
 * mappings and compares its SHA-256 with the previous round's. It needs
 * nothing from the kernel beyond reading memory, and costs what reading
 * and hashing the whole process costs (about 4 µs per page here), every
 * round, plus a digest per page in Ferry's memory.
 *
 * A page counts as written when its content changed (a write of the same
 * bytes is invisible, and harmless) or when it holds data now and did not
 * before. Pages read while the process writes them may be torn; the next
 * round, or the freeze, sees the final content differ and reports it.
 */
import crypto from 'node:crypto';
import { PAGE_IS, readRanges, ProcMem } from '../native/memory.js';
import { PAGE, PM_ENTRY, pagemapScanSupported, type PagemapScanner } from '../native/pagemap.js';
import type { Layout, TrackedVma } from './layout.js';
import type { Backend, RangeSink, RoundStats } from './dirty.js';

const CHUNK_PAGES = 256;
const ENTRY_BATCH = 65536;
const { FILE, PRESENT, SWAPPED, PFNZERO } = PAGE_IS;

export class HashingBackend implements Backend {
  readonly method = 'hashing' as const;
  private digests = new Map<number, string>();
  private readonly buf = Buffer.alloc(CHUNK_PAGES * PAGE);
  private procMem: ProcMem | null = null;

  constructor(
    readonly pid: number,
    private readonly scanner: PagemapScanner,
  ) {}

  round(layout: Layout, out: RangeSink, stats: RoundStats): void {
    const next = new Map<number, string>();
    for (const v of layout.tracked) {
      for (const [start, end] of this.dataRegions(v)) {
        for (let addr = start; addr < end; addr += CHUNK_PAGES * PAGE) {
          const len = Math.min(CHUNK_PAGES * PAGE, end - addr);
          const data = this.read(addr, len);
          if (!data) continue; // unmapped meanwhile: it is gone, not written
          for (let off = 0; off < len; off += PAGE) {
            const page = addr + off;
            const digest = crypto.hash('sha256', data.subarray(off, off + PAGE), 'binary');
            next.set(page, digest);
            if (this.digests.get(page) !== digest) out.add(page, page + PAGE);
          }
        }
      }
    }
    this.digests = next;
    stats.untrackable = 0;
  }

  /** Where `v` holds data: PAGEMAP_SCAN where the kernel has it, pagemap entries elsewhere (skipping inaccessible reservations, which can be huge). */
  private dataRegions(v: TrackedVma): Array<[number, number]> {
    const regions: Array<[number, number]> = [];
    const add = (s: number, e: number) => {
      const last = regions.at(-1);
      if (last && last[1] === s) last[1] = e;
      else regions.push([s, e]);
    };
    const fileMask = v.kind === 'file' ? FILE : 0;
    if (pagemapScanSupported().supported) {
      this.scanner.scan(v.start, v.end, { required: PFNZERO | fileMask, inverted: PFNZERO | fileMask, anyOf: PRESENT | SWAPPED }, add);
      return regions;
    }
    if (!v.readable && !v.writable) return regions;
    for (let start = v.start; start < v.end; start += ENTRY_BATCH * PAGE) {
      const pages = Math.min(ENTRY_BATCH, (v.end - start) / PAGE);
      const entries = this.scanner.entries(start, pages);
      for (let i = 0; i < pages; i++) {
        const e = entries[i]!;
        if (!(e & (PM_ENTRY.PRESENT | PM_ENTRY.SWAPPED))) continue;
        if (v.kind === 'file' && e & PM_ENTRY.FILE) continue;
        add(start + i * PAGE, start + (i + 1) * PAGE);
      }
    }
    return regions;
  }

  private read(addr: number, len: number): Buffer | null {
    const into = this.buf.subarray(0, len);
    if (readRanges(this.pid, [{ addr, len }], into) === len) return into;
    // PROT_NONE and other unreadable mappings: /proc/PID/mem reads them anyway.
    try {
      this.procMem ??= new ProcMem(this.pid);
      this.procMem.read(addr, into);
      return into;
    } catch {
      return null;
    }
  }

  stop(): void {
    this.digests.clear();
    this.procMem?.close();
    this.procMem = null;
    this.scanner.close();
  }
}
