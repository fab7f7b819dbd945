/**
 * Mount tables and the mount calls a container's init makes. The calls run
 * inside a ptrace-stopped task through its Injector, because a mount
 * namespace can only be changed from a task inside it.
 */
import { cString } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { readProcFile } from './proc.js';
import type { Injector } from './inject.js';


export const MS = {
  RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8, REMOUNT: 0x20, BIND: 0x1000,
  REC: 0x4000, PRIVATE: 0x40000, STRICTATIME: 0x1000000,
} as const;

const MNT_DETACH = 2;
const AT_FDCWD = -100;
const AT_RECURSIVE = 0x8000;
const MOUNT_ATTR_RDONLY = 0x1;
const MOUNT_ATTR_SIZE = 32;
const S_IFCHR = 0o020000;

export interface MountInfo {
  mountId: number;
  parentId: number;
  /** The directory of the filesystem that is mounted (not "/" for bind mounts of a subdirectory). */
  root: string;
  mountPoint: string;
  /** Per-mount options: rw/ro, nosuid, nodev, noexec, ... */
  options: string[];
  fsType: string;
  source: string;
  /** Per-superblock options; for cgroup v1 these name the controllers. */
  superOptions: string[];
}

/** A process's mount table as its mount namespace sees it (/proc/PID/mountinfo, proc(5)). */
export function listMounts(pid: number | 'self'): MountInfo[] {
  return readProcFile(`/proc/${pid}/mountinfo`)
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => {
      const [head, tail] = line.split(' - ') as [string, string];
      const f = head.split(' ');
      const [fsType, source, superOptions] = tail.split(' ');
      return {
        mountId: Number(f[0]),
        parentId: Number(f[1]),
        root: unescapeField(f[3]!),
        mountPoint: unescapeField(f[4]!),
        options: f[5]!.split(','),
        fsType: fsType!,
        source: unescapeField(source ?? ''),
        superOptions: (superOptions ?? '').split(','),
      };
    });
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...). */
function unescapeField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/**
 * Each function below owns the injector's scratch memory while it runs:
 * it starts from a reset scratch and leaves it reset.
 */
function withStrings<T>(inj: Injector, strings: Array<string | null>, use: (addrs: number[]) => T): T {
  inj.reset();
  try {
    return use(strings.map((s) => (s === null ? 0 : inj.put(cString(s)))));
  } finally {
    inj.reset();
  }
}

export interface MountRequest {
  source?: string;
  target: string;
  fsType?: string;
  flags?: number;
  /** Filesystem options, e.g. "mode=1777,size=64m" for tmpfs. */
  data?: string;
}

/** mount(2) in the task. */
export function mountIn(inj: Injector, m: MountRequest): void {
  withStrings(inj, [m.source ?? null, m.target, m.fsType ?? null, m.data ?? null], ([src, target, type, data]) =>
    inj.call(`mount(${m.fsType ?? m.source ?? ''} on ${m.target})`, Sys.mount, src!, target!, type!, m.flags ?? 0, data!),
  );
}

/**
 * Lazily detaches whatever is mounted at `target`, with everything below it.
 * Returns false when nothing was mounted there (EINVAL), which is not an
 * error for a caller that only wants the place clear.
 */
export function detachIn(inj: Injector, target: string): boolean {
  return withStrings(inj, [target], ([path]) => {
    const r = inj.callRaw(Sys.umount2, path!, MNT_DETACH);
    if (r === BigInt(-Errno.EINVAL)) return false;
    if (r < 0n) throw new NativeError(`umount2(${target}, MNT_DETACH) (injected into ${inj.pid})`, Number(-r));
    return true;
  });
}

/** Makes the mount at `target` and every mount below it read-only (mount_setattr, 5.12+); a plain remount would only change the top one. */
export function makeReadOnlyIn(inj: Injector, target: string): void {
  withStrings(inj, [target], ([path]) => {
    const attr = Buffer.alloc(MOUNT_ATTR_SIZE);
    attr.writeBigUInt64LE(BigInt(MOUNT_ATTR_RDONLY), 0);
    const attrAddr = inj.put(attr);
    inj.call(`mount_setattr(${target}, AT_RECURSIVE, MOUNT_ATTR_RDONLY)`, Sys.mount_setattr, AT_FDCWD, path!, AT_RECURSIVE, attrAddr, MOUNT_ATTR_SIZE);
  });
}

/**
 * Makes `newRoot` (a mount point) the task's root and drops the old root
 * from its mount namespace. pivot_root(".", ".") stacks the old root on top
 * of the new one, so it can be detached without a directory to park it in.
 */
export function pivotRootIn(inj: Injector, newRoot: string): void {
  withStrings(inj, [newRoot, '.', '/'], ([root, dot, slash]) => {
    inj.call(`chdir(${newRoot})`, Sys.chdir, root!);
    inj.call(`pivot_root(${newRoot})`, Sys.pivot_root, dot!, dot!);
    inj.call('umount2(old root, MNT_DETACH)', Sys.umount2, dot!, MNT_DETACH);
    inj.call('chdir(/)', Sys.chdir, slash!);
  });
}

export function mkdirIn(inj: Injector, path: string, mode: number): void {
  withStrings(inj, [path], ([p]) => inj.call(`mkdir(${path})`, Sys.mkdirat, AT_FDCWD, p!, mode));
}

/** Creates a character device node; `mode` is the permission bits. */
export function mknodCharIn(inj: Injector, path: string, mode: number, major: number, minor: number): void {
  // The kernel's new_encode_dev layout, which is what mknod's dev_t carries on x86_64.
  const dev = (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
  withStrings(inj, [path], ([p]) => inj.call(`mknod(${path})`, Sys.mknodat, AT_FDCWD, p!, S_IFCHR | mode, dev));
}

export function symlinkIn(inj: Injector, target: string, path: string): void {
  withStrings(inj, [target, path], ([t, p]) => inj.call(`symlink(${path} -> ${target})`, Sys.symlinkat, t!, AT_FDCWD, p!));
}
