import assert from 'node:assert/strict';
import fs from 'node:fs';
import { pidfdOpen, pidfdGetfd, pidfdSendSignal, close, prlimit, setns, socket, getsockopt, setsockopt, open, ioctl, OpenFlags } from '../../src/native/process.js';
import { NativeError } from '../../src/native/errors.js';
import { Workload } from '../helpers/workload.js';
import { useTracer } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const CLONE_NEWUTS = 0x04000000;
const FIONREAD = 0x541b;
const RLIMIT_NOFILE = 7;

/** The native wrappers that the engine uses from the agent's side (no ptrace): each against the real kernel. */
describe('native bindings', function () {
  const session = useTracer();

  it('pidfd_getfd copies another process\'s fd, and pidfd_send_signal delivers a signal it handles', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const pidfd = pidfdOpen(w.pid);
    try {
      const stderr = pidfdGetfd(pidfd, 2);
      try {
        assert.equal(fs.readlinkSync(`/proc/self/fd/${stderr}`), fs.readlinkSync(`/proc/${w.pid}/fd/2`));
      } finally {
        close(stderr);
      }
      pidfdSendSignal(pidfd, 15);
    } finally {
      close(pidfd);
    }
    await session.tracer.call('reap', w.pid, 10_000);
    assert.equal(w.result(), 'PASS');
  });

  it('prlimit64 reads our own limits as the kernel reports them', () => {
    const limits = prlimit(process.pid, RLIMIT_NOFILE);
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
    const [soft, hard] = line.split(/\s{2,}/).slice(1, 3).map((v) => BigInt(v));
    assert.deepEqual(limits, { soft, hard });
  });

  it('setns joins a namespace we hold an fd of (our own uts namespace)', () => {
    const fd = open('/proc/self/ns/uts', OpenFlags.O_RDONLY);
    try {
      setns(fd, CLONE_NEWUTS);
    } finally {
      close(fd);
    }
  });

  it('socket, setsockopt and getsockopt round-trip an option; ioctl answers FIONREAD', () => {
    const fd = socket(AF_INET, SOCK_STREAM);
    try {
      const on = Buffer.alloc(4);
      on.writeInt32LE(1);
      setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, on);
      assert.equal(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, 4).readInt32LE(0), 1);
      const pending = Buffer.alloc(4);
      ioctl(fd, FIONREAD, pending);
      assert.equal(pending.readInt32LE(0), 0);
    } finally {
      close(fd);
    }
  });

  it('PTRACE_SECCOMP_GET_FILTER reads back the filter a process installed', async () => {
    // One instruction: BPF_RET SECCOMP_RET_ALLOW.
    const probe = `import ctypes, struct, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
allow = ctypes.create_string_buffer(struct.pack('<HBBI', 0x06, 0, 0, 0x7fff0000))
prog = ctypes.create_string_buffer(struct.pack('<HxxxxxxQ', 1, ctypes.addressof(allow)))
if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, prog, 0, 0): raise OSError(ctypes.get_errno(), 'seccomp')
time.sleep(3600)`;
    const pid = await session.tracer.call<number>('spawn', '/usr/bin/python3', { argv: ['python3', '-c', probe] });
    try {
      await waitFor('the probe to install its filter', () => /^Seccomp:\s*2$/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8')));
      await session.tracer.call('attach', pid, {});
      const filter = Buffer.from(await session.tracer.call<Uint8Array>('seccompFilter', pid, 0));
      assert.deepEqual([filter.length, filter.readUInt16LE(0), filter.readUInt32LE(4)], [8, 0x06, 0x7fff0000]);
      assert.equal(await session.tracer.call('seccompFilter', pid, 1), null, 'only one filter');
      await session.tracer.call('detach', pid);
    } finally {
      await session.tracer.call('kill', pid, 9);
      await session.tracer.call('reap', pid, 5000);
    }
  });

  it('errors carry errno, its name and the call', () => {
    assert.throws(() => pidfdOpen(0x3ffffe), (e: unknown) => e instanceof NativeError && e.code === 'ESRCH' && e.errno === 3 && /pidfd_open/.test(e.call));
  });
});
