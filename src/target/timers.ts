import { NativeError } from '../native/errors.js';
import { Sys } from '../native/syscalls.js';
import { PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF, PR_TIMER_CREATE_RESTORE_IDS_ON } from '../native/timers.js';
import { PosixTimerEntry } from '../image/timers.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';

const SIGEVENT_SIZE = 64;
const SIGEVENT_TID_OFFSET = 16;
const ITIMERSPEC_SIZE = 32;
/** Timers created per injected batch: their buffers and table rows stay well inside the injector's scratch. */
const CHUNK = 1024;

/**
 * Recreates the process's POSIX timers under their own ids.
 *
 * Ids: with PR_TIMER_CREATE_RESTORE_IDS on, timer_create takes the id from
 * *timerid; every id is read back, so a timer is never restored under
 * another id. Creating them in ascending order leaves the kernel's id
 * counter at the highest id + 1, which is what the next timer_create on the
 * source gave too, unless the process had deleted its highest-numbered
 * timers (the counter is not visible, so that case gets a lower, unused id).
 *
 * Time: each armed timer is armed again, relative, with the time it had
 * left when the process was frozen. Time the process spends frozen and in
 * transit is therefore not counted: a timer fires that much later than it
 * would have on the source, as if the process had been paused. For
 * CLOCK_MONOTONIC and CLOCK_BOOTTIME that is the only consistent choice
 * across hosts with different uptimes (a time namespace will make the clocks
 * themselves continuous); for CLOCK_REALTIME an absolute deadline moves by
 * the downtime and no longer follows clock_settime, since the kernel does
 * not show whether TIMER_ABSTIME armed it. CPU-time timers get what is
 * left of their CPU budget, counted on the restored process's CPU clock,
 * which starts again near zero (a process or thread CPU clock cannot be
 * set).
 *
 * Not restored: the overrun count (timer_getoverrun is 0 until the first
 * expiry after the restore; the kernel has no way to set it). A timer's
 * signal that was queued at the checkpoint is restored with the pending
 * signals, as an ordinary queued signal carrying the same siginfo; while it
 * stays queued (blocked), the timer's next expiry queues a second signal
 * where the source would have counted an overrun.
 *
 * Runs after the signal dispositions are back. Every signal is blocked while
 * Ferry injects, so an expiry during the rest of the restore stays pending.
 * A SIGEV_THREAD_ID timer needs its thread to exist already.
 */
export function restore(ctx: RestoreContext): void {
  const timers = ctx.image.entriesOf(PosixTimerEntry).filter((t) => t.pid === ctx.imagePid).sort((a, b) => a.id - b.id);
  if (!timers.length) return;
  const inj = ctx.injector;
  const on = inj.callRaw(Sys.prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0);
  if (on < 0n) {
    throw new NativeError(
      `restore POSIX timers ${timers.map((t) => t.id).join(',')} of ${ctx.pid}`,
      Number(-on),
      'this kernel cannot create a timer with a given id (prctl PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15+), and the process knows its timers by id',
    );
  }
  // A failure below abandons the restore and kills the husk, so the ON flag never reaches a running process.
  for (let at = 0; at < timers.length; at += CHUNK) {
    const chunk = timers.slice(at, at + CHUNK);
    inj.reset();
    const wanted = Buffer.alloc(chunk.length * 4);
    chunk.forEach((t, i) => wanted.writeInt32LE(t.id, i * 4));
    const ids = inj.put(wanted);
    const calls: Array<{ nr: number; args: Array<number | bigint>; what: string; creates?: number }> = [];
    chunk.forEach((t, i) => {
      const sev = Buffer.alloc(SIGEVENT_SIZE);
      sev.writeBigUInt64LE(fromHex(t.value), 0);
      sev.writeInt32LE(t.signo, 8);
      sev.writeInt32LE(t.notify, 12);
      if (t.tid !== null) sev.writeInt32LE(ctx.pids.vpid(t.tid), SIGEVENT_TID_OFFSET);
      calls.push({ nr: Sys.timer_create, args: [t.clock, inj.put(sev), ids + i * 4], what: `timer_create(id ${t.id}, clock ${t.clock}, notify ${t.notify})`, creates: i });
      if (t.remaining.sec || t.remaining.nsec) {
        const its = Buffer.alloc(ITIMERSPEC_SIZE);
        its.writeBigInt64LE(BigInt(t.interval.sec), 0);
        its.writeBigInt64LE(BigInt(t.interval.nsec), 8);
        its.writeBigInt64LE(BigInt(t.remaining.sec), 16);
        its.writeBigInt64LE(BigInt(t.remaining.nsec), 24);
        calls.push({ nr: Sys.timer_settime, args: [t.id, 0, inj.put(its), 0], what: `timer_settime(${t.id})` });
      }
    });
    const results = inj.batchRaw(calls);
    const got = inj.read(ids, chunk.length * 4);
    // In call order, so a timer created under the wrong id is named before the timer_settime that then misses it.
    calls.forEach((c, i) => {
      const r = results[i]!;
      if (r < 0n) throw new NativeError(`${c.what} (injected into ${ctx.pid})`, Number(-r));
      if (c.creates === undefined) return;
      const id = got.readInt32LE(c.creates * 4);
      const t = chunk[c.creates]!;
      if (id !== t.id) throw new Error(`POSIX timer ${t.id} of ${ctx.pid} was created as timer ${id}: the kernel ignored the requested id`);
    });
  }
  inj.call('prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)', Sys.prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0);
  inj.reset();
}
