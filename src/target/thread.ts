import { setRegs, setXstate, setSigmask } from '../native/ptrace.js';
import { Regs } from '../native/regs.js';
import { Sys } from '../native/syscalls.js';
import { Errno } from '../native/errno.js';
import { ThreadEntry } from '../image/thread.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';
import type { Injector, BatchCall } from '../native/inject.js';
import { THREAD_CLONE_FLAGS } from '../native/husk.js';

const PR_SET_NAME = 15;
const PR_SET_TIMERSLACK = 29;
const PRIO_PROCESS = 0;

export function threadOf(ctx: Pick<RestoreContext, 'image' | 'imagePid'>, imageTid: number): ThreadEntry {
  const t = ctx.image.entriesOf(ThreadEntry).find((e) => e.pid === ctx.imagePid && e.tid === imageTid);
  if (!t) throw new Error(`the image has no thread entry for pid ${ctx.imagePid} tid ${imageTid}`);
  return t;
}

/**
 * Creates the threads other than the leader inside the leader husk, each
 * with its saved tid (clone3 + set_tid), and records their live tids. They
 * share the leader's memory, files and signal handlers from the start;
 * registers, TLS and masks come at the end with restoreCpu.
 */
export function createThreads(ctx: RestoreContext, imageTids: number[]): void {
  for (const imageTid of imageTids) {
    if (imageTid === ctx.imagePid) continue;
    const t = ctx.husk.clone({ flags: THREAD_CLONE_FLAGS, setTid: ctx.pids.setTid(imageTid) });
    ctx.pids.record(imageTid, t.pid);
    ctx.threads.push({ tid: t.pid, imageTid, injector: t.injector });
  }
}

/**
 * Per-thread kernel state set from inside: name, rseq, clear_child_tid,
 * robust futex list, pending thread signals, niceness and timer slack. It
 * runs before the credentials change, while the husk may still lower its
 * nice value (CAP_SYS_NICE).
 */
export function restoreKernelState(ctx: RestoreContext): void {
  for (const { imageTid, injector } of ctx.threads) restoreThreadState(ctx, threadOf(ctx, imageTid), injector);
}

function restoreThreadState(ctx: RestoreContext, t: ThreadEntry, inj: Injector): void {
  inj.reset();
  const calls: BatchCall[] = [{ nr: Sys.prctl, args: [PR_SET_NAME, inj.put(Buffer.from(t.comm + '\0'))] }];
  if (t.rseq) calls.push({ nr: Sys.rseq, args: [t.rseq.addr, t.rseq.size, 0, t.rseq.signature] });
  calls.push({ nr: Sys.set_tid_address, args: [t.clearChildTid] });
  if (t.altstack) {
    const ss = Buffer.alloc(24);
    ss.writeBigUInt64LE(BigInt(t.altstack.sp), 0);
    ss.writeInt32LE(t.altstack.flags, 8);
    ss.writeBigUInt64LE(BigInt(t.altstack.size), 16);
    calls.push({ nr: Sys.sigaltstack, args: [inj.put(ss), 0] });
  }
  if (t.robustList.head) calls.push({ nr: Sys.set_robust_list, args: [t.robustList.head, t.robustList.len] });
  calls.push({ nr: Sys.setpriority, args: [PRIO_PROCESS, 0, t.nice] }, { nr: Sys.prctl, args: [PR_SET_TIMERSLACK, t.timerSlackNs] });
  for (const info of t.pending) {
    const signo = Buffer.from(info).readInt32LE(0);
    calls.push({ nr: Sys.rt_tgsigqueueinfo, args: [ctx.pids.vpid(ctx.imagePid), ctx.pids.vpid(t.tid), signo, inj.put(Buffer.from(info))] });
  }
  // All independent and per-thread: one stop instead of one per call.
  inj.batch(`thread ${t.tid} state`, calls);
  inj.reset();
}

/**
 * The last step: registers, FPU/AVX state and the signal mask. A task that
 * was stopped inside a syscall resumes it through the kernel's own restart
 * path (rax = -ERESTART*, orig_rax = the call). -ERESTART_RESTARTBLOCK
 * needs the task's restart block, which does not travel, so it becomes
 * -ERESTARTNOINTR: the original call is issued again (a relative sleep
 * starts over) rather than failing with EINTR that no signal caused.
 */
export function restoreCpu(ctx: RestoreContext): void {
  for (const { tid, imageTid } of ctx.threads) restoreThreadCpu(tid, threadOf(ctx, imageTid));
}

function restoreThreadCpu(tid: number, t: ThreadEntry): void {
  const regs = new Regs(Buffer.from(t.regs));
  if (regs.signed('orig_rax') >= 0n && regs.signed('rax') === -BigInt(Errno.ERESTART_RESTARTBLOCK)) {
    regs.set('rax', -BigInt(Errno.ERESTARTNOINTR));
  }
  setRegs(tid, regs);
  setXstate(tid, Buffer.from(t.xstate));
  setSigmask(tid, fromHex(t.sigmask));
}
