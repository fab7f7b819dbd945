/**
 * Pre-copy on the source, on the tracer thread: the image is opened before
 * the freeze, rounds copy the running processes' pages into its pages.bin
 * (streamed to the target as they go), and the checkpoint at the freeze
 * writes into the same image, sending only what was written since each
 * page's last copy (SentPages). Tracking is removed from the processes at
 * the freeze, or when the migration is called off.
 */
import type { MessagePort } from 'node:worker_threads';
import { PAGE_SIZE } from '../image/constants.js';
import { ImageWriter } from '../image/format.js';
import { PortSink } from '../image/port-sink.js';
import { countPageRuns } from '../image/pages.js';
import type { Injector } from '../native/inject.js';
import { processExists } from '../native/proc.js';
import { readRanges, ProcMem } from '../native/memory.js';
import type { Op } from '../native/tracer-protocol.js';
import { travellingRanges } from '../source/memory.js';
import { SentPages } from './sent.js';
import { startTracking, type DirtyRange, type Tracking } from './tracking.js';

/** Pages read from the running process per batch: large enough to amortize the call, small enough to keep the copy window short. */
const BATCH_PAGES = 256;

export interface RoundStats {
  round: number;
  /** Pages copied this round (data and zero). */
  pages: number;
  dataPages: number;
  /** Bytes of page data this round added to the image. */
  bytes: number;
  ms: number;
  /** Pages written while this round copied: what the next round, or the freeze, must send. */
  dirtiedPages: number;
}

interface Process {
  tracking: Tracking;
  sent: SentPages;
  /** Written since their last copy, found at the end of the previous round: the next round copies them. */
  pending: Array<DirtyRange & { readable: boolean }>;
}

export class PrecopySession {
  private round = 0;
  private readonly buf = Buffer.alloc(BATCH_PAGES * PAGE_SIZE);

  private constructor(
    readonly writer: ImageWriter,
    private readonly processes: Map<number, Process>,
    readonly method: string,
  ) {}

  /** Starts tracking every process before anything is copied, so no write slips between the copy and the tracking. */
  static open(pids: number[], sink: PortSink): PrecopySession {
    const processes = new Map<number, Process>();
    let method = '';
    try {
      for (const pid of pids) {
        const tracking = startTracking(pid);
        method = tracking.method;
        processes.set(pid, { tracking, sent: new SentPages(), pending: [] });
      }
    } catch (e) {
      for (const p of processes.values()) p.tracking.stop();
      throw e;
    }
    return new PrecopySession(ImageWriter.toSink(sink), processes, method);
  }

  /**
   * Round 0 copies every page that would travel; later rounds copy the
   * pages written since the previous round. The processes run meanwhile: a
   * page written while it is read is torn in the copy, but written, so the
   * next round or the freeze sends it again.
   */
  async copyRound(): Promise<RoundStats> {
    const started = performance.now();
    const stats: RoundStats = { round: this.round, pages: 0, dataPages: 0, bytes: 0, ms: 0, dirtiedPages: 0 };
    for (const [pid, p] of this.processes) {
      if (!processExists(pid)) continue;
      const ranges = this.round === 0 ? travellingRanges(pid) : p.pending;
      for (const r of ranges) await this.copy(pid, p.sent, r, stats);
      // What was written while this round copied; its copies are stale now.
      p.pending = this.dirtyAndTravelling(pid, p);
      for (const r of p.pending) stats.dirtiedPages += r.pages;
    }
    await this.writer.flushPages();
    this.round++;
    stats.ms = performance.now() - started;
    return stats;
  }

  /** The written pages that are part of what travels: written pages of shared memory travel whole at the freeze anyway. */
  private dirtyAndTravelling(pid: number, p: Process): Array<DirtyRange & { readable: boolean }> {
    const dirty = p.tracking.collect();
    for (const d of dirty) p.sent.forget(d.addr, d.pages);
    const travel = travellingRanges(pid);
    const out: Array<DirtyRange & { readable: boolean }> = [];
    for (const d of dirty) {
      for (const t of travel) {
        const start = Math.max(d.addr, t.addr);
        const end = Math.min(d.addr + d.pages * PAGE_SIZE, t.addr + t.pages * PAGE_SIZE);
        if (start < end) out.push({ addr: start, pages: (end - start) / PAGE_SIZE, readable: t.readable });
      }
    }
    return out;
  }

  private async copy(pid: number, sent: SentPages, r: { addr: number; pages: number; readable: boolean }, stats: RoundStats): Promise<void> {
    for (let done = 0; done < r.pages; done += BATCH_PAGES) {
      const n = Math.min(BATCH_PAGES, r.pages - done);
      const addr = r.addr + done * PAGE_SIZE;
      const out = this.buf.subarray(0, n * PAGE_SIZE);
      if (!r.readable || readRanges(pid, [{ addr, len: out.length }], out) !== out.length) {
        const mem = new ProcMem(pid);
        try {
          mem.read(addr, out);
        } finally {
          mem.close();
        }
      }
      const runs = await this.writer.writePageRuns(out);
      sent.record(addr, runs);
      const c = countPageRuns(runs);
      stats.pages += c.pages;
      stats.dataPages += c.dataPages;
      stats.bytes += c.dataPages * PAGE_SIZE;
    }
  }

  /**
   * At the freeze, with the process stopped: what it wrote since the last
   * round is forgotten (it travels now), and the tracking comes off it.
   * Returns the pages still known clean, for the memory dump.
   */
  finish(pid: number, injector: Injector): SentPages | undefined {
    const p = this.processes.get(pid);
    if (!p) return undefined;
    for (const d of p.tracking.collect()) p.sent.forget(d.addr, d.pages);
    p.tracking.stop(injector);
    this.processes.delete(pid);
    return p.sent;
  }

  /** Takes the tracking off every process still tracked (the freeze did not reach them, or the migration was called off). */
  stopTracking(): void {
    for (const [pid, p] of this.processes) {
      try {
        p.tracking.stop();
      } catch {
        // the process ended: nothing is left to untrack
      }
      this.processes.delete(pid);
    }
  }
}

const sessions = new Map<string, PrecopySession>();

export function precopySession(id: string): PrecopySession {
  const s = sessions.get(id);
  if (!s) throw new Error(`no pre-copy ${id} on this tracer`);
  return s;
}

/** Forgets a session whose checkpoint finished or failed (its writer finished or aborted there). */
export function endPrecopySession(id: string): void {
  sessions.get(id)?.stopTracking();
  sessions.delete(id);
}

export const tracerOps: Record<string, Op> = {
  precopyOpen: (_ctx, id: string, pids: number[], port: MessagePort, where: string) => {
    const session = PrecopySession.open(pids, new PortSink(port, where));
    sessions.set(id, session);
    return { method: session.method };
  },
  precopyRound: (_ctx, id: string) => precopySession(id).copyRound(),
  /** The migration is off before its freeze: tracking comes off and the target is told to discard the image. */
  precopyAbort: async (_ctx, id: string, reason: string) => {
    const s = sessions.get(id);
    if (!s) return;
    sessions.delete(id);
    s.stopTracking();
    await s.writer.abort(reason);
  },
};
