import { readStatus } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import { CredsEntry } from '../image/creds.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';
import type { BatchCall } from '../native/inject.js';
import { NativeError } from '../native/errors.js';

const PR_CAPBSET_DROP = 24;
const PR_SET_SECUREBITS = 28;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;
const SECBIT_NO_SETUID_FIXUP = 1 << 2;
const SECBIT_KEEP_CAPS = 1 << 4;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const CAP_SETGID = 6;
const CAP_SETUID = 7;
const CAP_SETPCAP = 8;

const CAP_NAMES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap',
  'linux_immutable', 'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner',
  'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice',
  'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease', 'audit_write', 'audit_control', 'setfcap',
  'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf',
  'checkpoint_restore',
];

function capNames(set: bigint): string {
  const out: string[] = [];
  for (let c = 0; c < 64; c++) if (set & (1n << BigInt(c))) out.push(CAP_NAMES[c] ? `CAP_${CAP_NAMES[c]!.toUpperCase()}` : `capability ${c}`);
  return out.join(', ');
}

function statusCaps(status: Record<string, string>, key: string): bigint {
  return BigInt('0x' + (status[key] ?? '0'));
}

function credsOf(ctx: Pick<RestoreContext, 'image' | 'imagePid'>): CredsEntry {
  const c = ctx.image.entriesOf(CredsEntry).find((e) => e.pid === ctx.imagePid);
  if (!c) throw new Error(`the image holds no credentials for pid ${ctx.imagePid}`);
  return c;
}

/**
 * Whether Ferry here can give the process its credentials back: it needs
 * the capabilities that change ids and capability sets, and it can only hand
 * out capabilities that are in its own bounding set.
 */
export function preflight(ctx: Pick<RestoreContext, 'image'>, problems: string[]): void {
  for (const c of ctx.image.entriesOf(CredsEntry)) preflightOne(c, problems);
}

function preflightOne(c: CredsEntry, problems: string[]): void {
  const ours = readStatus('self');
  const effective = statusCaps(ours, 'CapEff');
  const bounding = statusCaps(ours, 'CapBnd');
  const tools = [CAP_SETUID, CAP_SETGID, CAP_SETPCAP].map((n) => 1n << BigInt(n)).reduce((a, b) => a | b);
  if ((effective & tools) !== tools) problems.push(`credentials of pid ${c.pid}: Ferry lacks ${capNames(tools & ~effective)}, which restoring ids and capabilities needs`);
  const wanted = fromHex(c.caps.permitted) | fromHex(c.caps.inheritable) | fromHex(c.caps.bounding);
  const missing = wanted & ~bounding;
  if (missing) problems.push(`credentials of pid ${c.pid}: the process holds ${capNames(missing)}, which this host's Ferry does not have to give`);
  if (ours.NoNewPrivs === '1' && !c.noNewPrivs) problems.push(`credentials of pid ${c.pid}: Ferry runs with no_new_privs, which the restored process would inherit and the original did not have`);
}

/** struct __user_cap_header_struct + two __user_cap_data_struct (version 3: 64-bit sets split in halves). */
function capsetArgs(effective: bigint, permitted: bigint, inheritable: bigint): { header: Buffer; data: Buffer } {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  const data = Buffer.alloc(24);
  [effective, permitted, inheritable].forEach((set, i) => {
    data.writeUInt32LE(Number(set & 0xffffffffn), i * 4);
    data.writeUInt32LE(Number(set >> 32n), 12 + i * 4);
  });
  return { header, data };
}

/** A capset call for a batch, its arguments copied into scratch memory. */
function capset(ctx: RestoreContext, effective: bigint, permitted: bigint, inheritable: bigint): BatchCall {
  const { header, data } = capsetArgs(effective, permitted, inheritable);
  return { nr: Sys.capset, args: [ctx.injector.put(header), ctx.injector.put(data)] };
}

/**
 * Turns the husk (root, with Ferry's capabilities) into the saved identity.
 * Every step that needs a privilege runs while the husk still has it:
 * inheritable before the bounding set shrinks (no inheritable capability may
 * be added outside it), groups and gids while CAP_SETGID is there, and the uid
 * change under SECBIT_NO_SETUID_FIXUP|SECBIT_KEEP_CAPS so it leaves the
 * capability sets alone; only then are the ambient set, the securebits and
 * finally the saved capability sets put in place, each step needing what the
 * next one takes away. no_new_privs is irreversible and comes last.
 *
 * A credential change resets dumpable and the parent-death signal, so those
 * are set after this (process.restoreAfterCreds).
 */
export function restore(ctx: RestoreContext): void {
  const c = credsOf(ctx);
  const inj = ctx.injector;
  // Credentials belong to the thread the injector drives: read and check that thread's own.
  const tid = inj.pid;
  const now = readStatus(ctx.pid, tid);
  const inheritable = fromHex(c.caps.inheritable);
  inj.reset();
  const calls: BatchCall[] = [capset(ctx, statusCaps(now, 'CapEff'), statusCaps(now, 'CapPrm'), inheritable)];

  const bounding = fromHex(c.caps.bounding);
  const husksBounding = statusCaps(now, 'CapBnd');
  for (let cap = 0; cap < 64; cap++) {
    const bit = 1n << BigInt(cap);
    if (husksBounding & bit && !(bounding & bit)) calls.push({ nr: Sys.prctl, args: [PR_CAPBSET_DROP, cap] });
  }

  const groups = Buffer.alloc(4 * c.groups.length);
  c.groups.forEach((g, i) => groups.writeUInt32LE(g, i * 4));
  calls.push(
    { nr: Sys.setgroups, args: [c.groups.length, inj.put(groups)] },
    { nr: Sys.setresgid, args: [c.gid.real, c.gid.effective, c.gid.saved] },
    { nr: Sys.setfsgid, args: [c.gid.fs] },
    { nr: Sys.prctl, args: [PR_SET_SECUREBITS, SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP] },
    { nr: Sys.setresuid, args: [c.uid.real, c.uid.effective, c.uid.saved] },
    { nr: Sys.setfsuid, args: [c.uid.fs] },
    { nr: Sys.prctl, args: [PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0] },
  );
  const ambient = fromHex(c.caps.ambient);
  for (let cap = 0; cap < 64; cap++) {
    if (ambient & (1n << BigInt(cap))) calls.push({ nr: Sys.prctl, args: [PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0] });
  }
  calls.push({ nr: Sys.prctl, args: [PR_SET_SECUREBITS, c.securebits] }, capset(ctx, fromHex(c.caps.effective), fromHex(c.caps.permitted), inheritable));
  if (c.noNewPrivs) calls.push({ nr: Sys.prctl, args: [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0] });
  // One stop for the whole sequence: the calls run in order and none needs another's result.
  // setfsuid/setfsgid return the previous id, never an error: verify() catches what they could not do.
  const results = inj.batchRaw(calls);
  inj.reset();
  results.forEach((r, i) => {
    const call = calls[i]!;
    if (call.nr === Sys.setfsuid || call.nr === Sys.setfsgid) return;
    if (r < 0n && r >= -4095n) throw new NativeError(`credentials of ${ctx.pid} thread ${tid}: syscall ${call.nr} #${i}`, Number(-r));
  });
  verify(ctx, c, tid);
}

/** setfsuid/setfsgid report no errors, and a capability the kernel quietly dropped would go unnoticed: compare what the kernel now shows. */
function verify(ctx: RestoreContext, c: CredsEntry, tid: number): void {
  const s = readStatus(ctx.pid, tid);
  const want: Record<string, string> = {
    Uid: [c.uid.real, c.uid.effective, c.uid.saved, c.uid.fs].join('\t'),
    Gid: [c.gid.real, c.gid.effective, c.gid.saved, c.gid.fs].join('\t'),
    Groups: c.groups.join(' '),
    CapInh: fromHex(c.caps.inheritable).toString(16).padStart(16, '0'),
    CapPrm: fromHex(c.caps.permitted).toString(16).padStart(16, '0'),
    CapEff: fromHex(c.caps.effective).toString(16).padStart(16, '0'),
    CapBnd: fromHex(c.caps.bounding).toString(16).padStart(16, '0'),
    CapAmb: fromHex(c.caps.ambient).toString(16).padStart(16, '0'),
    NoNewPrivs: c.noNewPrivs ? '1' : '0',
  };
  const wrong = Object.entries(want).filter(([k, v]) => (s[k] ?? '').replace(/\s+/g, ' ') !== v.replace(/\s+/g, ' '));
  if (wrong.length) {
    throw new Error(`credentials of ${ctx.pid} thread ${tid} did not take: ${wrong.map(([k, v]) => `${k} is "${s[k]}", expected "${v}"`).join('; ')}`);
  }
}
