import { Husk } from '../native/husk.js';
import { detach } from '../native/attach.js';
import { findSyscallGadget } from '../native/inject.js';
import { processExists, readStat } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import type { Op } from '../native/tracer-protocol.js';
import { ImageReader, hostFacts } from '../image/format.js';
import '../image/all.js';
import type { RestoreContext } from './context.js';
import * as memory from './memory.js';
import * as proc from './process.js';
import * as thread from './thread.js';
import * as signals from './signals.js';
import * as files from './files.js';
import * as creds from './creds.js';
import * as timers from './timers.js';

/** The image cannot be restored here; nothing was created. */
export class RestoreRefused extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`refusing to restore: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'RestoreRefused';
    this.problems = problems;
  }
}

export interface RestoreSummary {
  pid: number;
  dir: string;
  /** From the first husk to the process running. */
  restoreMs: number;
}

/** Candidate husk bases: the husk, its scratch and the vdso parking area need 4 MiB that the image does not use. */
const HUSK_BASES = [0x10000000, 0x20000000, 0x200000000, 0x100000000000, 0x7e0000000000];
const HUSK_WINDOW = 4 << 20;
const SCRATCH_OFFSET = 0x10000;
const PARKING_OFFSET = 0x200000;

function chooseHuskBase(occupied: Array<{ start: number; end: number }>): number {
  for (const base of HUSK_BASES) {
    if (!occupied.some((r) => r.start < base + HUSK_WINDOW && r.end > base)) return base;
  }
  throw new RestoreRefused(['the image uses every address range Ferry could place its restore helper at']);
}

/** The lowest fd number above every fd the image restores. */
function fdFloor(image: ImageReader): number {
  let max = 2;
  for (const e of image.entries()) {
    const fd = (e as { fd?: unknown }).fd;
    if (e.type === 'fd' && typeof fd === 'number') max = Math.max(max, fd);
  }
  return max + 1;
}

export async function restoreProcess(dir: string): Promise<RestoreSummary> {
  const image = await ImageReader.open(dir);
  try {
    const p = proc.processOf({ image });
    const problems: string[] = [];
    if (processExists(p.pid)) {
      let who = '';
      try {
        who = ` by ${readStat(p.pid).comm}`;
      } catch {
        // it went away between the two looks
      }
      problems.push(`pid ${p.pid} is in use${who}; the restored process needs exactly that pid`);
    }
    // The restored process keeps calling into the vdso at the offsets of the kernel it was checkpointed on.
    const here = hostFacts();
    const there = image.manifest.host;
    if (there.arch !== here.arch) problems.push(`the image is for ${there.arch}, this host is ${here.arch}`);
    if (there.kernel !== here.kernel || there.kernelBuild !== here.kernelBuild) {
      problems.push(`the image was taken on kernel ${there.kernel} (${there.kernelBuild}); this host runs ${here.kernel} (${here.kernelBuild}), and a process needs the exact kernel build its vdso came from`);
    }
    memory.preflight({ image }, problems);
    files.preflight({ image }, problems);
    creds.preflight({ image }, problems);
    if (problems.length) throw new RestoreRefused(problems);

    const started = performance.now();
    const base = chooseHuskBase(memory.occupiedRanges({ image }));
    const parent = Husk.spawn(base, 10_000, base + SCRATCH_OFFSET);
    let husk: Husk | null = null;
    try {
      husk = parent.clone({ setTid: [p.pid] });
      parent.release();
      const ctx: RestoreContext = {
        pid: p.pid,
        image,
        husk,
        injector: husk.injector,
        threads: [{ tid: p.pid, injector: husk.injector }],
        shmemFds: new Map(),
        parkedFds: new Set(),
        fdFloor: fdFloor(image),
      };
      thread.createThreads(ctx, p.threads);
      await memory.restore(ctx, base + PARKING_OFFSET);
      signals.restore(ctx);
      timers.restore(ctx);
      await files.restore(ctx);
      proc.restore(ctx);
      // From here on injected calls go through the restored program's own code, so the husk's page can go.
      const gadget = findSyscallGadget(ctx.pid, null, husk.layout);
      for (const t of ctx.threads) t.injector.useGadget(gadget);
      ctx.injector.call('munmap(husk)', Sys.munmap, husk.layout.start, husk.layout.end - husk.layout.start);
      memory.restoreMm(ctx);
      thread.restoreKernelState(ctx);
      proc.restoreLimits(ctx);
      // Credentials belong to each thread (the raw setresuid changes only the caller).
      for (const t of ctx.threads) creds.restore({ ...ctx, injector: t.injector });
      proc.restoreAfterCreds(ctx);
      for (const fd of [...ctx.parkedFds]) ctx.injector.call('close(parked)', Sys.close, fd);
      // The leader owns the scratch mapping, so it ends last.
      for (const t of [...ctx.threads].reverse()) t.injector.end(false);
      thread.restoreCpu(ctx);
      for (const t of ctx.threads) detach(t.tid);
      return { pid: p.pid, dir, restoreMs: performance.now() - started };
    } catch (e) {
      parent.kill();
      husk?.kill();
      throw e;
    }
  } finally {
    await image.close();
  }
}

export const tracerOps: Record<string, Op> = {
  restore: (_ctx, dir: string) => restoreProcess(dir),
};
