import { Sys } from '../native/syscalls.js';
import { ProcessEntry } from '../image/process.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';

const PR_SET_PDEATHSIG = 1;
const PR_SET_DUMPABLE = 4;
const PR_SET_CHILD_SUBREAPER = 36;

export function processOf(ctx: Pick<RestoreContext, 'image' | 'imagePid'>): ProcessEntry {
  const p = ctx.image.entriesOf(ProcessEntry).find((e) => e.pid === ctx.imagePid);
  if (!p) throw new Error(`the image holds no process ${ctx.imagePid}`);
  return p;
}

function putString(ctx: RestoreContext, s: string): number {
  return ctx.injector.put(Buffer.from(s + '\0'));
}

/** Directories, umask, personality and prctl flags (sessions and groups are set as the tree is built). */
export function restore(ctx: RestoreContext): void {
  const p = processOf(ctx);
  const inj = ctx.injector;
  inj.reset();
  if (p.root !== '/') inj.call(`chroot(${p.root})`, Sys.chroot, putString(ctx, p.root));
  inj.call(`chdir(${p.cwd})`, Sys.chdir, putString(ctx, p.cwd));
  inj.reset();
  inj.call('umask', Sys.umask, p.umask);
  inj.call('personality', Sys.personality, p.personality);
  if (p.childSubreaper) inj.call('prctl(PR_SET_CHILD_SUBREAPER)', Sys.prctl, PR_SET_CHILD_SUBREAPER, 1);
}

/**
 * Resource limits, once every fd is in place (a lowered RLIMIT_NOFILE would
 * refuse a high fd) and before the credentials change: set from inside, so
 * no capability over another uid's process is needed.
 */
export function restoreLimits(ctx: RestoreContext): void {
  const inj = ctx.injector;
  for (const r of processOf(ctx).rlimits) {
    const limit = Buffer.alloc(16);
    limit.writeBigUInt64LE(fromHex(r.soft), 0);
    limit.writeBigUInt64LE(fromHex(r.hard), 8);
    inj.reset();
    inj.call(`prlimit64(${r.resource})`, Sys.prlimit64, 0, r.resource, inj.put(limit), 0);
  }
  inj.reset();
}

/**
 * The parent-death signal and the dumpable flag: any change of credentials
 * resets both, so they follow creds.restore. The parent-death signal then
 * belongs to the restored process's parent on this host (the restoring
 * agent, or whoever it hands the process to): the original parent is not
 * part of a single-process image.
 */
export function restoreAfterCreds(ctx: RestoreContext): void {
  const p = processOf(ctx);
  const inj = ctx.injector;
  inj.call('prctl(PR_SET_PDEATHSIG)', Sys.prctl, PR_SET_PDEATHSIG, p.pdeathsig);
  inj.call('prctl(PR_SET_DUMPABLE)', Sys.prctl, PR_SET_DUMPABLE, p.dumpable);
}
