import { readStatus, readLink } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import { CredsEntry } from '../image/creds.js';
import { hex } from '../image/fields.js';
import type { Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

const PR_GET_SECUREBITS = 27;

/**
 * A seccomp filter cannot be reinstalled yet (it would have to be the last
 * thing injected, and the filter may forbid the very calls a restore makes),
 * and ids and capabilities only mean something in the process's own user
 * namespace: restored into Ferry's, they could grant real privileges.
 */
export function inspect(pid: number, refusals: Refusal[]): void {
  const status = readStatus(pid);
  const seccomp = status.Seccomp ?? '0';
  if (seccomp === '1') refusals.push({ pid, resource: 'seccomp', reason: 'it runs in seccomp strict mode, which Ferry cannot restore yet' });
  if (seccomp === '2') {
    const n = status.Seccomp_filters ?? 'some';
    refusals.push({ pid, resource: 'seccomp', reason: `it has ${n} seccomp filter${n === '1' ? '' : 's'} installed, which Ferry cannot restore yet` });
  }
  const theirs = readLink(`/proc/${pid}/ns/user`);
  const ours = readLink('/proc/self/ns/user');
  if (theirs !== ours) refusals.push({ pid, resource: 'user namespace', reason: `it runs in user namespace ${theirs}, not Ferry's ${ours}: its ids and capabilities would change meaning` });
}

function ids(line: string | undefined, what: string): { real: number; effective: number; saved: number; fs: number } {
  const v = (line ?? '').split(/\s+/).map(Number);
  if (v.length !== 4 || v.some((x) => !Number.isInteger(x))) throw new Error(`unexpected ${what} line in /proc/PID/status: ${JSON.stringify(line)}`);
  return { real: v[0]!, effective: v[1]!, saved: v[2]!, fs: v[3]! };
}

function capSet(status: Record<string, string>, key: string): string {
  const v = status[key];
  if (!v || !/^[0-9a-f]{16}$/.test(v)) throw new Error(`unexpected ${key} line in /proc/PID/status: ${JSON.stringify(v)}`);
  return hex(BigInt('0x' + v));
}

export function dump(ctx: DumpContext): void {
  const { pid, injector } = ctx;
  const status = readStatus(pid);
  const groups = (status.Groups ?? '').split(/\s+/).filter(Boolean).map(Number);
  ctx.image.addEntry(
    CredsEntry.make({
      pid,
      uid: ids(status.Uid, 'Uid'),
      gid: ids(status.Gid, 'Gid'),
      groups,
      caps: {
        inheritable: capSet(status, 'CapInh'),
        permitted: capSet(status, 'CapPrm'),
        effective: capSet(status, 'CapEff'),
        bounding: capSet(status, 'CapBnd'),
        ambient: capSet(status, 'CapAmb'),
      },
      securebits: injector.call('prctl(PR_GET_SECUREBITS)', Sys.prctl, PR_GET_SECUREBITS),
      noNewPrivs: status.NoNewPrivs === '1',
    }),
  );
}
