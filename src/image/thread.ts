import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Address, Bytes, Pid, U64Hex } from './fields.js';

/** One thread: CPU state and the per-thread kernel state a restore must set. */
export const ThreadEntry = defineEntry(
  'thread',
  1,
  z.strictObject({
    pid: Pid,
    tid: Pid,
    comm: z.string(),
    /** struct user_regs_struct as PTRACE_GETREGSET NT_PRSTATUS returned it. */
    regs: Bytes,
    /** The XSAVE area (NT_X86_XSTATE). */
    xstate: Bytes,
    sigmask: U64Hex,
    /** set_tid_address() value (clear_child_tid). */
    clearChildTid: Address,
    robustList: z.strictObject({ head: Address, len: z.number().int().nonnegative() }),
    rseq: z.strictObject({ addr: Address, size: z.number().int().nonnegative(), signature: z.number().int().nonnegative() }).nullable(),
    /** sigaltstack(): the alternate signal stack, or null when disabled. */
    altstack: z.strictObject({ sp: Address, flags: z.number().int(), size: z.number().int().nonnegative() }).nullable(),
    /** Pending thread-directed signals, raw siginfo_t (128 bytes each), oldest first. */
    pending: z.array(Bytes),
    /** Scheduling niceness (setpriority is per thread on Linux). */
    nice: z.number().int().min(-20).max(19),
    /** prctl(PR_GET_TIMERSLACK), in nanoseconds. */
    timerSlackNs: z.number().int().nonnegative(),
  }),
);
export type ThreadEntry = Entry<typeof ThreadEntry>;
