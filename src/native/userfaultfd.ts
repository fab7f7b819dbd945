/**
 * userfaultfd write-protection, for dirty tracking (include/uapi/linux/userfaultfd.h,
 * Documentation/admin-guide/mm/userfaultfd.rst).
 *
 * A userfaultfd belongs to the address space of the process that created
 * it, so it is created inside the tracked process by an injected syscall.
 * The file is then taken into Ferry with pidfd_getfd and closed in the
 * process: every ioctl works on the context's address space whoever issues
 * it (verified on 6.18: UFFDIO_API, UFFDIO_REGISTER and UFFDIO_UNREGISTER
 * from the tracer all act on the tracked process). That leaves the
 * process's fd table as the program made it (a checkpoint never meets a
 * userfaultfd there), lets ranges be registered while the process runs,
 * and ties the tracking to Ferry's life: when the last reference is
 * closed, by stop() or by the agent dying, the kernel unregisters every
 * range and clears the write-protect bits.
 */
import fs from 'node:fs';
import { syscall } from './libc.js';
import { asNative } from './memory.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { O_CLOEXEC, O_NONBLOCK } from './flags.js';
import { ioctl, pidfdOpen, pidfdGetfd, close } from './process.js';
import type { Injector } from './inject.js';

/** userfaultfd(2) flag: handle faults of user mode only, which the kernel allows without privilege (vm.unprivileged_userfaultfd=0). */
export const UFFD_USER_MODE_ONLY = 1;
export const UFFD_API = 0xaa;

/** uffdio_api.features bits. */
export const UFFD_FEATURE = {
  PAGEFAULT_FLAG_WP: 1n << 0n,
  EVENT_FORK: 1n << 1n,
  EVENT_REMAP: 1n << 2n,
  EVENT_REMOVE: 1n << 3n,
  MISSING_HUGETLBFS: 1n << 4n,
  MISSING_SHMEM: 1n << 5n,
  EVENT_UNMAP: 1n << 6n,
  SIGBUS: 1n << 7n,
  THREAD_ID: 1n << 8n,
  MINOR_HUGETLBFS: 1n << 9n,
  MINOR_SHMEM: 1n << 10n,
  EXACT_ADDRESS: 1n << 11n,
  WP_HUGETLBFS_SHMEM: 1n << 12n,
  /** Write-protection also covers pages never populated (pte markers); implied by WP_ASYNC. */
  WP_UNPOPULATED: 1n << 13n,
  POISON: 1n << 14n,
  /** A write to a protected page is resolved by the kernel, which only clears the page's protection: nothing waits for a reader. */
  WP_ASYNC: 1n << 15n,
  MOVE: 1n << 16n,
} as const;

export const UFFDIO_REGISTER_MODE = { MISSING: 1n, WP: 2n, MINOR: 4n } as const;
export const UFFDIO_WRITEPROTECT_MODE = { WP: 1n, DONTWAKE: 2n } as const;

/** _IOWR/_IOR(0xAA, nr, struct): direction in bits 30-31, size in 16-29, type 8-15, number 0-7. */
function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) >>> 0) + ((size << 16) | (UFFD_API << 8) | nr);
}
const IOC_READ = 2;
const IOC_READ_WRITE = 3;

/** struct uffdio_api { u64 api, features, ioctls } */
export const UFFDIO_API_SIZE = 24;
/** struct uffdio_range { u64 start, len } */
export const UFFDIO_RANGE_SIZE = 16;
/** struct uffdio_register { uffdio_range range; u64 mode, ioctls } */
export const UFFDIO_REGISTER_SIZE = 32;
/** struct uffdio_writeprotect { uffdio_range range; u64 mode } */
export const UFFDIO_WRITEPROTECT_SIZE = 24;

export const UFFDIO = {
  API: ioc(IOC_READ_WRITE, 0x3f, UFFDIO_API_SIZE),
  REGISTER: ioc(IOC_READ_WRITE, 0x00, UFFDIO_REGISTER_SIZE),
  UNREGISTER: ioc(IOC_READ, 0x01, UFFDIO_RANGE_SIZE),
  WRITEPROTECT: ioc(IOC_READ_WRITE, 0x06, UFFDIO_WRITEPROTECT_SIZE),
} as const;

export function uffdioApi(features: bigint): Buffer {
  const b = Buffer.alloc(UFFDIO_API_SIZE);
  b.writeBigUInt64LE(BigInt(UFFD_API), 0);
  b.writeBigUInt64LE(features, 8);
  return b;
}

export function uffdioRange(start: number, len: number): Buffer {
  const b = Buffer.alloc(UFFDIO_RANGE_SIZE);
  b.writeBigUInt64LE(BigInt(start), 0);
  b.writeBigUInt64LE(BigInt(len), 8);
  return b;
}

export function uffdioRegister(start: number, len: number, mode: bigint): Buffer {
  const b = Buffer.alloc(UFFDIO_REGISTER_SIZE);
  uffdioRange(start, len).copy(b, 0);
  b.writeBigUInt64LE(mode, 16);
  return b;
}

export function uffdioWriteprotect(start: number, len: number, mode: bigint): Buffer {
  const b = Buffer.alloc(UFFDIO_WRITEPROTECT_SIZE);
  uffdioRange(start, len).copy(b, 0);
  b.writeBigUInt64LE(mode, 16);
  return b;
}

/** The flags Ferry creates a tracking userfaultfd with. */
export const UFFD_CREATE_FLAGS = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;

/** The features dirty tracking needs: asynchronous write-protection (which implies WP_UNPOPULATED). */
export const TRACKING_FEATURES = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;

/** Names of the feature bits set in `features`, for messages. */
export function featureNames(features: bigint): string[] {
  return Object.entries(UFFD_FEATURE)
    .filter(([, bit]) => (features & bit) !== 0n)
    .map(([name]) => name);
}

/**
 * A userfaultfd held by Ferry. `pid` is the process whose address space it
 * tracks (which is not ours).
 */
export class Userfaultfd {
  private closed = false;

  constructor(
    readonly fd: number,
    readonly pid: number,
  ) {}

  /**
   * Creates a userfaultfd inside the stopped task behind `injector` and
   * takes it over: the task's copy is closed before this returns, so its
   * fd table ends as it was. An error of the injected call (a seccomp
   * filter or an LSM refusing userfaultfd, say) is thrown as the task saw it.
   */
  static createIn(injector: Injector, pid: number): Userfaultfd {
    const remote = injector.call('userfaultfd', Sys.userfaultfd, UFFD_CREATE_FLAGS);
    let local = -1;
    let failure: unknown = null;
    try {
      const pidfd = pidfdOpen(pid);
      try {
        local = pidfdGetfd(pidfd, remote);
      } finally {
        close(pidfd);
      }
    } catch (e) {
      failure = e;
    }
    try {
      injector.call('close', Sys.close, remote);
    } catch (e) {
      failure ??= e;
    }
    if (failure) {
      if (local >= 0) close(local);
      throw failure;
    }
    return new Userfaultfd(local, pid);
  }

  /** UFFDIO_API, once per userfaultfd: asks for `features`; returns those the kernel granted. */
  api(features: bigint): bigint {
    const b = uffdioApi(features);
    this.ioctl('UFFDIO_API', UFFDIO.API, b);
    return b.readBigUInt64LE(8);
  }

  /** UFFDIO_REGISTER in write-protect mode; registering a range again is a no-op. Returns the ioctls allowed on it. */
  registerWp(start: number, len: number): bigint {
    const b = uffdioRegister(start, len, UFFDIO_REGISTER_MODE.WP);
    this.ioctl(`UFFDIO_REGISTER(0x${start.toString(16)}+0x${len.toString(16)})`, UFFDIO.REGISTER, b);
    return b.readBigUInt64LE(24);
  }

  /** UFFDIO_UNREGISTER: the kernel also clears the range's write-protect bits. */
  unregister(start: number, len: number): void {
    this.ioctl(`UFFDIO_UNREGISTER(0x${start.toString(16)}+0x${len.toString(16)})`, UFFDIO.UNREGISTER, uffdioRange(start, len));
  }

  /** UFFDIO_WRITEPROTECT: protect (`on`) or unprotect a registered range. With WP_UNPOPULATED this populates page tables for the whole range. */
  writeProtect(start: number, len: number, on: boolean): void {
    const b = uffdioWriteprotect(start, len, on ? UFFDIO_WRITEPROTECT_MODE.WP : 0n);
    this.ioctl(`UFFDIO_WRITEPROTECT(0x${start.toString(16)}+0x${len.toString(16)})`, UFFDIO.WRITEPROTECT, b);
  }

  /** Closes Ferry's reference; when it is the last, the kernel unregisters everything (userfaultfd_release). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private ioctl(name: string, request: number, arg: Buffer): void {
    if (this.closed) throw new NativeError(`${name} on the userfaultfd of ${this.pid}`, Errno.EBADF, 'after close');
    try {
      ioctl(this.fd, request, arg);
    } catch (e) {
      if (e instanceof NativeError) throw new NativeError(`${name} for ${this.pid}`, e.errno);
      throw e;
    }
  }
}

/** The process's own userfaultfds: its fds that link to anon_inode:[userfaultfd]. */
export function userfaultfdsOf(pid: number): number[] {
  const out: number[] = [];
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch (e) {
    throw asNative(e, `readdir(/proc/${pid}/fd)`);
  }
  for (const fd of fds) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]') out.push(Number(fd));
    } catch {
      // closed while we looked
    }
  }
  return out.sort((a, b) => a - b);
}

export interface UffdProbe {
  /** userfaultfd(2) works here (in Ferry's own process). */
  available: boolean;
  /** Every feature the kernel offers (0n when unavailable). */
  features: bigint;
  /** Why it is unavailable, when it is. */
  error?: string;
}

/**
 * What the kernel's userfaultfd offers, asked in Ferry's own process: a
 * throw-away userfaultfd, UFFDIO_API with no features (which reports all of
 * them), closed again. Whether a given process may create one (a seccomp
 * filter may forbid it) only shows when tracking starts in it.
 */
export function probeUserfaultfd(): UffdProbe {
  let fd: number;
  try {
    fd = syscall('userfaultfd', Sys.userfaultfd, UFFD_CREATE_FLAGS);
  } catch (e) {
    return { available: false, features: 0n, error: (e as Error).message };
  }
  try {
    const b = uffdioApi(0n);
    ioctl(fd, UFFDIO.API, b);
    return { available: true, features: b.readBigUInt64LE(8) };
  } catch (e) {
    return { available: false, features: 0n, error: (e as Error).message };
  } finally {
    close(fd);
  }
}
