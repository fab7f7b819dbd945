import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Tracer } from '../../src/native/tracer.js';
import type { Refusal } from '../../src/source/refusal.js';
import { Workload } from '../helpers/workload.js';
import { waitFor } from '../helpers/wait.js';
import { startEngine, roundTrip, cleanupImages, checkpoint, imageDir } from '../helpers/engine.js';
import { CredsEntry } from '../../src/image/creds.js';
import { hex } from '../../src/image/fields.js';
import type { ImageReader } from '../../src/image/format.js';
import { preflight } from '../../src/target/creds.js';

/** Installs a seccomp filter that allows everything (only its presence matters), then sleeps. */
const SECCOMP_PROBE = `
import ctypes, struct, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
allow = ctypes.create_string_buffer(struct.pack('<HBBI', 0x06, 0, 0, 0x7fff0000))
prog = ctypes.create_string_buffer(struct.pack('<HxxxxxxQ', 1, ctypes.addressof(allow)))
if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, prog, 0, 0):
    raise OSError(ctypes.get_errno(), 'seccomp')
time.sleep(3600)
`;

function statusField(pid: number | 'self', key: string): string | undefined {
  try {
    return new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

describe('a restored process keeps its identity', function () {
  let tracer: Tracer;
  const strays: number[] = [];

  before(async () => {
    tracer = await startEngine();
  });
  after(async () => {
    await tracer.close();
  });
  afterEach(async () => {
    for (const pid of strays.splice(0)) {
      await tracer.call('kill', pid, 9);
      await tracer.call('reap', pid, 5_000);
    }
    await Workload.cleanupAll();
    cleanupImages();
  });

  // The workload's parent-death signal (SIGUSR1) comes back pointing at the
  // restored process's new parent, this test process: see process.restoreAfterCreds.
  it('identity: credentials, capabilities, prctl flags, rlimits, personality, cwd, umask, comm', async () => {
    const w = await Workload.start(tracer, 'identity');
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  /** Starts a program that is no workload (it writes no READY file) and waits until `ready` holds for it. */
  async function startProbe(argv: string[], what: string, ready: (pid: number) => boolean): Promise<number> {
    const pid = await tracer.call<number>('spawn', argv[0]!, { argv, env: { PATH: '/usr/bin:/bin' } });
    strays.push(pid);
    await waitFor(what, () => ready(pid));
    return pid;
  }

  async function assertRefused(pid: number, resource: string, reason: RegExp): Promise<void> {
    const refusals = await tracer.call<Refusal[]>('inspect', pid);
    const ours = refusals.find((r) => r.resource === resource);
    assert.ok(ours, `a refusal naming ${resource} among ${JSON.stringify(refusals)}`);
    assert.match(ours.reason, reason);
    await assert.rejects(checkpoint(tracer, pid, imageDir()), (e: Error) => e.message.includes(resource) && reason.test(e.message));
    assert.equal(statusField(pid, 'TracerPid'), '0', 'the refused process was never attached');
    assert.match(statusField(pid, 'State') ?? '', /^[RSD]/, 'the refused process still runs, not stopped');
  }

  it('refuses a process with a seccomp filter before touching it', async () => {
    const pid = await startProbe(['/usr/bin/python3', '-c', SECCOMP_PROBE], 'the probe to install its seccomp filter', (p) => statusField(p, 'Seccomp') === '2');
    await assertRefused(pid, 'seccomp', /1 seccomp filter installed/);
  });

  it('refuses a process in another user namespace, whose ids mean something else', async () => {
    const pid = await startProbe(['/usr/bin/unshare', '--user', '--map-root-user', '/usr/bin/sleep', '3600'], 'sleep to run in its own user namespace', (p) => {
      try {
        return fs.readlinkSync(`/proc/${p}/exe`) === '/usr/bin/sleep' && fs.readlinkSync(`/proc/${p}/ns/user`) !== fs.readlinkSync('/proc/self/ns/user');
      } catch {
        return false;
      }
    });
    await assertRefused(pid, 'user namespace', /not Ferry's/);
  });

  it('refuses to restore capabilities this host cannot grant, before building anything', () => {
    const ours = BigInt('0x' + statusField('self', 'CapBnd'));
    let cap = 0;
    while (ours & (1n << BigInt(cap))) cap++;
    const ids = { real: 1000, effective: 1000, saved: 1000, fs: 1000 };
    const creds = CredsEntry.make({
      pid: 4242,
      uid: ids,
      gid: ids,
      groups: [],
      caps: { inheritable: hex(0), permitted: hex(1n << BigInt(cap)), effective: hex(0), bounding: hex(ours), ambient: hex(0) },
      securebits: 0,
      noNewPrivs: false,
    });
    const image = { entriesOf: (def: unknown) => (def === CredsEntry ? [creds] : []) } as unknown as ImageReader;
    const problems: string[] = [];
    preflight({ image }, problems);
    assert.equal(problems.length, 1, problems.join('; '));
    assert.match(problems[0]!, /^credentials of pid 4242: the process holds (CAP_[A-Z_]+|capability \d+), which this host's Ferry does not have to give$/);
  });
});
