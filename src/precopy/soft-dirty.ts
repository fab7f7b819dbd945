/**
 * Dirty tracking with soft-dirty bits (CONFIG_MEM_SOFT_DIRTY), for kernels
 * that have them but not userfaultfd asynchronous write-protection (before
 * 6.7). Writing "4" to /proc/PID/clear_refs clears every page's bit; a
 * write sets it again (pagemap bit 55); a new mapping is soft-dirty whole.
 *
 * Reading the bits and clearing them are two steps, and a write between
 * them would be lost, so a round stops every thread for the two (unless
 * the caller has them stopped already). The page walk reads plain
 * pagemap entries: kernels without userfaultfd WP_ASYNC have no
 * PAGEMAP_SCAN either.
 *
 * Not exercised on the machine this was written on (its kernel is built
 * without CONFIG_MEM_SOFT_DIRTY); chooseMethod only picks it where the
 * probe sees soft-dirty bits.
 */
import { clearSoftDirty, PAGE, PM_ENTRY, type PagemapScanner } from '../native/pagemap.js';
import { stopThreadGroup, detach } from '../native/attach.js';
import { readStatus, listThreads } from '../native/proc.js';
import { syscall } from '../native/libc.js';
import { Sys } from '../native/syscalls.js';
import type { Layout } from './layout.js';
import type { Backend, RangeSink, RoundOptions, RoundStats } from './dirty.js';

/** Entries read per pread: 2 MiB of address space per 4 KiB of pagemap. */
const ENTRY_BATCH = 65536;

export class SoftDirtyBackend implements Backend {
  readonly method = 'soft-dirty' as const;

  constructor(
    readonly pid: number,
    private readonly scanner: PagemapScanner,
  ) {}

  round(layout: Layout, out: RangeSink, stats: RoundStats, opts: RoundOptions): void {
    const ours = opts.stopped || this.stoppedByUs() ? null : stopThreadGroup(this.pid);
    try {
      for (const v of layout.tracked) {
        // Inaccessible reservations can be terabytes of entries; they hold nothing the process can reach.
        if (!v.readable && !v.writable) continue;
        for (let start = v.start; start < v.end; start += ENTRY_BATCH * PAGE) {
          const pages = Math.min(ENTRY_BATCH, (v.end - start) / PAGE);
          const entries = this.scanner.entries(start, pages);
          for (let i = 0; i < pages; i++) {
            const e = entries[i]!;
            if (!(e & PM_ENTRY.SOFT_DIRTY) || !(e & (PM_ENTRY.PRESENT | PM_ENTRY.SWAPPED))) continue;
            // In a file mapping only copy-on-write (anonymous) pages are the process's own.
            if (v.kind === 'file' && e & PM_ENTRY.FILE) continue;
            out.add(start + i * PAGE, start + (i + 1) * PAGE);
          }
        }
      }
      clearSoftDirty(this.pid);
    } finally {
      for (const tid of ours ?? []) {
        try {
          detach(tid);
        } catch {
          // the thread ended meanwhile
        }
      }
    }
    stats.untrackable = 0;
  }

  /** Whether this thread already traces the process (a checkpoint holds it stopped): seizing again would fail. */
  private stoppedByUs(): boolean {
    const self = syscall('gettid', Sys.gettid);
    try {
      return listThreads(this.pid).every((tid) => Number(readStatus(this.pid, tid).TracerPid) === self);
    } catch {
      return false;
    }
  }

  stop(): void {
    // Nothing stays in the process but cleared bits, which cost one fault per page at most.
    this.scanner.close();
  }
}
