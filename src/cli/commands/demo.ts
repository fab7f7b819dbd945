import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { Tracer } from '../../native/tracer.js';
import { findExecutable } from '../../native/host.js';
import type { CheckpointSummary } from '../../source/checkpoint.js';
import type { RestoreSummary } from '../../target/restore.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { isJsonOutput, printResult } from '../output.js';

/**
 * The demo a new user runs first: a Python program that counts in memory is
 * checkpointed to disk (and so stopped), restored with the same pid, and must
 * go on counting from exactly where it was. Live migration between lab hosts
 * replaces this once the lab exists.
 */
const COUNTER = `
import time
n = 0
while True:
    n += 1
    print(n, flush=True)
    time.sleep(0.05)
`;

interface DemoReport {
  ok: boolean;
  pid: number;
  lastBeforeCheckpoint: number;
  firstAfterRestore: number;
  checkpoint: CheckpointSummary;
  restore: RestoreSummary;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('checkpoint a running Python program to disk and restore it with the same pid')
    .action(async () => {
      const report = await runDemo();
      printResult(report, () => (report.ok ? 'PASS: the program counted on from where it was stopped.' : 'FAIL: the restored program did not continue its count.'));
      if (!report.ok) process.exitCode = ExitCode.Failed;
    });
}

function say(line: string): void {
  if (!isJsonOutput()) process.stdout.write(`${line}\n`);
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new CliError(`demo: timed out waiting for ${what}`, ExitCode.Failed);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function runDemo(): Promise<DemoReport> {
  const python = findExecutable('python3');
  if (!python) throw new CliError('demo: python3 is missing (run `npm run setup`)', ExitCode.Unsupported);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-demo-'));
  const out = path.join(work, 'counter.out');
  const image = path.join(work, 'image');
  const tracer = await Tracer.start([new URL('../../source/checkpoint.js', import.meta.url), new URL('../../target/restore.js', import.meta.url)]);
  let pid = 0;
  const counts = (): number[] => fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map(Number);
  try {
    pid = await tracer.call<number>('spawn', python, { argv: ['python3', '-c', COUNTER], cwd: work, stdout: { path: out } });
    say(`1. started a Python program that counts in memory: pid ${pid}, printing to ${out}`);
    await waitFor('the program to count to 5', () => fs.existsSync(out) && counts().length >= 5);

    const checkpoint = await tracer.call<CheckpointSummary>('checkpoint', pid, image, {});
    const lastBeforeCheckpoint = counts().at(-1)!;
    say(`2. checkpointed it at count ${lastBeforeCheckpoint}: ${checkpoint.dataPages} pages (${(checkpoint.bytes / 1048576).toFixed(1)} MiB) in ${image}, frozen ${checkpoint.frozenMs.toFixed(1)} ms`);
    say(`   the process is gone: /proc/${pid} ${fs.existsSync(`/proc/${pid}`) ? 'still exists (unexpected)' : 'does not exist'}`);

    const seen = counts().length;
    const restore = await tracer.call<RestoreSummary>('restore', image);
    say(`3. restored it from the image as pid ${restore.pid} in ${restore.restoreMs.toFixed(1)} ms`);
    await waitFor('the restored program to count on', () => counts().length >= seen + 5);
    const after = counts().slice(seen);
    say(`4. it counts on: ${after.slice(0, 5).join(', ')}, ...`);
    const all = counts();
    const ok = restore.pid === pid && all.every((n, i) => n === i + 1);
    return { ok, pid, lastBeforeCheckpoint, firstAfterRestore: after[0]!, checkpoint, restore };
  } finally {
    if (pid) {
      await tracer.call('kill', pid, 9).catch(() => undefined);
      await tracer.call('reap', pid, 5_000).catch(() => undefined);
    }
    await tracer.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}
