import assert from 'node:assert/strict';
import { Workload } from '../helpers/workload.js';
import { useEngine, roundTrip } from '../helpers/engine.js';

describe('a restored process keeps its state', function () {
  const engine = useEngine();

  it('signals: handlers, mask, pending signals with their si_value, altstack and interval timers', async () => {
    const w = await Workload.start(engine.tracer, 'signals');
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });

  it('cpu: general registers, x87, SSE/AVX, MXCSR, fs_base and gs_base in a busy loop', async () => {
    const w = await Workload.start(engine.tracer, 'cpu');
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });

  it('memory: every kind of mapping, brk, and an identical /proc/self/maps', async () => {
    const w = await Workload.start(engine.tracer, 'memory');
    assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS');
  });
});
