import assert from 'node:assert/strict';
import type { Tracer } from '../../src/native/tracer.js';
import type { Refusal } from '../../src/source/refusal.js';
import { Workload } from '../helpers/workload.js';
import { startEngine, roundTrip, cleanupImages, imageDir, checkpoint, restore } from '../helpers/engine.js';
import { rewriteImage } from '../helpers/image-surgery.js';

describe('POSIX timers', function () {
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

  it('keep their ids, clocks, notifications, intervals and time left, and go on firing', async () => {
    const w = await Workload.start(tracer, 'timers');
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  it('a restore without them is caught by the workload', async () => {
    const w = await Workload.start(tracer, 'timers', [], { FERRY_WL_DEBUG: '1' });
    const full = imageDir();
    await checkpoint(tracer, w.pid, full);
    const broken = imageDir();
    await rewriteImage(full, broken, (e) => (e.type === 'posix-timer' ? null : e));
    await restore(tracer, broken);
    const verdict = await w.finish();
    assert.match(verdict, /^FAIL .*\/proc\/self\/timers/, `verdict ${JSON.stringify(verdict)}; the workload's stderr:\n${w.stderr}`);
  });

  it("on another process's CPU clock are refused at checkpoint, naming the timer, and the process runs on", async () => {
    const w = await Workload.start(tracer, 'timers', ['other-cpu-clock']);
    await assert.rejects(checkpoint(tracer, w.pid, imageDir()), (e: Error & { refusals?: Refusal[] }) => {
      assert.ok(
        e.refusals?.some((r) => r.pid === w.pid && /^POSIX timer 8 /.test(r.resource) && /CPU time of process \d+/.test(r.reason)),
        e.message,
      );
      return true;
    });
    assert.equal(await w.finish(), 'PASS');
  });
});
