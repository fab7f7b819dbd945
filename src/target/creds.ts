import { readStatus } from '../native/proc.js';
import { Sys } from '../native/syscalls.js';
import { CredsEntry } from '../image/creds.js';
import { fromHex } from '../image/fields.js';
import type { RestoreContext } from './context.js';

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

function credsOf(ctx: Pick<RestoreContext, 'image' | 'pid'>): CredsEntry {
  const c = ctx.image.entriesOf(CredsEntry).find((e) => e.pid === ctx.pid);
  if (!c) throw new Error(`the image holds no credentials for pid ${ctx.pid}`);
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

function capset(ctx: RestoreContext, effective: bigint, permitted: bigint, inheritable: bigint): void {
  const inj = ctx.injector;
  const { header, data } = capsetArgs(effective, permitted, inheritable);
  inj.reset();
  inj.call('capset', Sys.capset, inj.put(header), inj.put(data));
  inj.reset();
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
  const now = readStatus(ctx.pid);
  const inheritable = fromHex(c.caps.inheritable);
  capset(ctx, statusCaps(now, 'CapEff'), statusCaps(now, 'CapPrm'), inheritable);

  const bounding = fromHex(c.caps.bounding);
  const husksBounding = statusCaps(now, 'CapBnd');
  for (let cap = 0; cap < 64; cap++) {
    const bit = 1n << BigInt(cap);
    if (husksBounding & bit && !(bounding & bit)) inj.call(`prctl(PR_CAPBSET_DROP, ${cap})`, Sys.prctl, PR_CAPBSET_DROP, cap);
  }

  const groups = Buffer.alloc(4 * c.groups.length);
  c.groups.forEach((g, i) => groups.writeUInt32LE(g, i * 4));
  inj.reset();
  inj.call('setgroups', Sys.setgroups, c.groups.length, inj.put(groups));
  inj.reset();
  inj.call('setresgid', Sys.setresgid, c.gid.real, c.gid.effective, c.gid.saved);
  inj.call('setfsgid', Sys.setfsgid, c.gid.fs);

  inj.call('prctl(PR_SET_SECUREBITS)', Sys.prctl, PR_SET_SECUREBITS, SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP);
  inj.call('setresuid', Sys.setresuid, c.uid.real, c.uid.effective, c.uid.saved);
  inj.call('setfsuid', Sys.setfsuid, c.uid.fs);

  inj.call('prctl(PR_CAP_AMBIENT_CLEAR_ALL)', Sys.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  const ambient = fromHex(c.caps.ambient);
  for (let cap = 0; cap < 64; cap++) {
    if (ambient & (1n << BigInt(cap))) inj.call(`prctl(PR_CAP_AMBIENT_RAISE, ${cap})`, Sys.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
  }
  inj.call('prctl(PR_SET_SECUREBITS)', Sys.prctl, PR_SET_SECUREBITS, c.securebits);
  capset(ctx, fromHex(c.caps.effective), fromHex(c.caps.permitted), inheritable);

  if (c.noNewPrivs) inj.call('prctl(PR_SET_NO_NEW_PRIVS)', Sys.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  verify(ctx, c);
}

/** setfsuid/setfsgid report no errors, and a capability the kernel quietly dropped would go unnoticed: compare what the kernel now shows. */
function verify(ctx: RestoreContext, c: CredsEntry): void {
  const s = readStatus(ctx.pid);
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
    throw new Error(`credentials of ${ctx.pid} did not take: ${wrong.map(([k, v]) => `${k} is "${s[k]}", expected "${v}"`).join('; ')}`);
  }
}
