import type { Injector } from '../native/inject.js';
import type { Husk } from '../native/husk.js';
import type { ImageReader } from '../image/format.js';
import { Sys } from '../native/syscalls.js';

const F_DUPFD = 0;

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
}

/** Moves a husk fd above every fd number the image restores, so restoring fds never closes it by accident. */
export function parkFd(ctx: RestoreContext, fd: number): number {
  const parked = ctx.injector.call('fcntl(F_DUPFD)', Sys.fcntl, fd, F_DUPFD, ctx.fdFloor);
  ctx.injector.call('close', Sys.close, fd);
  ctx.parkedFds.add(parked);
  return parked;
}

export function closeParkedFd(ctx: RestoreContext, fd: number): void {
  ctx.injector.call('close', Sys.close, fd);
  ctx.parkedFds.delete(fd);
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
