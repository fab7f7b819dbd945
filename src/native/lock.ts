import { syscall } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { open, close, OpenFlags } from './process.js';
import { O_CLOEXEC } from './flags.js';

const LOCK_EX = 2;
const LOCK_NB = 4;

/**
 * Takes an exclusive flock(2) on `path` (created if missing) without
 * waiting. Returns the function that releases it, or null when another
 * process holds it. The kernel drops the lock when its holder dies, so a
 * crashed holder never leaves a stale lock behind, unlike a lock file that
 * exists or not.
 */
export function tryLockFile(path: string): (() => void) | null {
  const fd = open(path, OpenFlags.O_RDWR | OpenFlags.O_CREAT | O_CLOEXEC, 0o600);
  try {
    syscall(`flock(${path}, LOCK_EX|LOCK_NB)`, Sys.flock, fd, LOCK_EX | LOCK_NB);
  } catch (e) {
    close(fd);
    if (e instanceof NativeError && e.errno === Errno.EAGAIN) return null;
    throw e;
  }
  return () => close(fd);
}
