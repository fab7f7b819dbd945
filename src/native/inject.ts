import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { Regs } from './regs.js';
import * as ptrace from './ptrace.js';
import { waitpid, type WaitStatus } from './wait.js';
import { readMemory, writeMemory } from './memory.js';
import { readMaps } from './proc.js';
import { MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_SHARED, PROT_EXEC, PROT_READ, PROT_WRITE } from './flags.js';

const SIGTRAP = 5;
const ALL_SIGNALS = 0xffffffffffffffffn;
const PAGE = 4096;

/**
 * Runs a table of syscalls in one go. r12 points at 64-byte rows
 * {nr, a1..a6, result}, r13 counts them; each result is stored in its row,
 * then int3 hands control back. One stop for the whole table instead of
 * one per syscall, which on a busy machine is most of a checkpoint's
 * frozen time.
 *
 *   loop: test r13, r13 ; jz done
 *         mov rax,[r12] ; mov rdi,[r12+8] ; mov rsi,[r12+16] ; mov rdx,[r12+24]
 *         mov r10,[r12+32] ; mov r8,[r12+40] ; mov r9,[r12+48]
 *         syscall ; mov [r12+56],rax ; add r12,64 ; dec r13 ; jmp loop
 *   done: int3
 */
const BATCH_CODE = Buffer.from([
  0x4d, 0x85, 0xed, // test r13, r13
  0x74, 0x32, // jz done
  0x49, 0x8b, 0x04, 0x24, // mov rax, [r12]
  0x49, 0x8b, 0x7c, 0x24, 0x08, // mov rdi, [r12+8]
  0x49, 0x8b, 0x74, 0x24, 0x10, // mov rsi, [r12+16]
  0x49, 0x8b, 0x54, 0x24, 0x18, // mov rdx, [r12+24]
  0x4d, 0x8b, 0x54, 0x24, 0x20, // mov r10, [r12+32]
  0x4d, 0x8b, 0x44, 0x24, 0x28, // mov r8, [r12+40]
  0x4d, 0x8b, 0x4c, 0x24, 0x30, // mov r9, [r12+48]
  0x0f, 0x05, // syscall
  0x49, 0x89, 0x44, 0x24, 0x38, // mov [r12+56], rax
  0x49, 0x83, 0xc4, 0x40, // add r12, 64
  0x49, 0xff, 0xcd, // dec r13
  0xeb, 0xc9, // jmp loop
  0xcc, // done: int3
]);
const BATCH_ROW = 64;

/** One syscall of a batch; buffers must already be in scratch memory (put/reserve). */
export interface BatchCall {
  nr: number;
  args?: Array<number | bigint>;
}

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
  /** When set, scratch memory belongs to this other injector (a thread of the same process). */
  private scratchOwner: Injector | null = null;
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
    this.waitForTrap(`syscall ${nr}`, true);
    return ptrace.getRegs(this.pid).signed('rax');
  }

  /**
   * Runs independent syscalls in one stop (see BATCH_CODE) and returns their
   * raw results. Calls must not create children or depend on each other's
   * results. Uses scratch memory: put() the calls' buffers first.
   */
  batchRaw(calls: BatchCall[]): bigint[] {
    if (this.ended) throw new Error(`injector for ${this.pid} already ended`);
    if (calls.length === 0) return [];
    const table = Buffer.alloc(calls.length * BATCH_ROW);
    calls.forEach((c, i) => {
      table.writeBigInt64LE(BigInt(c.nr), i * BATCH_ROW);
      (c.args ?? []).forEach((a, j) => table.writeBigUInt64LE(BigInt.asUintN(64, BigInt(a)), i * BATCH_ROW + 8 + j * 8));
    });
    const code = this.put(BATCH_CODE);
    const tableAddr = this.put(table);
    const regs = this.saved.clone();
    regs.set('rip', code).set('r12', tableAddr).set('r13', calls.length).set('orig_rax', -1n);
    ptrace.setRegs(this.pid, regs);
    ptrace.cont(this.pid);
    this.waitForTrap(`batch of ${calls.length} syscalls`);
    const out = this.read(tableAddr, table.length);
    return calls.map((_, i) => out.readBigInt64LE(i * BATCH_ROW + 56));
  }

  /** Like batchRaw, throwing NativeError for the first call that failed. */
  batch(name: string, calls: BatchCall[]): number[] {
    return this.batchRaw(calls).map((r, i) => {
      if (r < 0n && r >= -4095n) throw new NativeError(`${name} #${i} (syscall ${calls[i]!.nr}, injected into ${this.pid})`, Number(-r));
      return Number(r);
    });
  }

  /** Runs one syscall; throws NativeError naming it when the kernel returns an error. */
  call(name: keyof typeof Sys | string, nr: number, ...args: Array<number | bigint>): number {
    const r = this.callRaw(nr, ...args);
    if (r < 0n && r >= -4095n) throw new NativeError(`${name} (injected into ${this.pid})`, Number(-r));
    return Number(r);
  }

  /**
   * Waits for the SIGTRAP that ends an injected step or batch, stepping past
   * fork/clone events and stops that are not ours. `step` resumes by
   * single-stepping (one syscall), otherwise by continuing (a batch).
   */
  private waitForTrap(what: string, step = false): void {
    const resume = () => (step ? ptrace.singleStep(this.pid) : ptrace.cont(this.pid));
    for (;;) {
      const st = waitpid(this.pid);
      if (!st) continue;
      if (st.kind === 'exited' || st.kind === 'killed') {
        this.ended = true;
        throw new NativeError(`inject ${what} into ${this.pid}`, Errno.ESRCH, `the task ${describeEnd(st)} during the call`);
      }
      if (st.kind !== 'stopped') continue;
      if (st.event === ptrace.PTRACE_EVENT.FORK || st.event === ptrace.PTRACE_EVENT.CLONE || st.event === ptrace.PTRACE_EVENT.VFORK) {
        this.children.push({ pid: Number(ptrace.getEventMsg(this.pid)), event: st.event });
        resume();
        continue;
      }
      if (st.event !== 0) {
        // A group-stop or PTRACE_INTERRUPT trap: not ours to keep, go on.
        resume();
        continue;
      }
      if (st.signal === SIGTRAP) return;
      if (st.signal === 11 || st.signal === 7 || st.signal === 4) {
        const at = ptrace.getRegs(this.pid).get('rip');
        throw new NativeError(`inject ${what} into ${this.pid}`, Errno.EFAULT, `the task faulted with signal ${st.signal} at 0x${at.toString(16)}`);
      }
      this.swallowed.push(st.signal);
      resume();
    }
  }

  /**
   * Scratch memory in the task for syscall buffers; mapped on first use,
   * removed by `end`. It is shared anonymous memory because such a mapping
   * never merges with a neighbour: a checkpoint can leave it out by its
   * range, and the process's own VMAs stay exactly as they were.
   */
  ensureScratch(size: number): void {
    if (this.scratchOwner && !this.scratchAddr) {
      this.scratchOwner.ensureScratch(0);
      const r = this.scratchOwner.scratchRange!;
      this.scratchAddr = r.start;
      this.scratchSize = r.end - r.start;
    }
    if (this.scratchAddr && this.scratchUsed + size <= this.scratchSize) return;
    if (this.scratchAddr) throw new RangeError(`scratch of ${this.scratchSize} bytes in ${this.pid} exhausted; call reset() between uses`);
    const want = Math.max(256 * PAGE, Math.ceil(size / PAGE) * PAGE);
    const flags = MAP_SHARED | MAP_ANONYMOUS | (this.scratchHint !== null ? MAP_FIXED_NOREPLACE : 0);
    this.scratchAddr = this.call('mmap', Sys.mmap, this.scratchHint ?? 0, want, PROT_READ | PROT_WRITE | PROT_EXEC, flags, -1, 0);
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

  /**
   * Uses another injector's scratch mapping: threads of one process share
   * their memory, so one scratch serves them all. The owner unmaps it; the
   * tracer runs one injection at a time, so the users never overlap.
   */
  shareScratchOf(owner: Injector): void {
    this.scratchHint = owner.scratchHint;
    this.scratchOwner = owner;
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
    if (this.scratchAddr && !this.scratchOwner) {
      this.call('munmap', Sys.munmap, this.scratchAddr, this.scratchSize);
    }
    this.scratchAddr = 0;
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
