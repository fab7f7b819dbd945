import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { jsonLinesOf, lastJsonOf, migrate, type CliResult } from './helpers/cli.js';
import { ROOT, workloadBin } from './helpers/paths.js';
import { initOf, ok, ps, running, useLab, verdict, waitReady } from './helpers/lab.js';
import { waitFor } from './helpers/wait.js';


interface Round {
  round: number;
  pages: number;
  bytes: number;
  dirtiedPages: number;
  cpuFraction: number | null;
  decision: string;
}

interface Report {
  id: string;
  outcome: 'done' | 'rolled-back';
  error: string | null;
  frozenMs: number | null;
  bytes: number | null;
  pages: number | null;
  live: { method: string; rounds: Round[]; fits: boolean | null; throttled: boolean; precopiedPages: number } | null;
}


/**
 * Live migration between lab hosts: the churn workload rewrites its memory
 * at a chosen rate while pre-copy rounds copy it, and checks at the end
 * that every page holds its latest generation (a page restored from a stale
 * round makes it FAIL). What the reports say must make sense for the rate.
 */
describe('live migration with pre-copy between lab hosts', function () {
  this.timeout(240_000);
  const lab = useLab(2, [workloadBin('churn')]);

  afterEach(async function () {
    for (const c of await ps()) {
      if (c.state !== 'exited') ok(await migrate(['lab', 'exec', c.host, '--', process.execPath, path.join(ROOT, 'bin/migrate'), 'stop', c.name, '--timeout', '0']));
    }
  });




  async function churn(name: string, mib: number, rate: string, extra: string[] = []): Promise<void> {
    ok(await migrate(['run', name, '--host', 'lab-1', '--', path.join(lab.binDir, 'churn'), '/tmp/result', String(mib), rate, ...extra]));
    await waitReady(name);
  }


  async function move(name: string, options: string[] = []): Promise<{ result: CliResult; report: Report; rounds: Array<Round & { event: string }> }> {
    const result = await migrate(['--json', name, '--to', 'lab-2', ...options]);
    return { result, report: lastJsonOf<Report>(result), rounds: jsonLinesOf<Round & { event: string }>(result) };
  }

  it('an idle workload converges in a few rounds, and the freeze sends almost nothing', async () => {
    await churn('idle', 64, '0');
    const { result, report, rounds } = await move('idle');
    ok(result);
    assert.equal(report.live!.method, 'uffd-wp');
    assert.ok(report.live!.rounds.length <= 3, `${report.live!.rounds.length} rounds`);
    assert.deepEqual(rounds.map((r) => r.round), report.live!.rounds.map((r) => r.round), 'one JSON line per round, then the report');
    assert.ok(report.live!.rounds[0]!.pages >= 16384, 'round 0 copied the 64 MiB');
    assert.ok(report.live!.precopiedPages >= 16000, `${report.live!.precopiedPages} pages were already on lab-2 at the freeze`);
    assert.equal(await verdict('idle'), 'PASS');
  });

  it('a workload writing 10 MB/s moves live and keeps every page\'s latest generation', async () => {
    await churn('steady', 64, '10');
    const { result, report } = await move('steady');
    ok(result);
    assert.ok(report.live!.rounds.length >= 1);
    assert.ok(report.live!.precopiedPages > 0);
    assert.equal((await running('steady'))[0]?.host, 'lab-2');
    assert.equal(await verdict('steady'), 'PASS');
  });

  it('a workload writing faster than the link is throttled in steps, or stops at the round limit, and says so', async () => {
    await churn('fast', 64, 'max');
    const { result, report } = await move('fast', ['--max-rounds', '8']);
    ok(result);
    const last = report.live!.rounds.at(-1)!;
    assert.ok(report.live!.throttled || /round limit/.test(last.decision), `last decision: ${last.decision}`);
    if (report.live!.throttled) assert.ok(report.live!.rounds.some((r) => r.cpuFraction !== null && r.cpuFraction < 1));
    assert.equal(await verdict('fast'), 'PASS');
  });

  it('without throttling a hopeless budget either freezes with a warning or, when strict, rolls back', async () => {
    await churn('hopeless', 64, 'max');
    const strict = await move('hopeless', ['--no-throttle', '--strict-downtime', '--max-downtime', '1']);
    assert.equal(strict.result.status, 5, strict.result.stderr);
    assert.match(strict.report.error!, /downtime budget cannot be met/);
    assert.deepEqual((await running('hopeless')).map((c) => c.host), ['lab-1'], 'it runs on at the source');
    const loose = await move('hopeless', ['--no-throttle', '--max-downtime', '1']);
    ok(loose.result);
    assert.equal(loose.report.live!.fits, false);
    assert.equal(loose.report.live!.throttled, false);
    assert.equal(await verdict('hopeless'), 'PASS');
  });

  it('a workload that maps and unmaps memory during pre-copy survives', async () => {
    await churn('remapper', 32, '20', ['remap']);
    const { result } = await move('remapper');
    ok(result);
    assert.equal(await verdict('remapper'), 'PASS');
  });

  it('cancel during round 3 leaves the source running, without tracking', async () => {
    await churn('cancelled', 64, 'max');
    const init = await initOf('cancelled');
    const cli = spawn(process.execPath, [path.join(ROOT, 'bin/migrate'), '--json', 'cancelled', '--to', 'lab-2', '--min-rounds', '100', '--max-rounds', '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    cli.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => cli.on('close', resolve));
    try {
      await waitFor('round 3', () => stdout.split('\n').some((l) => l.includes('"round":3')), 120_000);
      const id = JSON.parse(stdout.split('\n')[0]!).id as string;
      ok(await migrate(['cancel', id]));
      assert.equal(await exited, 5);
    } finally {
      cli.kill('SIGKILL');
    }
    const report = lastJsonOf<Report>({ status: 5, stdout, stderr: '' });
    assert.match(report.error!, /cancelled/);
    assert.deepEqual((await running('cancelled')).map((c) => c.host), ['lab-1']);
    // uffd-wp leaves its mark on registered mappings ("uw" in VmFlags) while tracking is on.
    assert.doesNotMatch(fs.readFileSync(`/proc/${init}/smaps`, 'utf8'), /^VmFlags:.*\buw\b/m, 'no mapping is still registered for write-protection');
    assert.equal(await verdict('cancelled'), 'PASS');
  });
});
