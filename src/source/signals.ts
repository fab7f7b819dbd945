import { peekSiginfo } from '../native/ptrace.js';
import { Sys } from '../native/syscalls.js';
import { SignalsEntry } from '../image/signals.js';
import { hex } from '../image/fields.js';
import type { Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

const KERNEL_SIGACTION_SIZE = 32;
const ITIMERVAL_SIZE = 32;

export function inspect(_pid: number, _refusals: Refusal[]): void {
  // Every disposition, pending signal and interval timer can be restored.
}

function readTimeval(b: Buffer, at: number): { sec: number; usec: number } {
  return { sec: Number(b.readBigInt64LE(at)), usec: Number(b.readBigInt64LE(at + 8)) };
}

export function dump(ctx: DumpContext): void {
  const { pid, injector: inj } = ctx;
  const handlers = [];
  const out = inj.reserve(Math.max(KERNEL_SIGACTION_SIZE, ITIMERVAL_SIZE));
  for (let signo = 1; signo <= 64; signo++) {
    inj.call(`rt_sigaction(${signo})`, Sys.rt_sigaction, signo, 0, out, 8);
    const act = inj.read(out, KERNEL_SIGACTION_SIZE);
    const handler = act.readBigUInt64LE(0);
    const flags = act.readBigUInt64LE(8);
    const mask = act.readBigUInt64LE(24);
    if (handler === 0n && flags === 0n && mask === 0n) continue;
    handlers.push({ signo, handler: Number(handler), flags: hex(flags), restorer: Number(act.readBigUInt64LE(16)), mask: hex(mask) });
  }
  const itimers = [];
  for (let which = 0; which <= 2; which++) {
    inj.call(`getitimer(${which})`, Sys.getitimer, which, out);
    const v = inj.read(out, ITIMERVAL_SIZE);
    const interval = readTimeval(v, 0);
    const value = readTimeval(v, 16);
    if (value.sec || value.usec) itimers.push({ which, interval, value });
  }
  inj.reset();
  ctx.image.addEntry(SignalsEntry.make({ pid, handlers, itimers, pending: peekSiginfo(pid, true).map((s) => new Uint8Array(s)) }));
}
