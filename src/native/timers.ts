import { syscall } from './libc.js';
import { isNativeError } from './errors.js';
import { readProcFile } from './proc.js';
import { Sys } from './syscalls.js';

/**
 * prctl(PR_TIMER_CREATE_RESTORE_IDS) (include/uapi/linux/prctl.h, Linux
 * 6.15+): while ON, timer_create() reads the id it must give the new timer
 * from *timerid (EBUSY if taken) and moves the process's id counter past it.
 * The flag belongs to the whole thread group, so it must be OFF again before
 * the process runs: its own timer_create() calls would read garbage ids.
 */
export const PR_TIMER_CREATE_RESTORE_IDS = 77;
export const PR_TIMER_CREATE_RESTORE_IDS_OFF = 0;
export const PR_TIMER_CREATE_RESTORE_IDS_ON = 1;
const PR_TIMER_CREATE_RESTORE_IDS_GET = 2;

/** sigev_notify values (asm-generic/siginfo.h). SIGEV_THREAD_ID is a flag on SIGEV_SIGNAL. */
export const SIGEV = { SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const;

const NOTIFY_NAMES: Record<string, number> = { signal: SIGEV.SIGNAL, none: SIGEV.NONE, thread: SIGEV.THREAD };

/** One POSIX timer as /proc/PID/timers shows it. */
export interface ProcTimer {
  id: number;
  signo: number;
  /** sigev_value, all 64 bits (the kernel prints sival_ptr). */
  value: bigint;
  /** sigev_notify as given to timer_create (SIGEV_* with SIGEV_THREAD_ID folded in). */
  notify: number;
  /** The thread (SIGEV_THREAD_ID) or process the timer signals, in the pid namespace of our /proc. */
  target: number;
  /** it_clock: a CLOCK_* id, or a CPU clock in the encoding of clock_getcpuclockid (negative). */
  clock: number;
}

/** The POSIX timers of a process (they belong to its thread group), by ascending id. */
export function readPosixTimers(pid: number): ProcTimer[] {
  const path = `/proc/${pid}/timers`;
  const text = readProcFile(path);
  const out: ProcTimer[] = [];
  const block = /ID: (-?\d+)\nsignal: (-?\d+)\/([0-9a-f]+)\nnotify: (\w+)\/(pid|tid)\.(\d+)\nClockID: (-?\d+)\n/y;
  let at = 0;
  while (at < text.length) {
    block.lastIndex = at;
    const m = block.exec(text);
    if (!m) throw new Error(`${path}: unparsable text at byte ${at}: ${JSON.stringify(text.slice(at, at + 80))}`);
    at = block.lastIndex;
    const kind = NOTIFY_NAMES[m[4]!];
    if (kind === undefined) throw new Error(`${path}: unknown notification "${m[4]}" of timer ${m[1]}`);
    out.push({
      id: Number(m[1]),
      signo: Number(m[2]),
      value: BigInt(`0x${m[3]}`),
      notify: kind | (m[5] === 'tid' ? SIGEV.THREAD_ID : 0),
      target: Number(m[6]),
      clock: Number(m[7]),
    });
  }
  return out.sort((a, b) => a.id - b.id);
}

/**
 * Whether this kernel can create a timer with a chosen id. Asked of Ferry's
 * own process with the read-only GET, which older kernels reject as EINVAL.
 */
export function timerIdRestoreSupported(): boolean {
  try {
    syscall('prctl(PR_TIMER_CREATE_RESTORE_IDS, GET)', Sys.prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0);
    return true;
  } catch (e) {
    if (isNativeError(e, 'EINVAL')) return false;
    throw e;
  }
}
