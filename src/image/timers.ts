import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Pid, U64Hex } from './fields.js';

const Time = z.strictObject({ sec: z.number().int().nonnegative(), nsec: z.number().int().min(0).max(999_999_999) });

/**
 * One POSIX timer (timer_create). Timers belong to the thread group, so the
 * entry names the process; a SIGEV_THREAD_ID timer also names the thread it
 * signals.
 */
export const PosixTimerEntry = defineEntry(
  'posix-timer',
  1,
  z.strictObject({
    pid: Pid,
    /** The timer_t the process holds: restored exactly. */
    id: z.number().int().min(0).max(0x7fffffff),
    /** The kernel's it_clock: CLOCK_* (>= 0), or a CPU clock as clock_getcpuclockid() encodes it (-6 the process's, -2 the creating thread's). */
    clock: z.number().int(),
    /** sigev_notify: 0 SIGEV_SIGNAL, 1 SIGEV_NONE, 2 SIGEV_THREAD, 4 SIGEV_SIGNAL|SIGEV_THREAD_ID. */
    notify: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(4)]),
    /** The thread a SIGEV_THREAD_ID timer signals; null for the other kinds. */
    tid: Pid.nullable(),
    /** sigev_signo (kept as given even for SIGEV_NONE, where the kernel does not use it). */
    signo: z.number().int(),
    /** sigev_value, all 64 bits. */
    value: U64Hex,
    interval: Time,
    /** Time to the next expiry when the process was frozen, on the timer's clock; zero when disarmed. */
    remaining: Time,
  }),
);
export type PosixTimerEntry = Entry<typeof PosixTimerEntry>;
