import type { Injector } from '../native/inject.js';
import type { Husk } from '../native/husk.js';
import type { ImageReader } from '../image/format.js';
import type { ContainerEntry } from '../image/container.js';
import { Sys } from '../native/syscalls.js';

const F_DUPFD = 0;

/** Where an object restored by one process lives: an fd of that process (its live pid). */
export interface Home {
  pid: number;
  fd: number;
}

/**
 * The pids of an image and the pids the restore gave them. Three numbers
 * name one task: its image pid (the host pid where it was checkpointed,
 * which every entry is keyed by), its live pid (the host pid it has now,
 * which ptrace, /proc and Ferry's own syscalls need) and its vpid (the pid
 * the restored processes know it by, which injected calls that name a
 * process need). A bare tree gets its image pids back exactly, so all three
 * are the same. A container gets back only its pids inside, from a fresh
 * pid namespace; its host pids are whatever this host hands out, since the
 * image's may be taken here (by anything: another host's pids, or a later
 * run on this one). Live pids are known only once the husk or thread
 * exists: the tree and threads record them as they clone.
 */
export class PidTranslation {
  private readonly live = new Map<number, number>();
  private readonly image = new Map<number, number>();
  private readonly inside: Map<number, number> | null;

  constructor(private readonly box: ContainerEntry | null) {
    this.inside = box ? new Map(box.pids) : null;
  }

  /** Whether the restore needs the image's host pids free (a bare tree) or only its pids inside a new namespace (a container). */
  get keepsHostPids(): boolean {
    return this.inside === null;
  }

  /** The pid the restored processes know an image pid by. */
  vpid(imagePid: number): number {
    if (!this.inside) return imagePid;
    const inner = this.inside.get(imagePid);
    if (inner === undefined) throw new Error(`pid ${imagePid} is not in container ${this.box!.name}`);
    return inner;
  }

  /** clone3's set_tid for an image pid: the exact pid, or in a container only the innermost level (the kernel picks the host's). */
  setTid(imagePid: number): number[] {
    return [this.vpid(imagePid)];
  }

  /** Notes the pid the kernel gave the task restored for `imagePid`. */
  record(imagePid: number, livePid: number): void {
    this.live.set(imagePid, livePid);
    this.image.set(livePid, imagePid);
  }

  /** The live pid of an image pid whose task exists. */
  liveOf(imagePid: number): number {
    const pid = this.live.get(imagePid);
    if (pid === undefined) throw new Error(`pid ${imagePid} of the image has not been restored (yet)`);
    return pid;
  }

  /** The image pid of a restored task, to find its entries. */
  imageOf(livePid: number): number {
    const pid = this.image.get(livePid);
    if (pid === undefined) throw new Error(`pid ${livePid} is not a task this restore made`);
    return pid;
  }

  /** The container entry's [host pid, pid inside] pairs, with the host pids this restore got in place of the image's. */
  containerPids(): Array<[number, number]> {
    if (!this.box) throw new Error('the image holds no container');
    return this.box.pids.map(([host, inner]) => [this.liveOf(host), inner]);
  }
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

/**
 * What every resource's restore gets: the husk that becomes the process, an
 * injector into it, and the image. Entries are found by `imagePid` (and a
 * thread's `imageTid`); everything that reaches the kernel uses `pid` and
 * `tid`, the live ones (see PidTranslation).
 */
export interface RestoreContext {
  /** The live pid. */
  pid: number;
  /** The pid the image knows the process by. */
  imagePid: number;
  image: ImageReader;
  husk: Husk;
  /** Injects into the thread-group leader. */
  injector: Injector;
  /** Every thread, the leader first, each with its live tid, its tid in the image and its own injector (sharing the leader's scratch). */
  threads: Array<{ tid: number; imageTid: number; injector: Injector }>;
  /** fds in the husk that hold shared-memory objects (by shmem id), for mappings and fd entries of one object. */
  shmemFds: Map<number, number>;
  /** Husk fds Ferry opened for its own use, above every fd the image restores; closed before the process runs. */
  parkedFds: Set<number>;
  /** The lowest fd number that no restored fd uses: parked fds live from here up. */
  fdFloor: number;
  shared: SharedObjects;
  pids: PidTranslation;
}

/** Brings another restored process's fd into this husk (the same kernel object) and parks it. */
export function fetchFd(ctx: RestoreContext, home: Home): number {
  if (home.pid === ctx.pid) return home.fd;
  const inj = ctx.injector;
  const pidfd = inj.call(`pidfd_open(${home.pid})`, Sys.pidfd_open, ctx.pids.vpid(ctx.pids.imageOf(home.pid)), 0);
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
