import { readProcFile } from '../native/proc.js';
import type { Injector } from '../native/inject.js';
import { getXstate, getRseqConfiguration, peekSiginfo } from '../native/ptrace.js';
import { getRobustList } from '../native/process.js';
import { Sys } from '../native/syscalls.js';
import { ThreadEntry } from '../image/thread.js';
import { hex } from '../image/fields.js';
import type { Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

const PR_GET_TID_ADDRESS = 40;
const PR_GET_TIMERSLACK = 30;
const PRIO_PROCESS = 0;
const SS_ONSTACK = 1;
const SS_DISABLE = 2;

export function inspect(_pid: number, _refusals: Refusal[]): void {
  // Every thread's state is dumped through ptrace and injection into that thread.
}

/** Every thread's CPU and kernel state. Registers and masks are the ones from before injection began. */
export function dump(ctx: DumpContext): void {
  for (const { tid, injector } of ctx.threads) dumpThread(ctx, tid, injector);
}

function dumpThread(ctx: DumpContext, tid: number, injector: Injector): void {
  const { pid } = ctx;
  injector.reset();
  const out = injector.reserve(8);
  const ss = injector.reserve(24);
  // All per-thread, so each runs inside the thread it describes.
  const [, , prio, timerSlackNs] = injector.batch(`thread ${tid} state`, [
    { nr: Sys.prctl, args: [PR_GET_TID_ADDRESS, out] },
    { nr: Sys.sigaltstack, args: [0, ss] },
    { nr: Sys.getpriority, args: [PRIO_PROCESS, 0] },
    { nr: Sys.prctl, args: [PR_GET_TIMERSLACK] },
  ]);
  const clearChildTid = Number(injector.read(out, 8).readBigUInt64LE(0));
  const stack = injector.read(ss, 24);
  injector.reset();
  const ssFlags = stack.readInt32LE(8);
  const rseq = getRseqConfiguration(tid);
  ctx.image.addEntry(
    ThreadEntry.make({
      pid,
      tid,
      comm: readProcFile(`/proc/${pid}/task/${tid}/comm`).replace(/\n$/, ''),
      regs: new Uint8Array(injector.originalRegs.buf),
      xstate: new Uint8Array(getXstate(tid)),
      sigmask: hex(injector.originalSigmask),
      clearChildTid,
      robustList: getRobustList(tid),
      rseq: rseq.rseqAbiPointer ? { addr: Number(rseq.rseqAbiPointer), size: rseq.rseqAbiSize, signature: rseq.signature } : null,
      altstack: ssFlags & SS_DISABLE ? null : { sp: Number(stack.readBigUInt64LE(0)), flags: ssFlags & ~SS_ONSTACK, size: Number(stack.readBigUInt64LE(16)) },
      pending: peekSiginfo(tid, false).map((s) => new Uint8Array(s)),
      // The raw syscall returns 20 - nice, so that no valid result looks like an error.
      nice: 20 - prio!,
      timerSlackNs: timerSlackNs!,
    }),
  );
}
