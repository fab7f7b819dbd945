/**
 * Dirty tracking with userfaultfd asynchronous write-protection and
 * PAGEMAP_SCAN (Linux 6.7+), without soft-dirty bits.
 *
 * Every tracked mapping is registered (UFFDIO_REGISTER_MODE_WP) with a
 * userfaultfd that has UFFD_FEATURE_WP_ASYNC: a write to a protected page
 * does not wait for anyone, the kernel just clears the page's protection,
 * which PAGEMAP_SCAN then reports as PAGE_IS_WRITTEN. Each round is one
 * scan per stretch of mappings with PM_SCAN_WP_MATCHING, which protects
 * every page it reports in the same page-table walk, under the same lock:
 * a write lands either before (reported now) or after (faults, reported
 * next round). Nothing here stops the process.
 *
 * Mappings appear, grow, move and vanish between rounds. Each round first
 * asks the kernel which parts of the tracked mappings are not registered
 * (a scan for pages outside PAGE_IS_WPALLOWED, which skips registered
 * mappings without walking their page tables) and registers them. That
 * also catches what the maps cannot show: a mapping unmapped and mapped
 * again at the same place, and one moved by mremap (the kernel drops the
 * registration and the protection of a moved mapping, so all its pages
 * are reported at their new address). Until a new mapping is registered
 * its pages are unprotected, so the scan after registration reports
 * everything written in it since it appeared.
 *
 * How much of a mapping is protected: in a writable anonymous mapping
 * ("armed", below the size limits) the scan protects every page,
 * populated or not (WP_UNPOPULATED puts a marker where no page is), so a
 * first touch by reading is not a write, and a page discarded since the
 * last round (MADV_DONTNEED) shows up as zero. That costs page tables for
 * the whole mapping (8 bytes per 4 KiB page), so huge sparse mappings
 * (sanitizer shadows, NORESERVE arenas) are only protected where pages
 * exist: writes are still exact, but a read of an untouched page there
 * counts as a write (this kernel maps a fresh zeroed page on a read
 * fault), and a discarded page is not reported. Private file mappings
 * count only their copy-on-write pages; page-cache pages are the file's.
 *
 * Not seen by any page-table method: writes by devices into pages pinned
 * before a round (O_DIRECT or RDMA in flight), which bypass the page
 * tables.
 */
import { PAGE_IS, type PagemapScanQuery } from '../native/memory.js';
import { PM_SCAN, type PagemapScanner } from '../native/pagemap.js';
import type { Userfaultfd } from '../native/userfaultfd.js';
import { NativeError } from '../native/errors.js';
import { runsOf, type Layout, type TrackedVma, type UntrackedVma, type AddressRange } from './layout.js';
import type { Backend, RangeSink, RoundStats } from './dirty.js';

export interface UffdWpOptions {
  /** Writable anonymous mappings up to this size are protected whole (see "armed"). */
  armVmaLimit: number;
  /** And only until their sizes add up to this much. */
  armBudget: number;
}

export const DEFAULT_UFFD_OPTIONS: UffdWpOptions = { armVmaLimit: 1 << 30, armBudget: 16 * 2 ** 30 };

type Flavor = 'armed' | 'anon' | 'file';

const { WPALLOWED, WRITTEN, FILE, PRESENT, SWAPPED, PFNZERO } = PAGE_IS;
const DATA = PRESENT | SWAPPED;

const SCAN: Record<Flavor, PagemapScanQuery> = {
  // Every unprotected entry, populated or not; what it is comes back in the categories.
  armed: { flags: PM_SCAN.WP_MATCHING, required: WRITTEN, report: PRESENT | SWAPPED | PFNZERO },
  // Only entries that hold data: never populates page tables.
  anon: { flags: PM_SCAN.WP_MATCHING, required: WRITTEN | PFNZERO, inverted: PFNZERO, anyOf: DATA },
  file: { flags: PM_SCAN.WP_MATCHING, required: WRITTEN | PFNZERO | FILE, inverted: PFNZERO | FILE, anyOf: DATA },
};

/** Pages of mappings that are not registered (not WP-allowed): registered mappings are skipped whole. */
const UNREGISTERED: PagemapScanQuery = { required: WPALLOWED, inverted: WPALLOWED };

/** The data of a mapping that could not be registered, reported every round. */
const UNTRACKABLE_DATA: Record<'anon' | 'file', PagemapScanQuery> = {
  anon: { required: PFNZERO, inverted: PFNZERO, anyOf: DATA },
  file: { required: PFNZERO | FILE, inverted: PFNZERO | FILE, anyOf: DATA },
};

export class UffdWpBackend implements Backend {
  readonly method = 'uffd-wp' as const;
  /** Private mappings the kernel refused to register in the last round, with why. */
  untrackable: UntrackedVma[] = [];

  constructor(
    private readonly uffd: Userfaultfd,
    private readonly scanner: PagemapScanner,
    private readonly opts: UffdWpOptions = DEFAULT_UFFD_OPTIONS,
  ) {}

  /** Registers what is new in `layout`; refresh() calls it between rounds, every round calls it first. */
  prepare(layout: Layout, stats?: RoundStats): Map<TrackedVma, string> {
    const refused = this.register(layout, stats);
    this.untrackable = [...refused].map(([v, reason]) => ({ start: v.start, end: v.end, path: v.path, reason }));
    return refused;
  }

  round(layout: Layout, out: RangeSink, stats: RoundStats): void {
    const refused = this.prepare(layout, stats);
    const flavor = this.flavors(layout, refused);
    const armed = (start: number, end: number, categories: number) => out.add(start, end, !(categories & DATA) || (categories & PFNZERO) !== 0);
    const data = (start: number, end: number) => out.add(start, end);
    for (const seg of runsOf(layout.tracked, (v) => !refused.has(v), (a, b) => flavor.get(a) === flavor.get(b))) {
      const f = flavor.get(seg.vmas[0]!)!;
      this.scanner.scan(seg.start, seg.end, SCAN[f], f === 'armed' ? armed : data);
    }
    for (const v of refused.keys()) this.scanner.scan(v.start, v.end, UNTRACKABLE_DATA[v.kind], data);
    stats.untrackable = refused.size;
  }

  /**
   * Registers what is not registered yet; returns the mappings the kernel
   * refused (a VM_DROPPABLE or PFN mapping, one registered by the
   * program's own userfaultfd, ...) with the error.
   */
  private register(layout: Layout, stats?: RoundStats): Map<TrackedVma, string> {
    const refused = new Map<TrackedVma, string>();
    for (const run of runsOf(layout.tracked, () => true)) {
      const missing: AddressRange[] = [];
      this.scanner.scan(run.start, run.end, UNREGISTERED, (start, end) => {
        const last = missing.at(-1);
        if (last && last.end === start) last.end = end;
        else missing.push({ start, end });
      });
      if (!missing.length) continue;
      // Only what the maps showed as a tracked mapping: a gap may have filled meanwhile with something else.
      const pieces: Array<AddressRange & { vma: TrackedVma }> = [];
      for (const v of run.vmas) {
        for (const m of missing) {
          const start = Math.max(v.start, m.start);
          const end = Math.min(v.end, m.end);
          if (start < end) pieces.push({ start, end, vma: v });
        }
      }
      for (const group of touching(pieces)) {
        if (this.tryRegister(group.start, group.end)) {
          if (stats) stats.registeredBytes += group.end - group.start;
          continue;
        }
        for (const p of group.pieces) {
          const error = this.tryRegister(p.start, p.end, true);
          if (error !== true) refused.set(p.vma, error);
          else if (stats) stats.registeredBytes += p.end - p.start;
        }
      }
    }
    return refused;
  }

  /** true when registered; otherwise false, or with `explain` the error. A vanished process is thrown. */
  private tryRegister(start: number, end: number, explain: true): true | string;
  private tryRegister(start: number, end: number): boolean;
  private tryRegister(start: number, end: number, explain = false): boolean | string {
    try {
      this.uffd.registerWp(start, end - start);
      return true;
    } catch (e) {
      if (!(e instanceof NativeError) || e.code === 'ESRCH') throw e;
      return explain ? `the kernel refused to register it for write-protection: ${e.code}` : false;
    }
  }

  private flavors(layout: Layout, refused: Map<TrackedVma, string>): Map<TrackedVma, Flavor> {
    const out = new Map<TrackedVma, Flavor>();
    let armed = 0;
    for (const v of layout.tracked) {
      if (refused.has(v)) continue;
      const size = v.end - v.start;
      if (v.kind === 'file') out.set(v, 'file');
      else if (v.writable && size <= this.opts.armVmaLimit && armed + size <= this.opts.armBudget) {
        armed += size;
        out.set(v, 'armed');
      } else out.set(v, 'anon');
    }
    return out;
  }

  stop(): void {
    // The last reference: the kernel unregisters every range and clears their write-protection (userfaultfd_release).
    this.uffd.close();
    this.scanner.close();
  }
}

/** Pieces (in address order) grouped where each starts where the previous ended, so one ioctl covers a group. */
function touching<T extends AddressRange>(pieces: T[]): Array<{ start: number; end: number; pieces: T[] }> {
  const groups: Array<{ start: number; end: number; pieces: T[] }> = [];
  for (const p of pieces) {
    const g = groups.at(-1);
    if (g && g.end === p.start) {
      g.end = p.end;
      g.pieces.push(p);
    } else groups.push({ start: p.start, end: p.end, pieces: [p] });
  }
  return groups;
}
