import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Address, Bytes, Pid, U64Hex } from './fields.js';

const TimeVal = z.strictObject({ sec: z.number().int().nonnegative(), usec: z.number().int().min(0).max(999999) });

/** Process-wide signal state: dispositions, process-directed pending signals, interval timers. */
export const SignalsEntry = defineEntry(
  'signals',
  1,
  z.strictObject({
    pid: Pid,
    /** Every signal whose disposition is not the default (struct kernel_sigaction fields). */
    handlers: z.array(z.strictObject({ signo: z.number().int().min(1).max(64), handler: Address.or(z.literal(1)), flags: U64Hex, restorer: Address, mask: U64Hex })),
    /** Pending process-directed signals, raw siginfo_t, oldest first. */
    pending: z.array(Bytes),
    /** Armed interval timers: 0 ITIMER_REAL, 1 ITIMER_VIRTUAL, 2 ITIMER_PROF. */
    itimers: z.array(z.strictObject({ which: z.number().int().min(0).max(2), interval: TimeVal, value: TimeVal })),
  }),
);
export type SignalsEntry = Entry<typeof SignalsEntry>;
