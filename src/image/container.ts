import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { PageSegment } from './memory.js';
import { Pid } from './fields.js';

const Time = z.strictObject({ sec: z.number().int(), nsec: z.number().int().min(0).max(999_999_999) });

/**
 * A container (`migrate run`): what its namespaces and cgroup held that is
 * not part of any process. Pids elsewhere in the image are the checkpointed
 * host's; this entry maps each to the pid the container sees. A restore
 * gives back only the pids inside (clone3's set_tid sets the innermost
 * level): the host pids are whatever the restoring host hands out.
 */
export const ContainerEntry = defineEntry(
  'container',
  1,
  z.strictObject({
    name: z.string().min(1),
    hostname: z.string(),
    command: z.array(z.string()),
    executable: z.string(),
    cwd: z.string(),
    env: z.record(z.string(), z.string()),
    limits: z.strictObject({ memoryBytes: z.number().int().positive().nullable(), cpus: z.number().positive().nullable() }),
    /** CLOCK_MONOTONIC and CLOCK_BOOTTIME as the container read them while frozen: a restore continues them from there. */
    clocks: z.strictObject({ monotonic: Time, boottime: Time }),
    /** [host pid, pid inside] of every process and thread. */
    pids: z.array(z.tuple([Pid, Pid])),
    /**
     * The log its output went to on the checkpointed host (the agent's file,
     * not the container's). fds on it reopen the restoring host's log for
     * the container: each host keeps the log of what ran there.
     */
    log: z.string().optional(),
  }),
);
export type ContainerEntry = Entry<typeof ContainerEntry>;

/** One file, directory or symlink of the container's private /tmp (a tmpfs, whose contents migrate). */
export const TmpfsFileEntry = defineEntry(
  'tmpfs-file',
  1,
  z.strictObject({
    /** Path relative to /tmp; parents come before their children. */
    path: z.string().min(1),
    kind: z.enum(['file', 'dir', 'symlink']),
    mode: z.number().int().min(0).max(0o7777),
    uid: z.number().int().nonnegative(),
    gid: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    target: z.string().optional(),
    segments: z.array(PageSegment),
  }),
);
export type TmpfsFileEntry = Entry<typeof TmpfsFileEntry>;
