/**
 * Turning a ptrace-stopped husk into a program: the process attributes a new
 * program starts with (session, umask, stdio, cwd) and the execve itself,
 * all injected into the task.
 */
import { cString } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import * as ptrace from './ptrace.js';
import { waitpid } from './wait.js';
import type { Injector } from './inject.js';
import { OpenFlags } from './process.js';
import { O_CLOEXEC } from './flags.js';

const AT_FDCWD = -100;
const SIGTRAP = 5;

/** Makes the task the leader of a new session and process group, with no controlling terminal. */
export function newSessionIn(inj: Injector): void {
  inj.call('setsid', Sys.setsid);
}

export function setUmaskIn(inj: Injector, mask: number): void {
  inj.call(`umask(0${mask.toString(8)})`, Sys.umask, mask);
}

export function chdirIn(inj: Injector, dir: string): void {
  inj.reset();
  try {
    inj.call(`chdir(${dir})`, Sys.chdir, inj.put(cString(dir)));
  } finally {
    inj.reset();
  }
}

/** Points the task's stdout and stderr at `path`, opened for appending (created with `mode` if missing). */
export function redirectOutputIn(inj: Injector, path: string, mode: number): void {
  inj.reset();
  try {
    const flags = OpenFlags.O_WRONLY | OpenFlags.O_CREAT | OpenFlags.O_APPEND | O_CLOEXEC;
    const fd = inj.call(`open(${path})`, Sys.openat, AT_FDCWD, inj.put(cString(path)), flags, mode);
    try {
      inj.call('dup2(log, 1)', Sys.dup2, fd, 1);
      inj.call('dup2(log, 2)', Sys.dup2, fd, 2);
    } finally {
      inj.call('close(log)', Sys.close, fd);
    }
  } finally {
    inj.reset();
  }
}

/** execve's "try the next PATH entry" errors, as execvp(3) treats them. */
const TRY_NEXT = new Set<number>([Errno.ENOENT, Errno.EACCES, Errno.ENOTDIR]);

/**
 * Replaces the task's program with execve, trying each candidate path in
 * turn as execvp does, and leaves the task stopped at PTRACE_EVENT_EXEC
 * (before the program's first instruction) for the caller to detach.
 * Returns the path that was executed.
 *
 * The husk's blocked-signal mask would survive execve, so it is emptied
 * first: a program starts with nothing blocked. The injector is unusable
 * afterwards, because its scratch memory and saved registers went with the
 * old program.
 */
export function execIn(inj: Injector, candidates: string[], argv: string[], env: string[]): string {
  if (candidates.length === 0) throw new NativeError(`execve(${argv[0]})`, Errno.ENOENT, 'no absolute directory in PATH to look in');
  const pid = inj.pid;
  inj.reset();
  const argvAddr = inj.put(pointerArray(inj, argv));
  const envAddr = inj.put(pointerArray(inj, env));
  const paths = candidates.map((c) => inj.put(cString(c)));
  ptrace.setSigmask(pid, 0n);
  // EXITKILL stays until the detach: a CLI that dies before then takes the half-made task with it.
  ptrace.setOptions(pid, ptrace.PTRACE_O.TRACEEXEC | ptrace.PTRACE_O.EXITKILL);
  let sawEacces = false;
  for (const [i, path] of candidates.entries()) {
    const regs = inj.originalRegs;
    regs.set('rip', inj.gadget).set('rax', Sys.execve).set('orig_rax', -1n);
    regs.set('rdi', paths[i]!).set('rsi', argvAddr).set('rdx', envAddr);
    ptrace.setRegs(pid, regs);
    ptrace.singleStep(pid);
    const errno = waitForExec(pid, path);
    if (errno === 0) return path;
    if (!TRY_NEXT.has(errno)) throw new NativeError(`execve(${path}) (injected into ${pid})`, errno);
    // Like execvp: a file that exists but may not run explains more than "not found" in a later directory.
    sawEacces ||= errno === Errno.EACCES;
  }
  throw new NativeError(`execve(${argv[0] ?? candidates[0]}) (injected into ${pid})`, sawEacces ? Errno.EACCES : Errno.ENOENT, `tried ${candidates.join(', ')}`);
}

/** An argv/envp array: pointers to NUL-terminated strings in scratch memory, then NULL. */
function pointerArray(inj: Injector, strings: string[]): Buffer {
  const table = Buffer.alloc((strings.length + 1) * 8);
  strings.forEach((s, i) => table.writeBigUInt64LE(BigInt(inj.put(cString(s))), i * 8));
  return table;
}

/** 0 when the exec happened (the task is at its exec stop), else the errno execve returned. */
function waitForExec(pid: number, path: string): number {
  for (;;) {
    const st = waitpid(pid);
    if (!st) continue;
    if (st.kind === 'exited' || st.kind === 'killed') {
      throw new NativeError(`execve(${path}) (injected into ${pid})`, Errno.ESRCH, 'the task ended during the call');
    }
    if (st.kind !== 'stopped') continue;
    if (st.event === ptrace.PTRACE_EVENT.EXEC) return 0;
    if (st.event === 0 && st.signal === SIGTRAP) {
      const rax = ptrace.getRegs(pid).signed('rax');
      return rax < 0n ? Number(-rax) : Errno.EINVAL;
    }
    // A signal that arrived meanwhile: the task now runs with nothing blocked, so it gets it as the program would.
    ptrace.singleStep(pid, st.event === 0 ? st.signal : 0);
  }
}
