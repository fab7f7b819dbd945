import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Bytes } from './fields.js';

/**
 * UNIX domain sockets. One `unix-socket` entry per socket; a socket is
 * always exactly one open file description, so the entry also stands for
 * the description: `fd` entries point at it through `file`, in the same id
 * space as `file` entries, and dup'ed fds keep sharing it.
 *
 * Sockets name each other by the inode they had on the checkpointed host:
 * a connection is two entries whose `peer` is the other's `ino`, which
 * stays true when the two ends live in different processes.
 *
 * States:
 *  - `unconnected`: never connected (a bound or unbound socket, a datagram
 *    socket that sends with sendto);
 *  - `listening`: `backlog`, and `pending`, the clients whose connections
 *    wait in the accept queue, oldest first (each client's state is
 *    `pending`);
 *  - `connected`: to `peer`. For stream and seqpacket sockets both ends say
 *    so; a datagram socket may be connected to one that is not connected
 *    back;
 *  - `pending`: a client whose connection its listener has not accepted;
 *  - `peer-closed`: the other end is gone. `peerName` is what getpeername()
 *    still answers, `reset` a pending ECONNRESET (the peer closed with
 *    unread data).
 *
 * Queued data is what this socket has to read; whoever sent it, the restore
 * sends it again from the peer (or from a socket bearing the `from` name of
 * each datagram), with the credentials it carried.
 */

export const UNIX_TYPES = ['stream', 'dgram', 'seqpacket'] as const;
export const UNIX_STATES = ['unconnected', 'listening', 'connected', 'pending', 'peer-closed'] as const;
export const UNIX_TIMESTAMPS = ['none', 'SO_TIMESTAMP', 'SO_TIMESTAMPNS', 'SO_TIMESTAMP_NEW', 'SO_TIMESTAMPNS_NEW'] as const;

const Ino = z.number().int().positive().max(2 ** 32 - 1);
const Id = z.number().int().nonnegative().max(2 ** 32 - 1);
/** SO_PEERCRED and SCM_CREDENTIALS: the pid and ids as the checkpointed process saw them. */
export const UnixCreds = z.strictObject({ pid: z.number().int().nonnegative(), uid: Id, gid: Id });
const Timeval = z.strictObject({ sec: z.number().int().nonnegative(), usec: z.number().int().min(0).max(999_999) });

export const UnixSocketEntry = defineEntry(
  'unix-socket',
  1,
  z.strictObject({
    /** The description's id, shared with `file` entries: `fd` entries name it. */
    file: z.number().int().nonnegative(),
    ino: Ino,
    kind: z.enum(UNIX_TYPES),
    /** The description's f_flags (O_RDWR, O_NONBLOCK, ...), never O_CLOEXEC. */
    flags: z.number().int().nonnegative(),
    state: z.enum(UNIX_STATES),
    /** The address, as sun_path bytes (a path ends with its NUL; an abstract name starts with one). Accepted sockets carry their listener's. */
    name: Bytes.optional(),
    /** A relative path name: the directory it was bound from. */
    bindDir: z.string().min(1).optional(),
    /** A path name whose socket file is still there: the file's permissions. Absent for a path whose file was removed (the name stays, the file does not). */
    node: z.strictObject({ mode: z.number().int().min(0).max(0o7777), uid: Id, gid: Id }).optional(),
    peer: Ino.optional(),
    peerName: Bytes.optional(),
    reset: z.boolean().optional(),
    backlog: z.number().int().nonnegative().optional(),
    pending: z.array(Ino).optional(),
    /** sk_shutdown: 1 reading, 2 writing, 3 both. */
    shutdown: z.number().int().min(0).max(3),
    /** SO_PEERCRED: who made the other end (on a listener: who called listen()). */
    peerCred: UnixCreds.optional(),
    options: z.strictObject({
      passcred: z.boolean(),
      passsec: z.boolean(),
      passpidfd: z.boolean(),
      passrights: z.boolean(),
      /** As getsockopt reports them: twice what setsockopt was given. */
      sndbuf: z.number().int().positive(),
      rcvbuf: z.number().int().positive(),
      rcvlowat: z.number().int().nonnegative(),
      /** -1 when the program never set one. */
      peekOff: z.number().int().min(-1),
      timestamp: z.enum(UNIX_TIMESTAMPS),
      timestamping: z.number().int().nonnegative(),
      rcvtimeo: Timeval,
      sndtimeo: Timeval,
    }),
    /** Bytes to be read, at `offset` in pages.bin, cut into `messages` (datagrams, records, or stream runs with equal credentials). */
    queue: z
      .strictObject({
        offset: z.number().int().nonnegative(),
        length: z.number().int().nonnegative(),
        messages: z.array(z.strictObject({ length: z.number().int().nonnegative(), from: Bytes.optional(), creds: UnixCreds.optional() })).min(1),
      })
      .optional(),
  }),
);
export type UnixSocketEntry = Entry<typeof UnixSocketEntry>;

/** The path of a path name (without its NUL); null for an abstract or empty name. */
export function unixPath(name: Uint8Array | undefined): string | null {
  if (!name || name.length < 2 || name[0] === 0) return null;
  const b = Buffer.from(name);
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString();
}

/** A name as a person reads it: a path, or @name for the abstract namespace (NULs shown as @, as ss and /proc/net/unix do). */
export function showUnixName(name: Uint8Array | undefined): string {
  if (!name?.length) return '(unbound)';
  return unixPath(name) ?? '@' + Buffer.from(name).subarray(1).toString('latin1').replace(/\0/g, '@');
}

export function sameUnixName(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return Buffer.from(a ?? []).equals(Buffer.from(b ?? []));
}
