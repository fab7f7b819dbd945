import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { LeaderPid, Pid, U64Hex } from './fields.js';

/** Process-wide attributes that are not credentials, memory, files or signals. */
export const ProcessEntry = defineEntry(
  'process',
  1,
  z.strictObject({
    pid: Pid,
    ppid: z.number().int().nonnegative(),
    pgid: LeaderPid,
    sid: LeaderPid,
    comm: z.string(),
    cwd: z.string(),
    root: z.string(),
    umask: z.number().int().min(0).max(0o777),
    personality: z.number().int().nonnegative(),
    rlimits: z.array(z.strictObject({ resource: z.number().int().min(0).max(15), soft: U64Hex, hard: U64Hex })),
    pdeathsig: z.number().int().min(0).max(64),
    dumpable: z.number().int().min(0).max(2),
    childSubreaper: z.boolean(),
    /** The signal the parent is sent when this process exits (usually SIGCHLD). */
    exitSignal: z.number().int().min(0).max(64),
    /** Thread ids in the order they are restored (the leader first). */
    threads: z.array(Pid).min(1),
  }),
);
export type ProcessEntry = Entry<typeof ProcessEntry>;

/**
 * A child that has exited and not been reaped yet: nothing of it remains but
 * its pid, its place in the tree and the status its parent will collect.
 */
export const ZombieEntry = defineEntry(
  'zombie',
  1,
  z.strictObject({
    pid: Pid,
    ppid: Pid,
    pgid: LeaderPid,
    sid: LeaderPid,
    /** The signal the parent is sent when this child exits (usually SIGCHLD). */
    exitSignal: z.number().int().min(0).max(64),
    /** The wait status the parent will read (exit code << 8, or the killing signal). */
    status: z.number().int().nonnegative().max(0xffff),
  }),
);
export type ZombieEntry = Entry<typeof ZombieEntry>;
