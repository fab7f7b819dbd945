import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Tracer } from '../../src/native/tracer.js';
import { Workload } from '../helpers/workload.js';
import { startEngine, roundTrip, cleanupImages } from '../helpers/engine.js';

describe('checkpoint and restore of one process', function () {
  let tracer: Tracer;

  before(async () => {
    tracer = await startEngine();
  });
  after(async () => {
    await tracer.close();
  });
  afterEach(async () => {
    await Workload.cleanupAll();
    cleanupImages();
  });

  it('a counting process comes back with its pid, memory and counter, and keeps counting', async () => {
    const w = await Workload.start(tracer, 'counter');
    const { verdict, checkpoint, restore } = await roundTrip(tracer, w);
    assert.equal(verdict, 'PASS');
    assert.equal(restore.pid, w.pid);
    assert.ok(checkpoint.dataPages >= 256, `the 1 MiB pattern travelled (${checkpoint.dataPages} data pages)`);
  });

  it('a process sleeping in nanosleep resumes the sleep without a spurious error', async () => {
    const w = await Workload.start(tracer, 'sleeper', ['3600']);
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  it('a process blocked in pause() stays blocked and then handles SIGTERM', async () => {
    const w = await Workload.start(tracer, 'reader', ['pause']);
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  it('the image can be restored again after the restored copy is gone', async () => {
    const w = await Workload.start(tracer, 'counter');
    const first = await roundTrip(tracer, w);
    assert.equal(first.verdict, 'PASS');
    assert.ok(!fs.existsSync(`/proc/${w.pid}`));
  });
});
