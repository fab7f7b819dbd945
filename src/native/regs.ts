/**
 * struct user_regs_struct (arch/x86/include/asm/user_64.h), as PTRACE_GETREGSET
 * NT_PRSTATUS returns it: 27 unsigned 64-bit words.
 */
export const REG_NAMES = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx',
  'rsi', 'rdi', 'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base',
  'ds', 'es', 'fs', 'gs',
] as const;

export type RegName = (typeof REG_NAMES)[number];
export const USER_REGS_SIZE = REG_NAMES.length * 8;

const index = new Map<RegName, number>(REG_NAMES.map((n, i) => [n, i * 8]));

/** A register file. Values are unsigned 64-bit bigints; `signed()` reads one as a signed value (rax after a failed syscall, orig_rax = -1). */
export class Regs {
  readonly buf: Buffer;

  constructor(buf?: Buffer) {
    this.buf = buf ? Buffer.from(buf) : Buffer.alloc(USER_REGS_SIZE);
    if (this.buf.length !== USER_REGS_SIZE) throw new RangeError(`user_regs_struct is ${USER_REGS_SIZE} bytes, got ${this.buf.length}`);
  }

  get(name: RegName): bigint {
    return this.buf.readBigUInt64LE(index.get(name)!);
  }

  signed(name: RegName): bigint {
    return this.buf.readBigInt64LE(index.get(name)!);
  }

  set(name: RegName, value: bigint | number): this {
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), index.get(name)!);
    return this;
  }

  clone(): Regs {
    return new Regs(this.buf);
  }

  toJSON(): Record<RegName, string> {
    return Object.fromEntries(REG_NAMES.map((n) => [n, '0x' + this.get(n).toString(16)])) as Record<RegName, string>;
  }
}
