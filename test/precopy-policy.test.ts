import assert from 'node:assert/strict';
import { ConvergencePolicy, THROTTLE_STEPS, type PolicyOptions } from '../src/precopy/policy.js';

const PAGE = 4096;
const base: PolicyOptions = { maxDowntimeMs: 100, maxRounds: 10, minRounds: 1, throttle: true, strictDowntime: false, fixedFreezeMs: 20 };

/** A round that sent `mib` MiB in `ms` and saw `dirtyMib` written meanwhile. */
function round(n: number, mib: number, ms: number, dirtyMib: number) {
  const pages = (mib << 20) / PAGE;
  return { round: n, pages, bytes: mib << 20, ms, dirtiedPages: Math.round((dirtyMib * (1 << 20)) / PAGE) };
}

describe('pre-copy convergence policy', () => {
  it('freezes after round 0 when an idle workload left little to send', () => {
    const p = new ConvergencePolicy(base);
    // 256 MiB at 1 GiB/s; 1 MiB written meanwhile: 1 ms of transfer + 20 ms fixed.
    const d = p.next(round(0, 256, 250, 1));
    assert.equal(d.action, 'freeze');
    assert.ok(d.action === 'freeze' && d.fits);
    assert.ok(Math.abs(d.predictedMs - 21) < 1, `predicted ${d.predictedMs}`);
  });

  it('goes on while the dirty set shrinks, and freezes once the rest fits', () => {
    const p = new ConvergencePolicy(base);
    assert.equal(p.next(round(0, 256, 250, 200)).action, 'round');
    assert.equal(p.next(round(1, 200, 200, 100)).action, 'round');
    const d = p.next(round(2, 100, 100, 50));
    // 50 MiB at ~1 GiB/s is ~49 ms + 20 ms fixed.
    assert.equal(d.action, 'freeze');
  });

  it('throttles in steps when the workload writes faster than the link, then freezes over the budget and says so', () => {
    const p = new ConvergencePolicy({ ...base, maxRounds: 30 });
    let d = p.next(round(0, 256, 1000, 300));
    assert.equal(d.action, 'round');
    const steps: number[] = [];
    for (let r = 1; r < 30 && d.action !== 'freeze'; r++) {
      d = p.next(round(r, 300, 1000, 300));
      if (d.action === 'throttle') steps.push(d.cpuFraction);
    }
    assert.deepEqual(steps, THROTTLE_STEPS);
    assert.equal(d.action, 'freeze');
    assert.ok(d.action === 'freeze' && !d.fits);
    assert.match(d.reason, /stopped shrinking even at the lowest CPU share.*over the 100 ms budget/);
  });

  it('without throttling freezes at the first stall; with a strict budget aborts instead', () => {
    const loose = new ConvergencePolicy({ ...base, throttle: false });
    loose.next(round(0, 256, 1000, 300));
    const d = loose.next(round(1, 300, 1000, 300));
    assert.equal(d.action, 'freeze');
    assert.match(d.reason, /throttling is off/);

    const strict = new ConvergencePolicy({ ...base, throttle: false, strictDowntime: true });
    strict.next(round(0, 256, 1000, 300));
    assert.equal(strict.next(round(1, 300, 1000, 300)).action, 'abort');
  });

  it('does not throttle or go on when the fixed cost of a freeze is over the budget by itself and few pages are left', () => {
    const p = new ConvergencePolicy({ ...base, fixedFreezeMs: 150 });
    const d = p.next(round(0, 20, 200, 0.2));
    assert.equal(d.action, 'freeze');
    assert.ok(d.action === 'freeze' && !d.fits);
    assert.match(d.reason, /the freeze costs about 150 ms whatever the memory/);
  });

  it('runs the rounds asked for at least, even when the rest would fit', () => {
    const p = new ConvergencePolicy({ ...base, minRounds: 3 });
    assert.equal(p.next(round(0, 256, 250, 0)).action, 'round');
    assert.equal(p.next(round(1, 0, 1, 0)).action, 'round');
    assert.equal(p.next(round(2, 0, 1, 0)).action, 'freeze');
  });

  it('stops at the round limit', () => {
    const p = new ConvergencePolicy({ ...base, maxRounds: 3 });
    assert.equal(p.next(round(0, 256, 1000, 200)).action, 'round');
    assert.equal(p.next(round(1, 200, 1000, 150)).action, 'round');
    const d = p.next(round(2, 150, 1000, 100));
    assert.equal(d.action, 'freeze');
    assert.match(d.reason, /round limit \(3\)/);
  });

  it('predicts from the measured bandwidth and reports the dirty rate', () => {
    const p = new ConvergencePolicy(base);
    p.next(round(0, 100, 1000, 10));
    assert.ok(Math.abs(p.bandwidth - (100 << 20) / 1000) < 1);
    assert.ok(Math.abs(p.dirtyRate - (10 << 20) / 1000) < 5);
    // 1 MiB at 0.1 MiB/ms is 10 ms, plus the 20 ms a freeze costs anyway.
    assert.ok(Math.abs(p.predict(256) - 30) < 0.01, `${p.predict(256)}`);
  });
});
