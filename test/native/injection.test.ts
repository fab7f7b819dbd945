import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Tracer } from '../../src/native/tracer.js';
import { NativeError } from '../../src/native/errors.js';
import { Sys } from '../../src/native/syscalls.js';
import { readMaps } from '../../src/native/proc.js';
import type { InjectedResult } from '../../src/native/tracer-ops.js';
import { Workload } from '../helpers/workload.js';
import { useTracer } from '../helpers/engine.js';

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const LEN = 3 * 4096;

function procState(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^\d+ \(.*\) /, '')[0]!;
}

describe('syscall injection into a running process', function () {
  const session = useTracer();

  async function inject(pid: number, calls: Parameters<Tracer['call']>[2]): Promise<InjectedResult[]> {
    await session.tracer.call('attach', pid, {});
    try {
      return await session.tracer.call<InjectedResult[]>('inject', pid, calls);
    } finally {
      await session.tracer.call('detach', pid);
    }
  }

  it('runs getpid, mmap, write and munmap inside the task, which then continues unharmed', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const mapsBefore = readMaps(w.pid).map((m) => `${m.start}-${m.end}`);

    await session.tracer.call('attach', w.pid, {});
    let mapped: number;
    try {
      const [getpid, mmap] = await session.tracer.call<InjectedResult[]>('inject', w.pid, [
        { nr: Sys.getpid },
        { nr: Sys.mmap, args: [0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0] },
      ]);
      assert.equal(getpid!.result, w.pid, 'getpid inside the task returns its pid');
      mapped = mmap!.result;
      assert.ok(mapped > 0, `mmap returned ${mapped}`);
      // The kernel may merge it with an adjacent anonymous mapping, so look for a VMA that covers it.
      const region = readMaps(w.pid).find((m) => m.start <= mapped && m.end >= mapped + LEN);
      assert.ok(region, 'the new mapping is in /proc/PID/maps');
      assert.ok(region!.read && region!.write && !region!.shared);

      const message = `injected by ferry into ${w.pid}\n`;
      const [write] = await session.tracer.call<InjectedResult[]>('inject', w.pid, [{ nr: Sys.write, args: [2, { data: Buffer.from(message) }, message.length] }]);
      assert.equal(write!.result, message.length);
      assert.ok(w.stderr.includes(message), 'the task wrote to its own stderr');

      const [munmap] = await session.tracer.call<InjectedResult[]>('inject', w.pid, [{ nr: Sys.munmap, args: [mapped, LEN] }]);
      assert.equal(munmap!.result, 0);
    } finally {
      await session.tracer.call('detach', w.pid);
    }
    assert.deepEqual(readMaps(w.pid).map((m) => `${m.start}-${m.end}`), mapsBefore, 'no mapping left behind (scratch and injected region both gone)');
    assert.equal(await w.finish(), 'PASS');
  });

  it('runs a batch of syscalls in one stop, each with its own result', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    await session.tracer.call('attach', w.pid, {});
    try {
      const results = await session.tracer.call<number[]>('injectBatch', w.pid, [
        { nr: Sys.getpid },
        { nr: Sys.close, args: [987654] },
        { nr: Sys.getppid },
      ]);
      assert.deepEqual(results, [w.pid, -9, Number(fs.readFileSync(`/proc/${w.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1])]);
    } finally {
      await session.tracer.call('detach', w.pid);
    }
    assert.equal(await w.finish(), 'PASS');
  });

  it('returns the kernel error of a failed injected call and leaves the task running', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const [bad] = await inject(w.pid, [{ nr: Sys.close, args: [987654] }]);
    assert.equal(bad!.result, -9, 'close of a bad fd gives -EBADF');
    assert.equal(await w.finish(), 'PASS');
  });

  for (const [name, args, blockedIn] of [
    ['sleeper', ['3600'], 'nanosleep'],
    ['reader', ['pipe'], 'read'],
    ['reader', ['poll'], 'poll'],
    ['reader', ['pause'], 'pause'],
  ] as const) {
    it(`injects into a task blocked in ${blockedIn}, which goes back to blocking and sees only EINTR later`, async () => {
      const w = await Workload.start(session.tracer, name, [...args]);
      await waitForState(w.pid, 'S');
      const [getpid] = await inject(w.pid, [{ nr: Sys.getpid }, { nr: Sys.getppid }]);
      assert.equal(getpid!.result, w.pid);
      await waitForState(w.pid, 'S');
      assert.ok(w.alive(), 'still running');
      assert.equal(await w.finish(), 'PASS');
    });
  }

  it('refuses to attach to a pid that does not exist, naming the call and errno', async () => {
    await assert.rejects(session.tracer.call('attach', 0x3ffffe, {}), (e: unknown) => {
      assert.ok(e instanceof NativeError, `got ${String(e)}`);
      assert.equal(e.code, 'ESRCH');
      assert.match(e.call, /PTRACE_SEIZE/);
      return true;
    });
  });

  it('reports a task that died during injection instead of hanging', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    await session.tracer.call('attach', w.pid, {});
    await session.tracer.call('kill', w.pid, 9);
    await assert.rejects(session.tracer.call('inject', w.pid, [{ nr: Sys.getpid }]), (e: unknown) => {
      assert.ok(e instanceof NativeError, `got ${String(e)}`);
      assert.equal(e.code, 'ESRCH');
      return true;
    });
  });

  async function waitForState(pid: number, state: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (procState(pid) !== state) {
      if (Date.now() > deadline) throw new Error(`pid ${pid} never reached state ${state} (is ${procState(pid)})`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
});
