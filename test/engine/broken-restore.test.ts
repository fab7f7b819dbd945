import assert from 'node:assert/strict';
import type { AnyEntry } from '../../src/image/entry.js';
import { Workload } from '../helpers/workload.js';
import { useEngine, imageDir, checkpoint, restore } from '../helpers/engine.js';
import { rewriteImage } from '../helpers/image-surgery.js';

/**
 * The workloads' checks must catch a restore that loses state. Each case
 * checkpoints a workload, removes one resource's state from the image, and
 * restores that: the workload must report FAIL and say what it missed.
 * (Every workload PASSes with the full image: see the other engine tests.)
 */
const cases: Array<{ workload: string; args?: string[]; lose: string; edit(e: AnyEntry): AnyEntry | null; expect: RegExp }> = [
  {
    workload: 'counter',
    lose: 'the anonymous pages of the heap',
    // The 1 MiB buffer is malloc'ed, so it lives in an unnamed anonymous mapping of at least that size.
    edit: (e) => {
      const v = e as AnyEntry & { kind?: string; name?: string; start?: number; end?: number };
      return e.type === 'vma' && v.kind === 'anon' && v.name === '' && v.end! - v.start! >= 1 << 20 ? { ...e, segments: [] } : e;
    },
    expect: /^FAIL .*(buffer|byte|hash|crashed)/,
  },
  {
    workload: 'fds',
    lose: 'the fd table',
    edit: (e) => (e.type === 'fd' ? null : e),
    expect: /^FAIL .*fd/,
  },
  {
    workload: 'signals',
    lose: 'the pending signals',
    edit: (e) => (e.type === 'signals' ? { ...e, pending: [] } : e.type === 'thread' ? { ...e, pending: [] } : e),
    expect: /^FAIL .*(pending|Pnd)/i,
  },
  {
    workload: 'identity',
    lose: 'the credentials (restored as root)',
    edit: (e) => (e.type === 'creds' ? { ...e, uid: { real: 0, effective: 0, saved: 0, fs: 0 }, gid: { real: 0, effective: 0, saved: 0, fs: 0 } } : e),
    expect: /^FAIL .*(uid|gid|Cap|groups)/i,
  },
  {
    workload: 'cpu',
    lose: 'the extended (SSE/AVX) register state',
    edit: (e) => {
      if (e.type !== 'thread') return e;
      // Keep the legacy x87/SSE header intact so the kernel accepts it, wipe the XMM and upper registers.
      const xstate = Buffer.from((e as AnyEntry & { xstate: Uint8Array }).xstate);
      xstate.fill(0, 160, 416);
      return { ...e, xstate: new Uint8Array(xstate) };
    },
    expect: /^FAIL .*(xmm|ymm|zmm)/i,
  },
];

describe('a restore that loses state is caught by the workload', function () {
  const engine = useEngine();

  for (const c of cases) {
    it(`${c.workload} reports FAIL when ${c.lose} are missing`, async () => {
      const w = await Workload.start(engine.tracer, c.workload, c.args ?? [], { FERRY_WL_DEBUG: '1' });
      const full = imageDir();
      await checkpoint(engine.tracer, w.pid, full);
      const broken = imageDir();
      await rewriteImage(full, broken, c.edit);
      await restore(engine.tracer, broken);
      const verdict = await w.finish();
      assert.match(verdict, c.expect, `verdict ${JSON.stringify(verdict)}; the workload's stderr:\n${w.stderr}`);
    });
  }
});
