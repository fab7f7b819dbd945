import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { readInventory } from '../../cluster/inventory.js';
import type { ContainerSpec } from '../../container/spec.js';
import { RunReply, RunRequest, StopReply, StopRequest, type MigrationReport } from '../../coordinator/messages.js';
import { findExecutable } from '../../native/host.js';
import { labDown, labUp } from '../../lab/lab.js';
import { hostStateDir } from '../../lab/layout.js';
import { readRecord } from '../../lab/record.js';
import { hostAddress, withHost } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatTable, isJsonOutput, printResult } from '../output.js';
import { follow } from './move.js';
import { requireRoot } from './run.js';

/**
 * The demo a new user runs first: three simulated hosts, a container whose
 * Python program counts in memory and prints each number, moved lab-1 →
 * lab-2 → lab-3 while it counts. Each host keeps the log of what ran there;
 * read one after the other they must count 1, 2, 3, … with no number lost
 * or repeated, which only holds if the program went on from exactly where
 * it was frozen.
 */
const COUNTER = `
import time
n = 0
while True:
    n += 1
    print(n, flush=True)
    time.sleep(0.02)
`;

const HOSTS = ['lab-1', 'lab-2', 'lab-3'];
const NAME = 'counter';

interface DemoReport {
  ok: boolean;
  hops: MigrationReport[];
  /** The numbers each host's log holds: first, last, how many. */
  logs: Array<{ host: string; first: number | null; last: number | null; lines: number }>;
  problem: string | null;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('make a 3-host lab, move a counting container lab-1 → lab-2 → lab-3, check it never missed a beat, remove the lab')
    .addHelpText('after', '\nThe lab is added to the inventory ($FERRY_CONFIG_DIR/cluster.json) while the demo runs and removed after.')
    .action(async () => {
      requireRoot('run the demo');
      const report = await runDemo();
      printResult(report, render);
      if (!report.ok) process.exitCode = ExitCode.Failed;
    });
}

function say(line: string): void {
  if (!isJsonOutput()) process.stdout.write(`${line}\n`);
}

async function runDemo(): Promise<DemoReport> {
  if (!findExecutable('python3')) throw new CliError('demo: python3 is missing (run `npm run setup`)', ExitCode.Unsupported);
  if (readRecord()) throw new CliError('demo: a lab is already up; `migrate lab down` first (the demo makes its own)', ExitCode.Failed);
  say('1. making a lab of 3 hosts, each with its own namespaces and agent ...');
  await labUp({ hosts: HOSTS.length, agents: true });
  try {
    const inventory = readInventory()!;
    const spec: ContainerSpec = { name: NAME, command: ['python3', '-c', COUNTER], hostname: NAME, env: {}, cwd: '/', memoryBytes: null, cpus: null, rootfs: null };
    await withHost(inventory, 'lab-1', (ch) => ch.request(RunRequest.make({ spec }), RunReply));
    say(`2. started container "${NAME}" on lab-1: a Python program printing 1, 2, 3, ... 50 times a second`);
    await waitForCount('lab-1', 25);
    const hops: MigrationReport[] = [];
    for (let i = 1; i < HOSTS.length; i++) {
      const [from, to] = [HOSTS[i - 1]!, HOSTS[i]!];
      const hop = await withHost(inventory, from, (ch) => follow(ch, NAME, { host: to, address: hostAddress(inventory, to) }, from));
      hops.push(hop);
      if (hop.outcome !== 'done') return { ok: false, hops, logs: logsOf(), problem: `the move to ${to} rolled back: ${hop.error}` };
      say(`${i + 2}. moved it ${from} → ${to} live (${hop.live?.rounds.length ?? 0} pre-copy rounds), frozen ${hop.frozenMs!.toFixed(0)} ms`);
      await waitForCount(to, 25);
    }
    await withHost(inventory, 'lab-3', (ch) => ch.request(StopRequest.make({ name: NAME, timeoutMs: 0 }), StopReply));
    const logs = logsOf();
    const problem = continuity();
    return { ok: problem === null, hops, logs, problem };
  } finally {
    say('   removing the lab ...');
    await labDown();
  }
}

function logLines(host: string): number[] {
  try {
    return fs.readFileSync(path.join(hostStateDir(host), 'containers', NAME, 'log'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function logsOf(): DemoReport['logs'] {
  return HOSTS.map((host) => {
    const lines = logLines(host);
    return { host, first: lines[0] ?? null, last: lines.at(-1) ?? null, lines: lines.length };
  });
}

/** null when the logs, read host after host, count 1, 2, 3, ... without a gap or a repeat. */
function continuity(): string | null {
  const all = HOSTS.flatMap(logLines);
  const bad = all.findIndex((n, i) => n !== i + 1);
  return bad < 0 ? null : `number ${bad + 1} of the combined logs is ${all[bad]}, expected ${bad + 1}`;
}

/** Waits until the host's log has `lines` more numbers than the hosts before it handed over. */
async function waitForCount(host: string, lines: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (logLines(host).length < lines) {
    if (Date.now() > deadline) throw new CliError(`demo: the counter did not count on ${host}`, ExitCode.Failed);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function render(r: DemoReport): string {
  const hops = formatTable(
    ['HOP', 'ROUNDS', 'DOWNTIME', 'TOTAL', 'SENT'],
    r.hops.map((h) => [
      `${h.from} → ${h.to}`,
      h.live ? `${h.live.rounds.length} (${h.live.precopiedPages} of ${h.pages} pages before the freeze)` : 'cold',
      h.frozenMs === null ? '-' : `${h.frozenMs.toFixed(0)} ms`,
      `${h.totalMs.toFixed(0)} ms`,
      `${((h.bytes ?? 0) / 1048576).toFixed(1)} MiB`,
    ]),
  );
  const logs = formatTable(['HOST', 'COUNTED'], r.logs.map((l) => [l.host, l.lines ? `${l.first} … ${l.last} (${l.lines} numbers)` : '-']));
  const verdict = r.ok
    ? 'PASS: read host after host, the logs count on without a gap or a repeat: the program never noticed it moved.'
    : `FAIL: ${r.problem}`;
  return `\n${hops}\n\n${logs}\n\n${verdict}`;
}
