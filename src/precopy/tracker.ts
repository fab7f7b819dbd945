/**
 * Dirty-page tracking of one running process for pre-copy: start() sets a
 * baseline, each collect() returns the pages written since the previous
 * one (or since start), stop() takes every trace of the tracking off the
 * process. Threads share their process's address space, so one tracker
 * covers all of them.
 *
 * Lives on the tracer thread (start may inject a syscall, which needs a
 * ptrace stop); collect and stop do not stop the process with uffd-wp.
 *
 * What collect() promises: every page of a private mapping whose content
 * may differ from what it held when the previous collect scanned it is in
 * one of the returned ranges, as long as the process keeps its address
 * space (no exec). Shared mappings are not tracked (layout() lists them:
 * their objects travel whole). The reverse is not exact: moved mappings
 * come back whole, and uffd-wp.ts says where else it over-reports. A page
 * that stopped holding data (unmapped, discarded) may be reported as zero
 * or not at all: the memory dump at the freeze, which lists the pages that
 * hold data then, is what says which pages exist.
 */
import { attachAndStop, detach } from '../native/attach.js';
import { Injector } from '../native/inject.js';
import { NativeError } from '../native/errors.js';
import { Errno } from '../native/errno.js';
import { listThreads, readStat } from '../native/proc.js';
import { PagemapScanner } from '../native/pagemap.js';
import { Userfaultfd, TRACKING_FEATURES, UFFD_FEATURE, probeUserfaultfd, userfaultfdsOf } from '../native/userfaultfd.js';
import { mergeRanges, readLayout, subtractRanges, type AddressRange, type Layout, type UntrackedVma } from './layout.js';
import { RangeSink, type Backend, type DirtyMethod, type DirtyRange, type RoundOptions, type RoundStats } from './dirty.js';
import { chooseMethod } from './method.js';
import { UffdWpBackend, DEFAULT_UFFD_OPTIONS, type UffdWpOptions } from './uffd-wp.js';
import { SoftDirtyBackend } from './soft-dirty.js';
import { HashingBackend } from './hashing.js';

export type { DirtyMethod, DirtyRange, RoundStats } from './dirty.js';

export interface TrackerOptions {
  /** 'auto' (the default) takes the best method that works in this process, falling back with reasons. */
  method?: DirtyMethod | 'auto';
  uffd?: Partial<UffdWpOptions>;
}

/** How the tracked mappings changed since the previous refresh or collect. */
export interface LayoutChange {
  added: AddressRange[];
  removed: AddressRange[];
  /** Mappings not tracked now: shared ones, and private ones the kernel refused (whose data every collect reports). */
  untracked: UntrackedVma[];
}

export class DirtyTracker {
  private backend: Backend | null;
  private rounds = 0;
  private tracked: AddressRange[] = [];
  private untracked: UntrackedVma[] = [];
  lastRound: RoundStats | null = null;

  private constructor(
    readonly pid: number,
    readonly method: DirtyMethod,
    /** Why this method: what the host offers, and why better ones were not used. */
    readonly reason: string,
    /** Better methods that could not be used in this process, each with its error. */
    readonly fallbacks: string[],
    backend: Backend,
  ) {
    this.backend = backend;
  }

  /**
   * Starts tracking `pid`. uffd-wp creates a userfaultfd inside the process
   * through `injector` when given (the caller has a thread of it stopped),
   * or by stopping one thread itself for the two injected calls. Every
   * tracked mapping is registered and protected before this returns: what
   * the process writes from then on is reported.
   */
  static start(pid: number, injector: Injector | null = null, options: TrackerOptions = {}): DirtyTracker {
    ensureAlive(pid, 'start dirty tracking');
    const choice = chooseMethod(pid);
    const forced = options.method && options.method !== 'auto' ? options.method : null;
    if (forced) {
      const c = choice.candidates.find((x) => x.method === forced)!;
      if (!c.available) throw new Error(`dirty tracking method ${forced} is not available here: ${c.reason}`);
    }
    const order = forced ? choice.candidates.filter((c) => c.method === forced) : choice.candidates.filter((c) => c.available);
    const fallbacks: string[] = [];
    for (const c of order) {
      let backend: Backend;
      try {
        backend = makeBackend(c.method, pid, injector, { ...DEFAULT_UFFD_OPTIONS, ...options.uffd });
      } catch (e) {
        if (!isAlive(pid)) throw gone(pid, 'start dirty tracking');
        if (forced) throw e;
        fallbacks.push(`${c.method}: ${(e as Error).message}`);
        continue;
      }
      const reason = fallbacks.length ? `${c.reason} (not ${fallbacks.join('; not ')})` : c.reason;
      const tracker = new DirtyTracker(pid, c.method, reason, fallbacks, backend);
      try {
        tracker.collectRound({}); // the baseline: what was written before start is not reported
      } catch (e) {
        tracker.stop();
        throw e;
      }
      return tracker;
    }
    throw new Error(`no dirty tracking works in pid ${pid}: ${fallbacks.join('; ')}`);
  }

  get stopped(): boolean {
    return this.backend === null;
  }

  /**
   * Takes in the mappings created, grown, moved, replaced or removed since
   * the previous round: new ones are registered now (their pages count as
   * written until a collect has seen them), removed ones are forgotten.
   * collect() does this itself; call it to learn the layout change early.
   */
  refresh(): LayoutChange {
    const backend = this.live('refresh');
    const layout = this.readLayout();
    if (backend instanceof UffdWpBackend) this.guard(() => backend.prepare(layout));
    return this.takeLayout(layout, backend);
  }

  /** The ranges written since the previous collect (or start), sorted and joined. */
  collect(opts: RoundOptions = {}): DirtyRange[] {
    this.live('collect');
    return this.collectRound(opts);
  }

  /** The tracked and untracked mappings as of the last round. */
  layout(): { tracked: AddressRange[]; untracked: UntrackedVma[] } {
    return { tracked: this.tracked.map((r) => ({ ...r })), untracked: [...this.untracked] };
  }

  /**
   * Removes the tracking: with uffd-wp, Ferry's userfaultfd is closed, and
   * the kernel unregisters every range and clears its write-protection, so
   * writes stop faulting; the process never held the userfaultfd. Safe to
   * call twice and after the process ended. The injector is not needed
   * (it is accepted for callers that have one).
   */
  stop(_injector?: Injector): void {
    const b = this.backend;
    this.backend = null;
    b?.stop();
  }

  private collectRound(opts: RoundOptions): DirtyRange[] {
    const backend = this.backend!;
    const started = performance.now();
    const layout = this.readLayout();
    const stats: RoundStats = { round: this.rounds, ms: 0, dataPages: 0, zeroPages: 0, ranges: 0, vmas: layout.tracked.length, trackedBytes: 0, registeredBytes: 0, untrackable: 0 };
    const sink = new RangeSink();
    this.guard(() => backend.round(layout, sink, stats, opts));
    this.takeLayout(layout, backend);
    const ranges = sink.ranges();
    for (const r of ranges) {
      if (r.zero) stats.zeroPages += r.pages;
      else stats.dataPages += r.pages;
    }
    stats.ranges = ranges.length;
    stats.trackedBytes = this.tracked.reduce((s, r) => s + r.end - r.start, 0);
    stats.ms = performance.now() - started;
    this.lastRound = stats;
    this.rounds++;
    return ranges;
  }

  private takeLayout(layout: Layout, backend: Backend): LayoutChange {
    const now = mergeRanges(layout.tracked);
    const change: LayoutChange = {
      added: subtractRanges(now, this.tracked),
      removed: subtractRanges(this.tracked, now),
      untracked: [...layout.untracked, ...(backend instanceof UffdWpBackend ? backend.untrackable : [])],
    };
    this.tracked = now;
    this.untracked = change.untracked;
    return change;
  }

  private live(what: string): Backend {
    if (!this.backend) throw new Error(`${what}: dirty tracking of pid ${this.pid} is stopped`);
    return this.backend;
  }

  private readLayout(): Layout {
    ensureAliveOr(this.pid, 'dirty tracking', () => this.stop());
    try {
      return readLayout(this.pid);
    } catch (e) {
      throw this.translate(e);
    }
  }

  /** Runs a step of a round; an address space that vanished ends the tracking with an error that says so. */
  private guard<T>(step: () => T): T {
    try {
      return step();
    } catch (e) {
      throw this.translate(e);
    }
  }

  private translate(e: unknown): unknown {
    if (!(e instanceof NativeError) || (e.code !== 'ESRCH' && e.code !== 'ENOENT')) return e;
    this.stop();
    if (!isAlive(this.pid)) return gone(this.pid, 'dirty tracking');
    return new NativeError(`dirty tracking for pid ${this.pid}`, Errno.ESRCH, 'failed because the process executed a new program (the address space being tracked is gone)');
  }
}

function makeBackend(method: DirtyMethod, pid: number, injector: Injector | null, uffdOptions: UffdWpOptions): Backend {
  const scanner = new PagemapScanner(pid);
  try {
    switch (method) {
      case 'uffd-wp':
        return new UffdWpBackend(createUserfaultfd(pid, injector), scanner, uffdOptions);
      case 'soft-dirty':
        return new SoftDirtyBackend(pid, scanner);
      case 'hashing':
        return new HashingBackend(pid, scanner);
    }
  } catch (e) {
    scanner.close();
    throw e;
  }
}

/** A userfaultfd for `pid`'s address space, set up for asynchronous write-protection. */
function createUserfaultfd(pid: number, injector: Injector | null): Userfaultfd {
  // A program that write-protects its own memory this way (Wine's write watches do) would have its state consumed by our scans.
  const own = userfaultfdsOf(pid);
  if (own.length) throw new Error(`the process uses userfaultfd itself (fd ${own.join(', ')}): scanning its mappings could take its own write-protection state`);
  const uffd = injector ? Userfaultfd.createIn(injector, pid) : withStoppedThread(pid, (inj) => Userfaultfd.createIn(inj, pid));
  try {
    // WP_HUGETLBFS_SHMEM where the kernel has it, so private hugetlb mappings can be registered too.
    const extra = probeUserfaultfd().features & UFFD_FEATURE.WP_HUGETLBFS_SHMEM;
    uffd.api(TRACKING_FEATURES | extra);
  } catch (e) {
    uffd.close();
    throw e;
  }
  return uffd;
}

/** Stops one live thread of `pid` for the length of `fn` (the leader, unless it has exited). */
function withStoppedThread<T>(pid: number, fn: (inj: Injector) => T): T {
  const tid = liveThread(pid);
  attachAndStop(tid);
  try {
    const inj = new Injector(tid);
    try {
      return fn(inj);
    } finally {
      try {
        inj.end();
      } catch {
        // the thread died: nothing to restore
      }
    }
  } finally {
    try {
      detach(tid);
    } catch {
      // gone
    }
  }
}

function liveThread(pid: number): number {
  for (const tid of [pid, ...listThreads(pid).filter((t) => t !== pid)]) {
    try {
      const state = readStat(pid, tid).fields[3];
      if (state !== 'Z' && state !== 'X') return tid;
    } catch {
      // exited meanwhile
    }
  }
  throw gone(pid, 'start dirty tracking');
}

function isAlive(pid: number): boolean {
  try {
    const state = readStat(pid).fields[3];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function gone(pid: number, what: string): NativeError {
  return new NativeError(`${what} for pid ${pid}`, Errno.ESRCH, 'failed because the process has ended');
}

function ensureAlive(pid: number, what: string): void {
  if (!isAlive(pid)) throw gone(pid, what);
}

function ensureAliveOr(pid: number, what: string, cleanup: () => void): void {
  if (isAlive(pid)) return;
  cleanup();
  throw gone(pid, what);
}
