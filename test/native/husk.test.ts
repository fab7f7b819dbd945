import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Tracer } from '../../src/native/tracer.js';
import { NativeError } from '../../src/native/errors.js';
import { Sys } from '../../src/native/syscalls.js';
import { readMaps } from '../../src/native/proc.js';
import type { InjectedResult } from '../../src/native/tracer-ops.js';

/** A pid nobody uses, from the top of a range the kernel hands out last. */
function freePid(from: number): number {
  for (let p = from; p < from + 5000; p++) if (!fs.existsSync(`/proc/${p}`)) return p;
  throw new Error('no free pid');
}

describe('the husk', function () {
  let tracer: Tracer;
  const spawned: number[] = [];

  before(async () => {
    tracer = await Tracer.start();
  });
  after(async () => {
    await tracer.close();
  });
  afterEach(async () => {
    for (const pid of spawned.splice(0)) await tracer.call('husk.kill', pid).catch(() => undefined);
  });

  for (const base of [0x10000000, 0x7f0000000000]) {
    it(`runs at 0x${base.toString(16)} and clones a child with a chosen pid`, async () => {
      const husk = await tracer.call<{ pid: number; base: number; gadget: number }>('husk.spawn', base);
      spawned.push(husk.pid);
      const maps = readMaps(husk.pid);
      const own = maps.find((m) => m.start === base);
      assert.ok(own, `a mapping at 0x${base.toString(16)}: ${maps.map((m) => m.start.toString(16)).join(' ')}`);
      assert.ok(own!.exec);
      assert.equal(fs.readFileSync(`/proc/${husk.pid}/comm`, 'utf8').trim(), 'ferry-husk');

      const [pid] = await tracer.call<InjectedResult[]>('husk.inject', husk.pid, [{ nr: Sys.getpid }]);
      assert.equal(pid!.result, husk.pid);

      const wanted = freePid(base === 0x10000000 ? 21000 : 26000);
      const child = await tracer.call<number>('husk.clone', husk.pid, { setTid: [wanted] });
      assert.equal(child, wanted);
      const [cpid, ppid] = await tracer.call<InjectedResult[]>('husk.inject', child, [{ nr: Sys.getpid }, { nr: Sys.getppid }]);
      assert.equal(cpid!.result, wanted, 'getpid in the child');
      assert.equal(ppid!.result, husk.pid, 'the child is the husk\'s child');
      assert.ok(readMaps(child).some((m) => m.start === base), 'the child has the husk code too');
    });
  }

  it('kills a husk tree and reaps it, so the pids are free again', async () => {
    const husk = await tracer.call<{ pid: number }>('husk.spawn');
    const wanted = freePid(23000);
    const child = await tracer.call<number>('husk.clone', husk.pid, { setTid: [wanted] });
    const grandchild = await tracer.call<number>('husk.clone', child, { setTid: [wanted + 1] });
    await tracer.call('husk.kill', husk.pid);
    for (const pid of [husk.pid, child, grandchild]) assert.ok(!fs.existsSync(`/proc/${pid}`), `pid ${pid} is gone`);
  });

  it('refuses a pid that is taken, with EEXIST', async () => {
    const husk = await tracer.call<{ pid: number }>('husk.spawn');
    spawned.push(husk.pid);
    await assert.rejects(tracer.call('husk.clone', husk.pid, { setTid: [husk.pid] }), (e: unknown) => {
      assert.ok(e instanceof NativeError, `got ${String(e)}`);
      assert.equal(e.code, 'EEXIST');
      assert.match(e.call, /clone3/);
      return true;
    });
  });
});
