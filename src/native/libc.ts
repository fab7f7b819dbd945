import koffi from 'koffi';
import { NativeError } from './errors.js';

/**
 * The raw door to the kernel. Everything goes through glibc's `syscall()` with a
 * fixed seven-argument prototype: on x86_64 its assembly body only moves
 * registers, so declaring it non-variadic is safe, and calling the kernel
 * directly keeps glibc's wrapper quirks (ptrace PEEK*, missing clone3) out.
 */
export const libc = koffi.load('libc.so.6');

type Arg = number | bigint;

const rawSyscall = libc.func('syscall', 'int64_t', ['int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t', 'int64_t']);

export function errno(): number {
  return koffi.errno();
}

/** Issues a syscall and returns its result; throws NativeError(call) on failure. */
export function syscall(call: string, nr: number, a1: Arg = 0, a2: Arg = 0, a3: Arg = 0, a4: Arg = 0, a5: Arg = 0, a6: Arg = 0): number {
  const r = rawSyscall(nr, a1, a2, a3, a4, a5, a6) as number | bigint;
  if (r === -1 || r === -1n) throw new NativeError(call, koffi.errno());
  return Number(r);
}

/**
 * Buffers whose address was handed out. A raw address does not keep its
 * Buffer alive: V8 may collect a buffer nobody refers to any more while the
 * kernel is still to read it (seen: PTRACE_SETREGSET failing with EFAULT, or
 * worse, reading reused memory). Every such buffer is therefore held here
 * until the current synchronous run of code has finished, which covers
 * every syscall that run makes. Don't carry an address across an await.
 */
const pinned: Array<Buffer | Uint8Array> = [];
let unpinScheduled = false;

function unpinAll(): void {
  pinned.length = 0;
  unpinScheduled = false;
}

/** The address of a Buffer's memory, for passing pointers inside structs or as raw syscall arguments. The buffer is kept alive until the current synchronous code has run (see `pinned`). */
export function addressOf(buf: Buffer | Uint8Array): bigint {
  if (buf.byteLength === 0) return 0n;
  pinned.push(buf);
  if (!unpinScheduled) {
    unpinScheduled = true;
    queueMicrotask(unpinAll);
  }
  return koffi.address(buf) as bigint;
}

/** A NUL-terminated C string in a Buffer. */
export function cString(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}
