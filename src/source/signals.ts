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
  inj.reset();
  const actions = inj.reserve(64 * KERNEL_SIGACTION_SIZE);
  const timers = inj.reserve(3 * ITIMERVAL_SIZE);
  const signos = Array.from({ length: 64 }, (_, i) => i + 1);
  inj.batch('rt_sigaction / getitimer', [
    ...signos.map((signo) => ({ nr: Sys.rt_sigaction, args: [signo, 0, actions + (signo - 1) * KERNEL_SIGACTION_SIZE, 8] })),
    ...[0, 1, 2].map((which) => ({ nr: Sys.getitimer, args: [which, timers + which * ITIMERVAL_SIZE] })),
  ]);
  const acts = inj.read(actions, 64 * KERNEL_SIGACTION_SIZE);
  const handlers = [];
  for (const signo of signos) {
    const at = (signo - 1) * KERNEL_SIGACTION_SIZE;
    const handler = acts.readBigUInt64LE(at);
    const flags = acts.readBigUInt64LE(at + 8);
    const mask = acts.readBigUInt64LE(at + 24);
    if (handler === 0n && flags === 0n && mask === 0n) continue;
    handlers.push({ signo, handler: Number(handler), flags: hex(flags), restorer: Number(acts.readBigUInt64LE(at + 16)), mask: hex(mask) });
  }
  const t = inj.read(timers, 3 * ITIMERVAL_SIZE);
  const itimers = [];
  for (let which = 0; which <= 2; which++) {
    const interval = readTimeval(t, which * ITIMERVAL_SIZE);
    const value = readTimeval(t, which * ITIMERVAL_SIZE + 16);
    if (value.sec || value.usec) itimers.push({ which, interval, value });
  }
  inj.reset();
  ctx.image.addEntry(SignalsEntry.make({ pid, handlers, itimers, pending: peekSiginfo(pid, true).map((s) => new Uint8Array(s)) }));
}
