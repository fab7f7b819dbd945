import assert from 'node:assert/strict';
import type { Refusal } from '../../src/source/refusal.js';
import { Workload } from '../helpers/workload.js';
import { useEngine, roundTrip, imageDir, checkpoint, restore } from '../helpers/engine.js';
import { rewriteImage } from '../helpers/image-surgery.js';

describe('POSIX timers', function () {
  const engine = useEngine();

  it('keep their ids, clocks, notifications, intervals and time left, and go on firing', async () => {
    const w = await Workload.start(engine.tracer, 'timers');
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });

  it('a restore without them is caught by the workload', async () => {
    const w = await Workload.start(engine.tracer, 'timers', [], { FERRY_WL_DEBUG: '1' });
    const full = imageDir();
    await checkpoint(engine.tracer, w.pid, full);
    const broken = imageDir();
    await rewriteImage(full, broken, (e) => (e.type === 'posix-timer' ? null : e));
    await restore(engine.tracer, broken);
    const verdict = await w.finish();
    assert.match(verdict, /^FAIL .*\/proc\/self\/timers/, `verdict ${JSON.stringify(verdict)}; the workload's stderr:\n${w.stderr}`);
  });

  it("on another process's CPU clock are refused at checkpoint, naming the timer, and the process runs on", async () => {
    const w = await Workload.start(engine.tracer, 'timers', ['other-cpu-clock']);
    await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Error & { refusals?: Refusal[] }) => {
      assert.ok(
        e.refusals?.some((r) => r.pid === w.pid && /^POSIX timer 8 /.test(r.resource) && /CPU time of process \d+/.test(r.reason)),
        e.message,
      );
      return true;
    });
    assert.equal(await w.finish(), 'PASS');
  });
});
