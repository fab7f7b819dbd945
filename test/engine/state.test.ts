import assert from 'node:assert/strict';
import type { Tracer } from '../../src/native/tracer.js';
import { Workload } from '../helpers/workload.js';
import { startEngine, roundTrip, cleanupImages } from '../helpers/engine.js';

describe('a restored process keeps its state', function () {
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

  it('signals: handlers, mask, pending signals with their si_value, altstack and interval timers', async () => {
    const w = await Workload.start(tracer, 'signals');
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  it('cpu: general registers, x87, SSE/AVX, MXCSR, fs_base and gs_base in a busy loop', async () => {
    const w = await Workload.start(tracer, 'cpu');
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });

  it('memory: every kind of mapping, brk, and an identical /proc/self/maps', async () => {
    const w = await Workload.start(tracer, 'memory');
    assert.equal((await roundTrip(tracer, w)).verdict, 'PASS');
  });
});
