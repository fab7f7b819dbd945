import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Pid, U64Hex } from './fields.js';
import { PageSegment } from './memory.js';

/**
 * Open files. A `file` entry is one open file description (what open(),
 * pipe() or eventfd() create: flags and offset live here); an `fd` entry is
 * one slot of a process's fd table pointing at a description. fds that were
 * dup'ed from one another share one `file`, so they still share one offset
 * after a restore. Objects a restore has to recreate rather than reopen
 * carry their contents in entries of their own: `pipe` (a pipe or FIFO
 * buffer, shared by its read and write descriptions) and `ghost-file` (an
 * unlinked regular file). memfds use the memory module's `shmem` entry, so
 * an fd and a mapping of one memfd stay one object.
 */

export const FILE_KINDS = ['path', 'unlinked', 'memfd', 'pipe', 'eventfd', 'epoll', 'signalfd', 'timerfd'] as const;

/** What a `path` file must be on the restoring host; `any` is an O_PATH fd, which opens whatever is there. */
export const NODE_TYPES = ['file', 'dir', 'chr', 'fifo', 'any'] as const;

const Time = z.strictObject({ sec: z.number().int().nonnegative(), nsec: z.number().int().min(0).max(999_999_999) });

export const FileEntry = defineEntry(
  'file',
  1,
  z.strictObject({
    id: z.number().int().nonnegative(),
    kind: z.enum(FILE_KINDS),
    /** The description's f_flags as F_GETFL shows them (access mode, O_APPEND, O_NONBLOCK, O_LARGEFILE, ...); never O_CLOEXEC, which belongs to an fd. */
    flags: z.number().int().nonnegative(),
    pos: z.number().int().nonnegative(),
    /** kind 'path': the file to open; 'unlinked': the name it had. */
    path: z.string().min(1).optional(),
    /** kind 'path': the path resolves only in the process's own root (a container's private mount such as its /tmp), not on the host. */
    inside: z.boolean().optional(),
    /** kind 'path': what must be at `path`; `rdev` ("major:minor") for devices. */
    node: z.strictObject({ type: z.enum(NODE_TYPES), rdev: z.string().optional() }).optional(),
    /** kind 'unlinked': the ghost-file entry with its contents. */
    ghost: z.number().int().nonnegative().optional(),
    /** kind 'memfd': the shmem entry of the memfd. */
    shmem: z.number().int().nonnegative().optional(),
    /** kind 'pipe': the pipe entry this description is an end of. */
    pipe: z.number().int().nonnegative().optional(),
    eventfd: z.strictObject({ count: U64Hex, semaphore: z.boolean() }).optional(),
    /** kind 'epoll': the watched files, by the fd number they were registered with. */
    epoll: z.array(z.strictObject({ fd: z.number().int().nonnegative(), events: z.number().int().nonnegative(), data: U64Hex })).optional(),
    signalfd: z.strictObject({ mask: U64Hex }).optional(),
    /** kind 'timerfd': `value` is the time left at the checkpoint, whatever `settimeFlags` say. */
    timerfd: z
      .strictObject({
        clock: z.number().int().nonnegative(),
        settimeFlags: z.number().int().nonnegative(),
        value: Time,
        interval: Time,
        ticks: U64Hex,
      })
      .optional(),
  }),
);
export type FileEntry = Entry<typeof FileEntry>;

/** One entry in a process's fd table. */
export const FdEntry = defineEntry(
  'fd',
  1,
  z.strictObject({
    pid: Pid,
    fd: z.number().int().nonnegative(),
    file: z.number().int().nonnegative(),
    cloexec: z.boolean(),
  }),
);
export type FdEntry = Entry<typeof FdEntry>;

/** A pipe's buffer: anonymous, or a FIFO at `path`. */
export const PipeEntry = defineEntry(
  'pipe',
  1,
  z.strictObject({
    id: z.number().int().nonnegative(),
    path: z.string().min(1).optional(),
    /** Capacity in bytes (F_GETPIPE_SZ). */
    size: z.number().int().positive(),
    /** Unread bytes, at `offset` in pages.bin. */
    data: z.strictObject({ offset: z.number().int().nonnegative(), length: z.number().int().positive() }).optional(),
  }),
);
export type PipeEntry = Entry<typeof PipeEntry>;

/** An open regular file whose last name was removed: recreated from its contents, under its old name, and unlinked again. */
export const GhostFileEntry = defineEntry(
  'ghost-file',
  1,
  z.strictObject({
    id: z.number().int().nonnegative(),
    path: z.string().min(1),
    mode: z.number().int().min(0).max(0o7777),
    uid: z.number().int().nonnegative(),
    gid: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    /** Pages of the contents that are not zero (holes and zero pages cost nothing). */
    segments: z.array(PageSegment),
  }),
);
export type GhostFileEntry = Entry<typeof GhostFileEntry>;
