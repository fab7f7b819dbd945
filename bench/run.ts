/**
 * Runs Ferry's benchmarks and rewrites their sections of bench/RESULTS.md.
 *
 *   node dist/bench/run.js                    all of them
 *   node dist/bench/run.js injection ...      only the named ones
 *   node dist/bench/run.js --list             their names
 *   node dist/bench/migration.js              the migration benchmark alone (as `run.js migration`)
 *
 * `npm run bench [-- name...]` builds everything first (TypeScript, the test
 * and bench workloads). Tables go to stdout, progress to stderr.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Tracer } from '../src/native/tracer.js';
import { runInterruptHooks, type Benchmark, type BenchContext } from './lib/bench.js';
import { Memhog, ROOT } from './lib/memhog.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResults } from './lib/results.js';
import { injection } from './injection.js';
import { memoryRead } from './memory-read.js';
import { checkpointRestore } from './checkpoint-restore.js';
import { treeThreads } from './tree-threads.js';
import { migration } from './migration.js';
import { dirtyTracking } from './dirty-tracking.js';

const BENCHMARKS: Benchmark[] = [injection, memoryRead, checkpointRestore, treeThreads, migration, dirtyTracking];
const RESULTS = path.join(ROOT, 'bench/RESULTS.md');

const INTRO = `# Ferry benchmarks

Speed is measured here, never asserted by timing in tests. \`npm run bench\` runs every
benchmark; \`npm run bench -- <name>\` (or \`node dist/bench/run.js <name>\` after a build)
runs one and rewrites only its section below, so sections can come from different runs:
each names its machine and date. The code is in \`bench/\`, the programs measured in
\`bench/workloads/\`.

Benchmarks: ${BENCHMARKS.map((b) => `\`${b.name}\` (${b.title.toLowerCase()})`).join(', ')}.
`;

const ENGINE_MODULES = [
  new URL('../src/source/checkpoint.js', import.meta.url),
  new URL('../src/target/restore.js', import.meta.url),
  new URL('./lib/ops.js', import.meta.url),
];

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--list')) {
    for (const b of BENCHMARKS) console.log(`${b.name.padEnd(20)} ${b.title}`);
    return 0;
  }
  const unknown = argv.filter((a) => !BENCHMARKS.some((b) => b.name === a));
  if (unknown.length) {
    log(`unknown benchmark${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}; choose from ${BENCHMARKS.map((b) => b.name).join(', ')}`);
    return 2;
  }
  const chosen = argv.length ? BENCHMARKS.filter((b) => argv.includes(b.name)) : BENCHMARKS;

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-'));
  const tracer = await Tracer.start(ENGINE_MODULES);
  let interrupted = false;
  const cleanup = async () => {
    await runInterruptHooks(log);
    await Memhog.stopAll();
    // Husks are seized with EXITKILL: ending the tracer thread ends them.
    await tracer.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let failed = 0;
  try {
    for (const b of chosen) {
      const ctx: BenchContext = { tracer, tmp, log };
      const machine = machineLine(describeMachine());
      log(`== ${b.name}`);
      const started = performance.now();
      let body: string;
      try {
        body = await b.run(ctx);
      } catch (e) {
        failed++;
        log(`${b.name} failed: ${(e as Error).stack ?? String(e)}`);
        continue;
      } finally {
        await Memhog.stopAll();
      }
      const seconds = (performance.now() - started) / 1000;
      const section = `## ${b.name}: ${b.title}\n\n${machine}. Took ${seconds.toFixed(0)} s.\n\n${body}`;
      console.log(`\n${section}`);
      // After each benchmark, so a later failure keeps what was measured.
      writeResults(RESULTS, INTRO, BENCHMARKS.map((x) => x.name), new Map([[b.name, section]]));
    }
  } finally {
    if (!interrupted) await cleanup();
  }
  if (failed) log(`${failed} benchmark${failed > 1 ? 's' : ''} failed; their sections in ${path.relative(process.cwd(), RESULTS)} are unchanged`);
  else log(`results written to ${path.relative(process.cwd(), RESULTS) || RESULTS}`);
  return failed ? 1 : 0;
}

// Imported by a benchmark that runs itself (bench/migration.ts), it waits to be called.
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) process.exitCode = await main(process.argv.slice(2));
