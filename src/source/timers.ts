import { readPosixTimers, timerIdRestoreSupported, SIGEV, type ProcTimer } from '../native/timers.js';
import { listThreads } from '../native/proc.js';
import { NativeError } from '../native/errors.js';
import { Sys } from '../native/syscalls.js';
import { PosixTimerEntry } from '../image/timers.js';
import { hex } from '../image/fields.js';
import type { Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

const ITIMERSPEC_SIZE = 32;
/** Timers read per injected batch: their buffers and table rows stay well inside the injector's scratch. */
const CHUNK = 1024;

/** CPU clocks are negative: ~pid << 3 | perthread << 2 | kind, as in the kernel's posix-cpu-timers.h. */
const CPUCLOCK_PERTHREAD = 4;
const CPUCLOCK_KIND = 3;
const CLOCKFD = 3;

function clockProblem(t: ProcTimer, pid: number, threads: number[]): string | null {
  if (t.clock >= 0) return null;
  const who = ~(t.clock >> 3);
  if ((t.clock & CPUCLOCK_KIND) === CLOCKFD) return `it runs on the dynamic clock of fd ${who} (a PTP or other posix-clock device), which Ferry cannot recreate`;
  if (t.clock & CPUCLOCK_PERTHREAD) {
    // The kernel keeps the owner of a "calling thread" clock inside the timer and shows only -2.
    if (who === 0 && threads.length > 1) return `it counts the CPU time of the thread that created it, and the kernel does not say which of the ${threads.length} threads that is`;
    return null;
  }
  if (who !== 0 && who !== pid) return `it counts the CPU time of process ${who}, which is not part of this checkpoint`;
  return null;
}

export function inspect(pid: number, refusals: Refusal[]): void {
  const timers = readPosixTimers(pid);
  if (!timers.length) return;
  const threads = listThreads(pid);
  for (const t of timers) {
    const problem = clockProblem(t, pid, threads);
    if (problem) refusals.push({ pid, resource: `POSIX timer ${t.id} (clock ${t.clock})`, reason: problem });
  }
  if (!timerIdRestoreSupported()) {
    refusals.push({
      pid,
      resource: `POSIX timers ${timers.map((t) => t.id).join(',')}`,
      reason: 'this kernel cannot create a timer with a given id (prctl PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15+), and the process knows its timers by id',
    });
  }
}

/**
 * /proc/PID/timers gives what each timer was created with; timer_gettime,
 * run inside the stopped process, gives its interval and the time left
 * (relative, whatever flags armed it). A periodic timer whose signal is
 * still queued reports its next expiry; the queued signal itself travels
 * with the pending signals.
 */
export function dump(ctx: DumpContext): void {
  const { pid, injector: inj } = ctx;
  const timers = readPosixTimers(pid);
  for (let at = 0; at < timers.length; at += CHUNK) {
    const chunk = timers.slice(at, at + CHUNK);
    inj.reset();
    const specs = inj.reserve(chunk.length * ITIMERSPEC_SIZE);
    const results = inj.batchRaw(chunk.map((t, i) => ({ nr: Sys.timer_gettime, args: [t.id, specs + i * ITIMERSPEC_SIZE] })));
    results.forEach((r, i) => {
      if (r < 0n) throw new NativeError(`timer_gettime(${chunk[i]!.id}) (injected into ${pid})`, Number(-r));
    });
    const out = inj.read(specs, chunk.length * ITIMERSPEC_SIZE);
    chunk.forEach((t, i) => {
      const off = i * ITIMERSPEC_SIZE;
      ctx.image.addEntry(
        PosixTimerEntry.make({
          pid,
          id: t.id,
          clock: t.clock,
          notify: t.notify as PosixTimerEntry['notify'],
          tid: t.notify & SIGEV.THREAD_ID ? t.target : null,
          signo: t.signo,
          value: hex(t.value),
          interval: { sec: Number(out.readBigInt64LE(off)), nsec: Number(out.readBigInt64LE(off + 8)) },
          remaining: { sec: Number(out.readBigInt64LE(off + 16)), nsec: Number(out.readBigInt64LE(off + 24)) },
        }),
      );
    });
  }
  inj.reset();
}
