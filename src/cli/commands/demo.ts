import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Command } from 'commander';
import { readInventory } from '../../cluster/inventory.js';
import type { ContainerSpec } from '../../container/spec.js';
import { RunReply, RunRequest, StopReply, StopRequest, type MigrationReport } from '../../coordinator/messages.js';
import { findExecutable } from '../../native/host.js';
import { labDown, labUp } from '../../lab/lab.js';
import { BRIDGE_IP, hostStateDir } from '../../lab/layout.js';
import { readRecord } from '../../lab/record.js';
import { hostAddress, withHost } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatTable, isJsonOutput, printResult } from '../output.js';
import { follow } from './move.js';
import { requireRoot } from './run.js';

/**
 * The demo a new user runs first: three simulated hosts, a container with
 * its own address whose Python program counts in memory and serves the
 * count over TCP, and a client outside it (this process) that keeps reading
 * the numbers, while the container moves lab-1 → lab-2 → lab-3 live. The
 * client must read 1, 2, 3, … with no number lost or repeated and no error
 * on its one connection, which only holds if the program and its TCP
 * connection went on from exactly where they were frozen; it reports the
 * longest wait it saw. The program also prints each number, so each host's
 * log holds what was counted there.
 */
const COUNTER = `
import socket, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 7000))
listener.listen(1)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 0
while True:
    n += 1
    print(n, flush=True)
    conn.sendall(b"%d\\n" % n)
    time.sleep(0.02)
`;

const ADDRESS = '10.77.0.150';
const PORT = 7000;

const HOSTS = ['lab-1', 'lab-2', 'lab-3'];
const NAME = 'counter';

interface DemoReport {
  ok: boolean;
  hops: MigrationReport[];
  /** What the client outside the container saw on its one connection. */
  client: { numbers: number; first: number | null; last: number | null; longestGapMs: number; error: string | null };
  /** The numbers each host's log holds: first, last, how many. */
  logs: Array<{ host: string; first: number | null; last: number | null; lines: number }>;
  problem: string | null;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('make a 3-host lab, move a container serving a count over TCP lab-1 → lab-2 → lab-3 live while a client reads it, remove the lab')
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

/** The client outside the lab: one TCP connection, every number checked, the longest wait between two measured. */
class CounterClient {
  private socket: net.Socket | null = null;
  private buffered = '';
  private expected = 1;
  private last = performance.now();
  private readonly seen = { numbers: 0, first: null as number | null, last: null as number | null, longestGapMs: 0, error: null as string | null };

  connect(): void {
    const socket = net.connect({ host: ADDRESS, port: PORT });
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.take(chunk));
    socket.on('error', (e) => (this.seen.error ??= `the client's connection failed: ${e.message}`));
    socket.on('close', () => (this.seen.error ??= 'the server closed the connection'));
  }

  private take(chunk: string): void {
    this.buffered += chunk;
    const lines = this.buffered.split('\n');
    this.buffered = lines.pop()!;
    for (const line of lines) {
      const n = Number(line);
      const now = performance.now();
      this.seen.longestGapMs = Math.max(this.seen.longestGapMs, now - this.last);
      this.last = now;
      if (n !== this.expected) this.seen.error ??= `the client read ${n} where ${this.expected} was due`;
      this.expected = n + 1;
      this.seen.first ??= n;
      this.seen.last = n;
      this.seen.numbers++;
    }
  }

  report(): DemoReport['client'] {
    return { ...this.seen };
  }

  async waitFor(numbers: number): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (this.seen.numbers < numbers && !this.seen.error) {
      if (Date.now() > deadline) throw new CliError('demo: the client stopped receiving numbers', ExitCode.Failed);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops listening: what the connection does from here on is not the client's business. */
  detach(): void {
    this.socket?.removeAllListeners('data').removeAllListeners('close').removeAllListeners('error').on('error', () => {});
  }

  close(): void {
    this.detach();
    this.socket?.destroy();
    this.socket = null;
  }
}

async function runDemo(): Promise<DemoReport> {
  if (!findExecutable('python3')) throw new CliError('demo: python3 is missing (run `npm run setup`)', ExitCode.Unsupported);
  if (readRecord()) throw new CliError('demo: a lab is already up; `migrate lab down` first (the demo makes its own)', ExitCode.Failed);
  say('1. making a lab of 3 hosts, each with its own namespaces and agent ...');
  await labUp({ hosts: HOSTS.length, agents: true });
  const client = new CounterClient();
  try {
    const inventory = readInventory()!;
    const spec: ContainerSpec = {
      name: NAME,
      command: ['python3', '-c', COUNTER],
      hostname: NAME,
      env: {},
      cwd: '/',
      memoryBytes: null,
      cpus: null,
      rootfs: null,
      network: { addresses: [`${ADDRESS}/24`], gateways: [BRIDGE_IP] },
    };
    await withHost(inventory, 'lab-1', (ch) => ch.request(RunRequest.make({ spec }), RunReply));
    say(`2. started container "${NAME}" on lab-1 at ${ADDRESS}: a Python program counting 50 times a second, serving each number over TCP`);
    client.connect();
    say(`   a client here, outside the lab, reads the numbers from ${ADDRESS}:${PORT}`);
    await waitForCount('lab-1', 25);
    const hops: MigrationReport[] = [];
    for (let i = 1; i < HOSTS.length; i++) {
      const [from, to] = [HOSTS[i - 1]!, HOSTS[i]!];
      const hop = await withHost(inventory, from, (ch) => follow(ch, NAME, { host: to, address: hostAddress(inventory, to) }, from));
      hops.push(hop);
      if (hop.outcome !== 'done') return { ok: false, hops, client: client.report(), logs: logsOf(), problem: `the move to ${to} rolled back: ${hop.error}` };
      say(`${i + 2}. moved it ${from} → ${to} live (${hop.live?.rounds.length ?? 0} pre-copy rounds), frozen ${hop.frozenMs!.toFixed(0)} ms`);
      await client.waitFor(client.report().numbers + 25);
      if (client.report().error) return { ok: false, hops, client: client.report(), logs: logsOf(), problem: client.report().error };
    }
    await client.waitFor(client.report().numbers + 25);
    const seen = client.report();
    // Hung up on first, the program would print its broken pipe into the log; stopped first, it ends mid-count.
    client.detach();
    await withHost(inventory, 'lab-3', (ch) => ch.request(StopRequest.make({ name: NAME, timeoutMs: 0 }), StopReply));
    client.close();
    const logs = logsOf();
    const problem = seen.error ?? continuity();
    return { ok: problem === null, hops, client: seen, logs, problem };
  } finally {
    client.close();
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
  const c = r.client;
  const client = `the client outside read ${c.numbers} numbers (${c.first} … ${c.last}) on one connection; the longest wait between two was ${c.longestGapMs.toFixed(0)} ms`;
  const verdict = r.ok
    ? 'PASS: the client saw every number once, in order, without an error; read host after host, the logs count on without a gap or a repeat.'
    : `FAIL: ${r.problem}`;
  return `\n${hops}\n\n${logs}\n\n${client}\n${verdict}`;
}
