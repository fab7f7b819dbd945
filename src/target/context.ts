import type { Injector } from '../native/inject.js';
import type { Husk } from '../native/husk.js';
import type { ImageReader } from '../image/format.js';
import { Sys } from '../native/syscalls.js';

const F_DUPFD = 0;

/** Where an object restored by one process lives: an fd of that process. */
export interface Home {
  pid: number;
  fd: number;
}

/**
 * Objects several processes of one image share (open file descriptions
 * inherited through fork, pipes, unlinked files, memfds, shared anonymous
 * memory). The first process that needs one creates it; later ones fetch it
 * from there with pidfd_getfd, so they share the very same kernel object.
 */
export interface SharedObjects {
  /** By kind and image id ("file:3", "pipe:0", "shmem:1", ...). */
  homes: Map<string, Home>;
  /** Shared anonymous memory, reachable through the first mapping's /proc/PID/map_files entry. */
  anonMappings: Map<number, { pid: number; start: number; end: number }>;
  /** Whether a pipe's own read/write descriptions (from pipe2) were handed out already, image-wide. */
  pipeEndsUsed: Map<number, { reader: boolean; writer: boolean }>;
}

export function newSharedObjects(): SharedObjects {
  return { homes: new Map(), anonMappings: new Map(), pipeEndsUsed: new Map() };
}

/** What every resource's restore gets: the husk that becomes the process, an injector into it, and the image. */
export interface RestoreContext {
  pid: number;
  image: ImageReader;
  husk: Husk;
  /** Injects into the thread-group leader. */
  injector: Injector;
  /** Every thread, the leader first, each with its own injector (sharing the leader's scratch). */
  threads: Array<{ tid: number; injector: Injector }>;
  /** fds in the husk that hold shared-memory objects (by shmem id), for mappings and fd entries of one object. */
  shmemFds: Map<number, number>;
  /** Husk fds Ferry opened for its own use, above every fd the image restores; closed before the process runs. */
  parkedFds: Set<number>;
  /** The lowest fd number that no restored fd uses: parked fds live from here up. */
  fdFloor: number;
  shared: SharedObjects;
  /**
   * A pid as the restored processes see it: the same outside a container;
   * inside one, the pid in its namespace. Injected syscalls that name a
   * process (pidfd_open, setpgid, rt_sigqueueinfo, ...) need this; Ferry's
   * own calls (ptrace, /proc) use host pids.
   */
  vpid: (hostPid: number) => number;
}

/** Brings another restored process's fd into this husk (the same kernel object) and parks it. */
export function fetchFd(ctx: RestoreContext, home: Home): number {
  if (home.pid === ctx.pid) return home.fd;
  const inj = ctx.injector;
  const pidfd = inj.call(`pidfd_open(${home.pid})`, Sys.pidfd_open, ctx.vpid(home.pid), 0);
  try {
    return parkFd(ctx, inj.call(`pidfd_getfd(${home.pid}, ${home.fd})`, Sys.pidfd_getfd, pidfd, home.fd, 0));
  } finally {
    inj.call('close', Sys.close, pidfd);
  }
}

/** Moves a husk fd above every fd number the image restores, so restoring fds never closes it by accident. */
export function parkFd(ctx: RestoreContext, fd: number): number {
  const parked = ctx.injector.call('fcntl(F_DUPFD)', Sys.fcntl, fd, F_DUPFD, ctx.fdFloor);
  ctx.injector.call('close', Sys.close, fd);
  ctx.parkedFds.add(parked);
  return parked;
}

/** Opens a path inside the husk; returns the husk's fd. */
export function openInHusk(ctx: RestoreContext, path: string, flags: number, mode = 0): number {
  const inj = ctx.injector;
  inj.reset();
  const p = inj.put(Buffer.from(path + '\0'));
  try {
    return inj.call(`open(${path})`, Sys.openat, -100, p, flags, mode);
  } finally {
    inj.reset();
  }
}
