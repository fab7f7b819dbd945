import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';

export const WAIT = { WNOHANG: 1, WUNTRACED: 2, WEXITED: 4, WCONTINUED: 8, WNOTHREAD: 0x20000000, WALL: 0x40000000 } as const;

export type WaitStatus =
  | { kind: 'exited'; pid: number; code: number }
  | { kind: 'killed'; pid: number; signal: number; core: boolean }
  | { kind: 'stopped'; pid: number; signal: number; event: number }
  | { kind: 'continued'; pid: number };

export function decodeWaitStatus(pid: number, status: number): WaitStatus {
  const low = status & 0x7f;
  if (low === 0) return { kind: 'exited', pid, code: (status >> 8) & 0xff };
  if ((status & 0xff) === 0x7f) return { kind: 'stopped', pid, signal: (status >> 8) & 0xff, event: (status >>> 16) & 0xffff };
  if (status === 0xffff) return { kind: 'continued', pid };
  return { kind: 'killed', pid, signal: low, core: (status & 0x80) !== 0 };
}

const statusBuf = Buffer.alloc(4);
const statusAddr = addressOf(statusBuf);
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** wait4(pid, __WALL | flags); null when WNOHANG finds nothing. */
export function waitpid(pid: number, flags = 0): WaitStatus | null {
  for (;;) {
    try {
      const got = syscall(`wait4(${pid})`, Sys.wait4, pid, statusAddr, flags | WAIT.WALL, 0);
      if (got === 0) return null;
      return decodeWaitStatus(got, statusBuf.readInt32LE(0));
    } catch (e) {
      if (e instanceof NativeError && e.errno === Errno.EINTR) continue;
      throw e;
    }
  }
}

/**
 * Waits for the next state change of `pid`, giving up after `timeoutMs`.
 * The kernel has no wait with a timeout, so this polls with a backoff from
 * 20 µs to 2 ms: fast for the common case of a stop that is microseconds
 * away, cheap when a task takes long (a freezer thaw, a task in D state).
 */
export function waitpidTimeout(pid: number, timeoutMs: number, flags = 0): WaitStatus {
  const deadline = performance.now() + timeoutMs;
  let pauseUs = 20;
  for (;;) {
    const st = waitpid(pid, flags | WAIT.WNOHANG);
    if (st) return st;
    if (performance.now() >= deadline) throw new NativeError(`wait4(${pid})`, Errno.ETIMEDOUT, `no state change within ${timeoutMs} ms`);
    Atomics.wait(sleepCell, 0, 0, pauseUs / 1000);
    pauseUs = Math.min(pauseUs * 2, 2000);
  }
}

/** Waits until `pid` has ended (skipping stops) and returns how; the pid is free afterwards. */
export function reap(pid: number, timeoutMs?: number): WaitStatus {
  for (;;) {
    const st = timeoutMs === undefined ? waitpid(pid) : waitpidTimeout(pid, timeoutMs);
    if (st && (st.kind === 'exited' || st.kind === 'killed')) return st;
  }
}
