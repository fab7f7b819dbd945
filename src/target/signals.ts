import { Sys } from '../native/syscalls.js';
import { SignalsEntry } from '../image/signals.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';

const SIGKILL = 9;
const SIGSTOP = 19;

/**
 * Dispositions first, then timers and pending signals: a signal queued while
 * its disposition is still "ignore" would be dropped. Every signal is blocked
 * in the husk while this runs, so nothing is delivered before the process
 * has its own mask back.
 */
export function restore(ctx: RestoreContext): void {
  const s = ctx.image.entriesOf(SignalsEntry).find((e) => e.pid === ctx.imagePid);
  if (!s) return;
  const inj = ctx.injector;
  inj.reset();
  const calls = [];
  for (const h of s.handlers) {
    if (h.signo === SIGKILL || h.signo === SIGSTOP) continue;
    const act = Buffer.alloc(32);
    act.writeBigUInt64LE(BigInt(h.handler), 0);
    act.writeBigUInt64LE(fromHex(h.flags), 8);
    act.writeBigUInt64LE(BigInt(h.restorer), 16);
    act.writeBigUInt64LE(fromHex(h.mask), 24);
    calls.push({ nr: Sys.rt_sigaction, args: [h.signo, inj.put(act), 0, 8] });
  }
  for (const t of s.itimers) {
    const v = Buffer.alloc(32);
    v.writeBigInt64LE(BigInt(t.interval.sec), 0);
    v.writeBigInt64LE(BigInt(t.interval.usec), 8);
    v.writeBigInt64LE(BigInt(t.value.sec), 16);
    v.writeBigInt64LE(BigInt(t.value.usec), 24);
    calls.push({ nr: Sys.setitimer, args: [t.which, inj.put(v), 0] });
  }
  inj.batch('rt_sigaction / setitimer', calls);
  inj.reset();
  for (const info of s.pending) {
    const signo = Buffer.from(info).readInt32LE(0);
    inj.reset();
    inj.call(`rt_sigqueueinfo(${signo})`, Sys.rt_sigqueueinfo, ctx.pids.vpid(ctx.imagePid), signo, inj.put(Buffer.from(info)));
  }
  inj.reset();
}
