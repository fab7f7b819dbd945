import { NativeError, isNativeError } from './errors.js';
import { listThreads } from './proc.js';
import { Errno } from './errno.js';
import * as ptrace from './ptrace.js';
import { waitpidTimeout, type WaitStatus } from './wait.js';

export interface AttachOptions {
  /** ptrace options for PTRACE_SEIZE (PTRACE_O_*). */
  options?: number;
  /** How long to wait for the task to stop (a frozen or D-state task stops only when it can). */
  timeoutMs?: number;
}

/**
 * Seizes a task and brings it to a ptrace-stop without sending it anything it
 * could observe (no SIGSTOP). A signal that races with the interrupt is
 * delivered normally first (the interrupt stays pending), so the task sees
 * exactly what it would have seen without us.
 */
export function attachAndStop(tid: number, opts: AttachOptions = {}): void {
  ptrace.seize(tid, opts.options ?? 0);
  try {
    ptrace.interrupt(tid);
    waitForTrapStop(tid, opts.timeoutMs ?? 10_000);
  } catch (e) {
    try {
      ptrace.detach(tid);
    } catch {
      // already gone or not stopped: the seize dies with it
    }
    throw e;
  }
}

/** Waits for the PTRACE_EVENT_STOP of a seized task, forwarding signals that arrive first. */
export function waitForTrapStop(tid: number, timeoutMs: number): void {
  for (;;) {
    const st: WaitStatus = waitpidTimeout(tid, timeoutMs);
    if (st.kind === 'exited' || st.kind === 'killed') throw new NativeError(`attach(${tid})`, Errno.ESRCH, 'the task ended before it stopped');
    if (st.kind !== 'stopped') continue;
    if (st.event === ptrace.PTRACE_EVENT.STOP) return;
    if (st.event !== 0) {
      ptrace.cont(tid);
      continue;
    }
    ptrace.cont(tid, st.signal);
  }
}

/** Lets a stopped tracee go; it continues what it was doing (a syscall restarts as the kernel would). */
export function detach(tid: number): void {
  ptrace.detach(tid, 0);
}

/**
 * Stops every thread of a process. Threads may be created while we attach:
 * with PTRACE_O_TRACECLONE a thread born from a seized one is ours already
 * (its first stop is waited for); one born from a not-yet-seized thread is
 * found when /proc/PID/task is listed again, until the list stops changing.
 * Returns the tids, the leader first.
 */
export function stopThreadGroup(pid: number, opts: AttachOptions = {}): number[] {
  const options = (opts.options ?? 0) | ptrace.PTRACE_O.TRACECLONE;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const stopped = new Set<number>();
  try {
    for (;;) {
      const listed = listThreads(pid).filter((t) => !stopped.has(t));
      if (listed.length === 0) break;
      const seized: number[] = [];
      for (const tid of listed) {
        try {
          ptrace.seize(tid, options);
          ptrace.interrupt(tid);
        } catch (e) {
          // EPERM: already ours (auto-attached through TRACECLONE); ESRCH: it exited meanwhile.
          if (isNativeError(e, 'ESRCH')) continue;
          if (!isNativeError(e, 'EPERM')) throw e;
        }
        seized.push(tid);
      }
      for (const tid of seized) {
        try {
          waitForTrapStop(tid, timeoutMs);
          stopped.add(tid);
        } catch (e) {
          if (!isNativeError(e, 'ESRCH')) throw e;
        }
      }
    }
  } catch (e) {
    for (const tid of stopped) {
      try {
        ptrace.detach(tid);
      } catch {
        // gone
      }
    }
    throw e;
  }
  if (!stopped.has(pid)) throw new NativeError(`stop ${pid}`, Errno.ESRCH, 'the process ended while it was being stopped');
  return [pid, ...[...stopped].filter((t) => t !== pid).sort((a, b) => a - b)];
}

/**
 * Seizes and interrupts tasks without waiting for them to stop: for a
 * frozen cgroup, whose tasks trap only once it is thawed. Every task is
 * seized while nothing in the group can run, so none can fork or start a
 * thread unseen; waitForTrapStop collects the stops after the thaw.
 */
export function seizeAndInterrupt(tids: number[], options = 0): number[] {
  const seized: number[] = [];
  try {
    for (const tid of tids) {
      ptrace.seize(tid, options);
      seized.push(tid);
      ptrace.interrupt(tid);
    }
  } catch (e) {
    for (const tid of seized) {
      try {
        ptrace.detach(tid);
      } catch {
        // not stopped yet, or gone: the seize ends with the tracer
      }
    }
    throw e;
  }
  return seized;
}
