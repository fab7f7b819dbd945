import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { Regs } from './regs.js';
import * as ptrace from './ptrace.js';
import { waitpid, type WaitStatus } from './wait.js';
import { readMemory, writeMemory } from './memory.js';
import { readMaps } from './proc.js';

const SIGTRAP = 5;
const ALL_SIGNALS = 0xffffffffffffffffn;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_ANONYMOUS = 0x20;
const MAP_FIXED_NOREPLACE = 0x100000;
const PAGE = 4096;

/** A child that appeared while an injected syscall ran (fork/clone events reported by ptrace). */
export interface NewChild {
  pid: number;
  event: number;
}

/**
 * Finds the address of a `syscall` instruction (0f 05) in the task. A task
 * stopped at a syscall exit has one right behind its rip; otherwise any 0f 05
 * in executable memory works, because the CPU decodes from wherever rip points
 * and single-step runs exactly one instruction. The vdso is searched first:
 * every process has it and it is never written to.
 */
export function findSyscallGadget(pid: number, regs: Regs | null, exclude?: { start: number; end: number }): number {
  if (regs && regs.signed('orig_rax') >= 0n) {
    const at = Number(regs.get('rip')) - 2;
    const insn = Buffer.alloc(2);
    try {
      readMemory(pid, at, insn);
      if (insn[0] === 0x0f && insn[1] === 0x05) return at;
    } catch {
      // rip points at memory we cannot read: fall through to the scan
    }
  }
  const maps = readMaps(pid).filter((m) => m.exec && m.read);
  maps.sort((a, b) => Number(b.path === '[vdso]') - Number(a.path === '[vdso]'));
  for (const m of maps) {
    if (m.path === '[vsyscall]') continue;
    if (exclude && m.start < exclude.end && m.end > exclude.start) continue;
    const chunk = Buffer.alloc(Math.min(m.end - m.start, 1 << 20));
    try {
      readMemory(pid, m.start, chunk);
    } catch {
      continue;
    }
    for (let i = chunk.indexOf(0x0f); i >= 0 && i < chunk.length - 1; i = chunk.indexOf(0x0f, i + 1)) {
      if (chunk[i + 1] === 0x05) return m.start + i;
    }
  }
  throw new NativeError(`find syscall instruction in ${pid}`, Errno.ENOENT, 'no executable 0f 05 in the process');
}

/**
 * Runs syscalls inside a ptrace-stopped task, as if the task had called them.
 *
 * The task's registers and signal mask are saved on `begin` and put back on
 * `end`, so a task stopped inside a syscall (nanosleep, read, ...) resumes that
 * syscall exactly as the kernel would have: its orig_rax and -ERESTART* rax are
 * untouched by what we ran in between. While injecting, every signal is
 * blocked so nothing the task receives can run a handler in the middle or be
 * lost; pending signals stay pending.
 */
export class Injector {
  readonly pid: number;
  private gadgetAddr: number;
  private readonly saved: Regs;
  private readonly savedMask: bigint;
  private scratchAddr = 0;
  private scratchSize = 0;
  private scratchUsed = 0;
  private ended = false;
  /** Where to put scratch memory (a restore keeps it clear of the image's addresses); null lets the kernel choose. */
  scratchHint: number | null = null;
  /** Children created by injected fork/clone calls, in order. */
  readonly children: NewChild[] = [];
  /** Signals that were dequeued by a signal-delivery-stop during injection (only possible for unblockable or synchronous ones). */
  readonly swallowed: number[] = [];

  constructor(pid: number, gadget?: number) {
    this.pid = pid;
    this.saved = ptrace.getRegs(pid);
    this.gadgetAddr = gadget ?? findSyscallGadget(pid, this.saved);
    this.savedMask = ptrace.getSigmask(pid);
    ptrace.setSigmask(pid, ALL_SIGNALS);
  }

  /** The registers the task had when injection began (what `end` restores). */
  get originalRegs(): Regs {
    return this.saved.clone();
  }

  /** The `syscall` instruction injected calls run through. */
  get gadget(): number {
    return this.gadgetAddr;
  }

  /** Moves injection to another `syscall` instruction (a restore does before it unmaps the husk's own code). */
  useGadget(addr: number): void {
    this.gadgetAddr = addr;
  }

  /** The blocked-signal mask the task had when injection began. */
  get originalSigmask(): bigint {
    return this.savedMask;
  }

  /** Runs one syscall; returns the raw kernel result (negative errno on failure). */
  callRaw(nr: number, ...args: Array<number | bigint>): bigint {
    if (this.ended) throw new Error(`injector for ${this.pid} already ended`);
    const regs = this.saved.clone();
    regs.set('rip', this.gadgetAddr).set('rax', nr).set('orig_rax', -1n);
    const argRegs = ['rdi', 'rsi', 'rdx', 'r10', 'r8', 'r9'] as const;
    argRegs.forEach((r, i) => regs.set(r, args[i] ?? 0));
    ptrace.setRegs(this.pid, regs);
    ptrace.singleStep(this.pid);
    for (;;) {
      const st = waitpid(this.pid);
      if (!st) continue;
      if (st.kind === 'exited' || st.kind === 'killed') {
        this.ended = true;
        throw new NativeError(`inject syscall ${nr} into ${this.pid}`, Errno.ESRCH, `the task ${describeEnd(st)} during the call`);
      }
      if (st.kind !== 'stopped') continue;
      if (st.event === ptrace.PTRACE_EVENT.FORK || st.event === ptrace.PTRACE_EVENT.CLONE || st.event === ptrace.PTRACE_EVENT.VFORK) {
        this.children.push({ pid: Number(ptrace.getEventMsg(this.pid)), event: st.event });
        ptrace.singleStep(this.pid);
        continue;
      }
      if (st.event !== 0) {
        // A group-stop or PTRACE_INTERRUPT trap: not ours to keep, step on.
        ptrace.singleStep(this.pid);
        continue;
      }
      if (st.signal === SIGTRAP) break;
      if (st.signal === 11 || st.signal === 7 || st.signal === 4) {
        const at = ptrace.getRegs(this.pid).get('rip');
        throw new NativeError(`inject syscall ${nr} into ${this.pid}`, Errno.EFAULT, `the task faulted with signal ${st.signal} at 0x${at.toString(16)}`);
      }
      this.swallowed.push(st.signal);
      ptrace.singleStep(this.pid);
    }
    return ptrace.getRegs(this.pid).signed('rax');
  }

  /** Runs one syscall; throws NativeError naming it when the kernel returns an error. */
  call(name: keyof typeof Sys | string, nr: number, ...args: Array<number | bigint>): number {
    const r = this.callRaw(nr, ...args);
    if (r < 0n && r >= -4095n) throw new NativeError(`${name} (injected into ${this.pid})`, Number(-r));
    return Number(r);
  }

  /**
   * Scratch memory in the task for syscall buffers; mapped on first use,
   * removed by `end`. It is shared anonymous memory because such a mapping
   * never merges with a neighbour: a checkpoint can leave it out by its
   * range, and the process's own VMAs stay exactly as they were.
   */
  private ensureScratch(size: number): void {
    if (this.scratchUsed + size <= this.scratchSize) return;
    if (this.scratchAddr) throw new RangeError(`scratch of ${this.scratchSize} bytes in ${this.pid} exhausted; call reset() between uses`);
    const want = Math.max(256 * PAGE, Math.ceil(size / PAGE) * PAGE);
    const flags = MAP_SHARED | MAP_ANONYMOUS | (this.scratchHint !== null ? MAP_FIXED_NOREPLACE : 0);
    this.scratchAddr = this.call('mmap', Sys.mmap, this.scratchHint ?? 0, want, PROT_READ | PROT_WRITE, flags, -1, 0);
    this.scratchSize = want;
  }

  /** Copies `data` into scratch memory and returns its address in the task. */
  put(data: Buffer): number {
    const aligned = Math.ceil(Math.max(data.length, 1) / 16) * 16;
    this.ensureScratch(aligned);
    const addr = this.scratchAddr + this.scratchUsed;
    if (data.length) writeMemory(this.pid, addr, data);
    this.scratchUsed += aligned;
    return addr;
  }

  /** Reserves zeroed scratch space of `size` bytes (for out-parameters). */
  reserve(size: number): number {
    return this.put(Buffer.alloc(size));
  }

  read(addr: number, size: number): Buffer {
    const out = Buffer.alloc(size);
    readMemory(this.pid, addr, out);
    return out;
  }

  /** Unmaps a copy of the parent's scratch that a cloned task inherited (shared memory: the parent must keep its own). */
  dropInheritedScratch(range: { start: number; end: number } | null): void {
    if (range) this.call('munmap', Sys.munmap, range.start, range.end - range.start);
  }

  /** Forgets scratch allocations (the mapping stays for reuse). */
  reset(): void {
    this.scratchUsed = 0;
  }

  /** The scratch mapping's range, so a checkpoint can leave it out of the image. */
  get scratchRange(): { start: number; end: number } | null {
    return this.scratchAddr ? { start: this.scratchAddr, end: this.scratchAddr + this.scratchSize } : null;
  }

  /**
   * Removes the scratch mapping and puts back the registers and mask.
   * `restore` = false leaves the registers as they are (a restore sets its own).
   */
  end(restore = true): void {
    if (this.ended) return;
    if (this.scratchAddr) {
      this.call('munmap', Sys.munmap, this.scratchAddr, this.scratchSize);
      this.scratchAddr = 0;
    }
    this.ended = true;
    if (restore) {
      ptrace.setRegs(this.pid, this.saved);
      ptrace.setSigmask(this.pid, this.savedMask);
    }
  }
}

function describeEnd(st: WaitStatus): string {
  if (st.kind === 'exited') return `exited with code ${st.code}`;
  if (st.kind === 'killed') return `was killed by signal ${st.signal}`;
  return st.kind;
}
