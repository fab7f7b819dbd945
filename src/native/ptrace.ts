import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { Regs, USER_REGS_SIZE } from './regs.js';

export const PTRACE = {
  CONT: 7, KILL: 8, SINGLESTEP: 9, DETACH: 17,
  SETOPTIONS: 0x4200, GETEVENTMSG: 0x4201, GETSIGINFO: 0x4202, SETSIGINFO: 0x4203,
  GETREGSET: 0x4204, SETREGSET: 0x4205, SEIZE: 0x4206, INTERRUPT: 0x4207, LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209, GETSIGMASK: 0x420a, SETSIGMASK: 0x420b, SECCOMP_GET_FILTER: 0x420c,
  GET_SYSCALL_INFO: 0x420e, GET_RSEQ_CONFIGURATION: 0x420f,
} as const;

export const PTRACE_O = {
  TRACESYSGOOD: 0x1, TRACEFORK: 0x2, TRACEVFORK: 0x4, TRACECLONE: 0x8, TRACEEXEC: 0x10,
  TRACEVFORKDONE: 0x20, TRACEEXIT: 0x40, TRACESECCOMP: 0x80, EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;

export const PTRACE_EVENT = { FORK: 1, VFORK: 2, CLONE: 3, EXEC: 4, VFORK_DONE: 5, EXIT: 6, SECCOMP: 7, STOP: 128 } as const;

export const NT = { PRSTATUS: 1, PRFPREG: 2, X86_XSTATE: 0x202 } as const;

const PTRACE_NAMES = new Map<number, string>(Object.entries(PTRACE).map(([k, v]) => [v, `PTRACE_${k}`]));

function ptrace(request: number, pid: number, addr: number | bigint = 0, data: number | bigint = 0): number {
  return syscall(`ptrace(${PTRACE_NAMES.get(request) ?? request}, ${pid})`, Sys.ptrace, request, pid, addr, data);
}

/** PTRACE_SEIZE: attach without stopping the task or sending it a signal it could see. */
export function seize(pid: number, options = 0): void {
  ptrace(PTRACE.SEIZE, pid, 0, options);
}

export function interrupt(pid: number): void {
  ptrace(PTRACE.INTERRUPT, pid);
}

/** Resumes a stopped tracee, delivering `signal` if it sits in a signal-delivery-stop (0 suppresses it). */
export function cont(pid: number, signal = 0): void {
  ptrace(PTRACE.CONT, pid, 0, signal);
}

export function singleStep(pid: number, signal = 0): void {
  ptrace(PTRACE.SINGLESTEP, pid, 0, signal);
}

export function detach(pid: number, signal = 0): void {
  ptrace(PTRACE.DETACH, pid, 0, signal);
}

/** PTRACE_LISTEN: let a group-stopped tracee stay stopped but report later events. */
export function listen(pid: number): void {
  ptrace(PTRACE.LISTEN, pid);
}

export function setOptions(pid: number, options: number): void {
  ptrace(PTRACE.SETOPTIONS, pid, 0, options);
}

export function getEventMsg(pid: number): bigint {
  const out = Buffer.alloc(8);
  ptrace(PTRACE.GETEVENTMSG, pid, 0, addressOf(out));
  return out.readBigUInt64LE(0);
}

function regsetIovec(buf: Buffer): Buffer {
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(addressOf(buf), 0);
  iov.writeBigUInt64LE(BigInt(buf.length), 8);
  return iov;
}

/** PTRACE_GETREGSET; returns exactly the bytes the kernel filled in. */
export function getRegset(pid: number, type: number, maxSize: number): Buffer {
  const buf = Buffer.alloc(maxSize);
  const iov = regsetIovec(buf);
  ptrace(PTRACE.GETREGSET, pid, type, addressOf(iov));
  const filled = Number(iov.readBigUInt64LE(8));
  return buf.subarray(0, filled);
}

export function setRegset(pid: number, type: number, data: Buffer): void {
  const buf = Buffer.from(data);
  const iov = regsetIovec(buf);
  ptrace(PTRACE.SETREGSET, pid, type, addressOf(iov));
}

export function getRegs(pid: number): Regs {
  return new Regs(getRegset(pid, NT.PRSTATUS, USER_REGS_SIZE));
}

export function setRegs(pid: number, regs: Regs): void {
  setRegset(pid, NT.PRSTATUS, regs.buf);
}

/** The XSAVE area (x87, SSE, AVX and whatever the CPU has). 4 KiB covers every layout the kernel exports today (it caps at the CPU's xstate size). */
export function getXstate(pid: number): Buffer {
  return Buffer.from(getRegset(pid, NT.X86_XSTATE, 16384));
}

export function setXstate(pid: number, xstate: Buffer): void {
  setRegset(pid, NT.X86_XSTATE, xstate);
}

/** The blocked-signal mask as a 64-bit set (bit n-1 for signal n). */
export function getSigmask(pid: number): bigint {
  const out = Buffer.alloc(8);
  ptrace(PTRACE.GETSIGMASK, pid, 8, addressOf(out));
  return out.readBigUInt64LE(0);
}

export function setSigmask(pid: number, mask: bigint): void {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(mask, 0);
  ptrace(PTRACE.SETSIGMASK, pid, 8, addressOf(buf));
}

/** Pending signals with their siginfo, without dequeuing them: per-thread queue, or the process-wide one with `shared`. */
export function peekSiginfo(pid: number, shared: boolean): Buffer[] {
  const result: Buffer[] = [];
  const batch = 32;
  const args = Buffer.alloc(16);
  const out = Buffer.alloc(128 * batch);
  for (let off = 0; ; off += batch) {
    args.writeBigUInt64LE(BigInt(off), 0);
    args.writeUInt32LE(shared ? 1 : 0, 8);
    args.writeInt32LE(batch, 12);
    const n = ptrace(PTRACE.PEEKSIGINFO, pid, addressOf(args), addressOf(out));
    for (let i = 0; i < n; i++) result.push(Buffer.from(out.subarray(i * 128, (i + 1) * 128)));
    if (n < batch) return result;
  }
}

export interface RseqConfiguration {
  rseqAbiPointer: bigint;
  rseqAbiSize: number;
  signature: number;
  flags: number;
}

export function getRseqConfiguration(pid: number): RseqConfiguration {
  const out = Buffer.alloc(32);
  ptrace(PTRACE.GET_RSEQ_CONFIGURATION, pid, out.length, addressOf(out));
  return {
    rseqAbiPointer: out.readBigUInt64LE(0),
    rseqAbiSize: out.readUInt32LE(8),
    signature: out.readUInt32LE(12),
    flags: out.readUInt32LE(16),
  };
}

/**
 * The classic BPF program of seccomp filter `index` (0 = most recently installed),
 * as raw sock_filter instructions (8 bytes each), or null when there is no
 * filter at that index.
 */
export function getSeccompFilter(pid: number, index: number): Buffer | null {
  let count: number;
  try {
    count = ptrace(PTRACE.SECCOMP_GET_FILTER, pid, index, 0);
  } catch (e) {
    if (e instanceof NativeError && e.errno === Errno.ENOENT) return null;
    throw e;
  }
  const out = Buffer.alloc(count * 8);
  ptrace(PTRACE.SECCOMP_GET_FILTER, pid, index, addressOf(out));
  return out;
}
