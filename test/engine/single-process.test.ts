import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Workload } from '../helpers/workload.js';
import { useEngine, roundTrip, imageDir, checkpoint, restore } from '../helpers/engine.js';

function digestDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir).sort()) {
    const st = fs.statSync(path.join(dir, f));
    out[f] = `${crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, f))).digest('hex')} ${st.mtimeMs}`;
  }
  return out;
}

describe('checkpoint and restore of one process', function () {
  const engine = useEngine();

  it('a counting process comes back with its pid, memory and counter, and keeps counting', async () => {
    const w = await Workload.start(engine.tracer, 'counter');
    const { verdict, checkpoint, restore } = await roundTrip(engine.tracer, w);
    assert.equal(verdict, 'PASS');
    assert.equal(restore.pid, w.pid);
    assert.ok(checkpoint.dataPages >= 256, `the 1 MiB pattern travelled (${checkpoint.dataPages} data pages)`);
  });

  it('a process sleeping in nanosleep resumes the sleep without a spurious error', async () => {
    const w = await Workload.start(engine.tracer, 'sleeper', ['3600']);
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });

  it('a process blocked in pause() stays blocked and then handles SIGTERM', async () => {
    const w = await Workload.start(engine.tracer, 'reader', ['pause']);
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });

  it('restores the same image twice, one copy after the other, without changing it', async () => {
    const w = await Workload.start(engine.tracer, 'counter');
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir);
    const before = digestDir(dir);
    for (const round of [1, 2]) {
      fs.rmSync(w.resultFile, { force: true });
      const r = await restore(engine.tracer, dir);
      assert.equal(r.pid, w.pid, `restore ${round} keeps the pid`);
      assert.equal(await w.finish(), 'PASS', `restore ${round}`);
    }
    assert.deepEqual(digestDir(dir), before, 'restore never modifies the image');
  });
});
