import { readStat, readStatus, readLink, readProcFile } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import { ProcessEntry } from '../image/process.js';
import { hex } from '../image/fields.js';
import type { Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

const PR_GET_PDEATHSIG = 2;
const PR_GET_DUMPABLE = 3;
const PR_GET_CHILD_SUBREAPER = 37;
const RLIMIT_COUNT = 16;

export function inspect(pid: number, refusals: Refusal[]): void {
  const status = readStatus(pid);
  const tracer = Number(status.TracerPid ?? 0);
  if (tracer) refusals.push({ pid, resource: 'ptrace', reason: `it is being traced by pid ${tracer} (a debugger or another checkpoint)` });
  if (status.State?.startsWith('Z')) refusals.push({ pid, resource: 'state', reason: 'it is a zombie' });
}

export function dump(ctx: DumpContext): void {
  const { pid, injector } = ctx;
  const stat = readStat(pid);
  const status = readStatus(pid);
  const out = injector.reserve(4);
  injector.call('prctl(PR_GET_PDEATHSIG)', Sys.prctl, PR_GET_PDEATHSIG, out);
  const pdeathsig = injector.read(out, 4).readInt32LE(0);
  injector.call('prctl(PR_GET_CHILD_SUBREAPER)', Sys.prctl, PR_GET_CHILD_SUBREAPER, out);
  const childSubreaper = injector.read(out, 4).readInt32LE(0) !== 0;
  injector.reset();
  const dumpable = injector.call('prctl(PR_GET_DUMPABLE)', Sys.prctl, PR_GET_DUMPABLE);
  // From inside: prlimit on a process with other uids needs CAP_SYS_RESOURCE, which hosts may withhold.
  const rlimits = [];
  const limit = injector.reserve(16);
  for (let resource = 0; resource < RLIMIT_COUNT; resource++) {
    injector.call(`prlimit64(${resource})`, Sys.prlimit64, 0, resource, 0, limit);
    const r = injector.read(limit, 16);
    rlimits.push({ resource, soft: hex(r.readBigUInt64LE(0)), hard: hex(r.readBigUInt64LE(8)) });
  }
  injector.reset();
  ctx.image.addEntry(
    ProcessEntry.make({
      pid,
      ppid: Number(stat.fields[4]),
      pgid: Number(stat.fields[5]),
      sid: Number(stat.fields[6]),
      comm: stat.comm,
      cwd: readLink(`/proc/${pid}/cwd`),
      root: readLink(`/proc/${pid}/root`),
      umask: parseInt(status.Umask ?? '022', 8),
      personality: parseInt(readProcFile(`/proc/${pid}/personality`).trim(), 16),
      rlimits,
      pdeathsig,
      dumpable,
      childSubreaper,
      exitSignal: Number(stat.fields[38]),
      threads: ctx.threads.map((t) => t.tid),
    }),
  );
}
