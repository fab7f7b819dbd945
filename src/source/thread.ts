import { readProcFile, listThreads } from '../native/proc.js';
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

export function inspect(pid: number, refusals: Refusal[]): void {
  const tids = listThreads(pid);
  if (tids.length > 1) refusals.push({ pid, resource: `threads ${tids.join(',')}`, reason: `${tids.length} threads: multi-threaded processes are not supported yet` });
}

/** The thread's CPU and kernel state. Registers and mask are the ones from before injection began. */
export function dump(ctx: DumpContext): void {
  const { pid, injector } = ctx;
  const tid = pid;
  const out = injector.reserve(8);
  injector.call('prctl(PR_GET_TID_ADDRESS)', Sys.prctl, PR_GET_TID_ADDRESS, out);
  const clearChildTid = Number(injector.read(out, 8).readBigUInt64LE(0));
  injector.reset();
  const ss = injector.reserve(24);
  injector.call('sigaltstack', Sys.sigaltstack, 0, ss);
  const stack = injector.read(ss, 24);
  injector.reset();
  const ssFlags = stack.readInt32LE(8);
  const rseq = getRseqConfiguration(tid);
  // The raw syscall returns 20 - nice, so that no valid result looks like an error.
  const nice = 20 - injector.call('getpriority', Sys.getpriority, PRIO_PROCESS, 0);
  const timerSlackNs = injector.call('prctl(PR_GET_TIMERSLACK)', Sys.prctl, PR_GET_TIMERSLACK);
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
      nice,
      timerSlackNs,
    }),
  );
}
