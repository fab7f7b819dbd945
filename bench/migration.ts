/**
 * Migration between two lab hosts, cold and live, next to what the path
 * it crosses can carry, all measured in the same run:
 *
 *   - the link: plain TCP between two Node processes, lab-1 → lab-2 over
 *     the bridge (the image's path) and the machine → lab-2 (the CLI's);
 *   - the transport: one Ferry channel stream lab-1 → lab-2
 *     (src/transport: credit, sha256 on both ends), with and without TLS;
 *   - migrations: a container holding 64 MiB or 1 GiB of non-zero memory
 *     (bench/workloads/ballast), moved back and forth with
 *     `migrate --json <name> --to <host> --cold`, then live (pre-copy, the
 *     default) for comparison, timed by the reports.
 *
 * It makes its own lab (`lab up --hosts 2`) with an inventory in a
 * temporary directory, and takes it down whatever happens. There is one
 * lab per machine: when another is up (someone's tests), it waits for it
 * to go rather than touch it.
 *
 *   node dist/bench/migration.js      (or: node dist/bench/run.js migration)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { newToken } from '../src/cluster/inventory.js';
import { hostIp, labDir } from '../src/lab/layout.js';
import { labLinks } from '../src/lab/network.js';
import { readRecord } from '../src/lab/record.js';
import { nsPids, readChildren } from '../src/native/proc.js';
import { generateClusterCa, issueCertificate } from '../src/transport/index.js';
import { onInterrupt, type Benchmark, type BenchContext } from './lib/bench.js';
import { ROOT } from './lib/memhog.js';
import { fmt, gbps, median, size, table } from './lib/stats.js';

const MIGRATE = path.join(ROOT, 'bin/migrate');
const PEER = path.join(ROOT, 'dist/bench/lib/peer.js');
const BALLAST = path.join(ROOT, 'bench/workloads/bin/ballast');
const MIB = 1 << 20;

const SOURCE = { name: 'lab-1', ip: hostIp(1) };
const TARGET = { name: 'lab-2', ip: hostIp(2) };
/** Ports inside the lab hosts' own network namespaces: nothing else of the machine is there. */
const TCP_PORT = 9100;
const STREAM_PORT = 9101;

/** Each transfer moves this much, this many times; the median is reported with the range. */
const TRANSFER_MIB = 1024;
const REPS = 3;
/** The image writer hands pages over in segments of up to 4096 pages. */
const SEGMENT_MIB = 16;
const STREAM_CASES: Array<{ writeMib: number; tls: boolean; what: string }> = [
  { writeMib: SEGMENT_MIB, tls: false, what: `${SEGMENT_MIB} MiB (an image segment)` },
  { writeMib: 1, tls: false, what: '1 MiB' },
  { writeMib: SEGMENT_MIB, tls: true, what: `${SEGMENT_MIB} MiB (an image segment)` },
];
const SIZES_MIB = [64, 1024];
/** Moves of each mode, alternating between the hosts: the same container makes them all, cold first. */
const MOVES = 3;
const MODES: Array<{ mode: 'cold' | 'live'; args: string[] }> = [
  { mode: 'cold', args: ['--cold'] },
  { mode: 'live', args: [] },
];

/** Another lab is someone's tests: it is waited out (checked every 20 s, up to 10 min), never taken down. */
const LAB_POLL_MS = 20_000;
const LAB_WAIT_MS = 600_000;

interface Report {
  outcome: 'done' | 'rolled-back';
  error: string | null;
  from: string;
  to: string;
  totalMs: number;
  frozenMs: number;
  bytes: number;
  pages: number;
  zeroPages: number;
  phases: Array<{ phase: string; ms: number }>;
  live?: { rounds: unknown[] } | null;
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A child with its output collected as it comes. */
class Child {
  stdout = '';
  stderr = '';
  code: number | null | undefined = undefined;
  readonly exited: Promise<number | null>;
  private readonly process: ChildProcess;

  constructor(argv: string[], env: NodeJS.ProcessEnv) {
    this.process = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.process.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.process.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.process.on('error', (e) => {
        this.stderr += e.message;
        resolve((this.code = 127));
      });
      this.process.on('close', (code, signal) => resolve((this.code = code ?? (signal ? 128 : null))));
    });
  }

  kill(): void {
    if (this.code === undefined) this.process.kill('SIGKILL');
  }

  async result(): Promise<Ran> {
    const status = await this.exited;
    return { status, stdout: this.stdout, stderr: this.stderr };
  }
}

async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pause = 5;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 100);
  }
}

function lastJson<T>(what: string, r: Ran): T {
  const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) throw new Error(`${what}: exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return JSON.parse(line) as T;
}

/** What of a lab exists now: its state directory, or the bridge and veths. */
function labTraces(): string[] {
  return [...(fs.existsSync(labDir()) ? [labDir()] : []), ...labLinks()];
}

async function waitForNoLab(log: (m: string) => void): Promise<void> {
  const deadline = Date.now() + LAB_WAIT_MS;
  for (let traces = labTraces(); traces.length; traces = labTraces()) {
    if (Date.now() > deadline) throw new Error(`a lab is still up after ${LAB_WAIT_MS / 60_000} minutes (${traces.join(', ')}); it is someone else's, so it was left alone`);
    log(`migration: a lab is up (${traces.join(', ')}); waiting for it to go`);
    await new Promise((r) => setTimeout(r, LAB_POLL_MS));
  }
}

function spread(values: number[]): string {
  return `${fmt(median(values))} (${fmt(Math.min(...values))}–${fmt(Math.max(...values))})`;
}

async function run(ctx: BenchContext): Promise<string> {
  const { tmp, log } = ctx;
  if (!fs.existsSync(BALLAST)) throw new Error(`${BALLAST} is missing: run \`make -C bench/workloads\` (npm run bench does)`);
  if (!fs.existsSync(PEER)) throw new Error(`${PEER} is missing: build with \`npx tsc -p .\``);
  // The inventory the lab writes goes here, not to /etc/ferry; the CLI and what runs in the hosts inherit it.
  const env: NodeJS.ProcessEnv = { ...process.env, FERRY_CONFIG_DIR: path.join(tmp, 'config') };
  const cli = (args: string[]) => new Child([process.execPath, MIGRATE, ...args], env).result();
  const ok = async (args: string[]): Promise<Ran> => {
    const r = await cli(args);
    if (r.status !== 0) throw new Error(`migrate ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    return r;
  };
  // A container's /tmp is its own: the workload runs from where every host and container sees it.
  const binDir = fs.mkdtempSync('/var/tmp/ferry-bench-bin-');
  const ballast = path.join(binDir, 'ballast');
  fs.copyFileSync(BALLAST, ballast);
  fs.chmodSync(ballast, 0o755);

  let labIsOurs = false;
  /** When our lab was made (its record says): another test's `lab down` may end it, and then a `lab up` make another. */
  let created: string | null = null;
  const cleanup = async () => {
    try {
      const now = readRecord()?.created ?? null;
      if (labIsOurs && (created === null || now === created)) {
        log('migration: lab down');
        await ok(['lab', 'down']);
      } else if (labIsOurs) {
        log(`migration: the lab is no longer ours (${now ? `another, made ${now}, is up` : 'someone took it down'}); leaving it`);
      }
      labIsOurs = false;
    } finally {
      fs.rmSync(binDir, { recursive: true, force: true });
    }
  };
  // Interrupted, the runner exits without coming back here: the lab must not outlive it.
  const unregister = onInterrupt(cleanup);
  try {
    await waitForNoLab(log);
    log('migration: lab up --hosts 2');
    // Ours from the start, so that an interrupt in the middle of `lab up` takes down what it made so far.
    labIsOurs = true;
    const up = await cli(['--json', 'lab', 'up', '--hosts', '2']);
    if (up.status !== 0) {
      // Someone's lab came up since we looked: it is theirs to take down.
      if (/"code":"LAB_EXISTS"/.test(up.stdout)) labIsOurs = false;
      throw new Error(`migrate lab up: exit ${up.status}\n${up.stdout}${up.stderr}`);
    }
    created = readRecord()?.created ?? null;
    return await measure(ctx, env, cli, ok, ballast);
  } finally {
    unregister();
    await cleanup();
  }
}

async function measure(
  { tmp, log }: BenchContext,
  env: NodeJS.ProcessEnv,
  cli: (args: string[]) => Promise<Ran>,
  ok: (args: string[]) => Promise<Ran>,
  ballast: string,
): Promise<string> {
  const node = process.execPath;
  const inHost = (host: string | null, command: string[]) => (host ? [node, MIGRATE, 'lab', 'exec', host, '--', ...command] : command);

  /** A receiver in `to`, once it listens a sender in `from` (null: the machine itself); what each measured. */
  async function transfer<R, S>(what: string, to: string, receiver: string[], from: string | null, sender: string[]): Promise<{ received: R; sent: S }> {
    const recv = new Child(inHost(to, [node, PEER, ...receiver]), env);
    try {
      await waitUntil(`the receiver in ${to} to listen (${what})`, () => {
        if (recv.code !== undefined) throw new Error(`the receiver in ${to} exited (${recv.code}): ${recv.stderr}`);
        return recv.stdout.includes('listening');
      }, 30_000);
      const sent = lastJson<S>(`${what}: sender`, await new Child(inHost(from, [node, PEER, ...sender]), env).result());
      await waitUntil(`the receiver in ${to} to finish (${what})`, () => recv.code !== undefined, 60_000);
      return { received: lastJson<R>(`${what}: receiver`, await recv.result()), sent };
    } finally {
      recv.kill();
    }
  }

  // ---- the link
  const linkPaths: Array<{ what: string; from: string | null }> = [
    { what: `${SOURCE.name} → ${TARGET.name} over the bridge (the image's path)`, from: SOURCE.name },
    { what: `the machine → ${TARGET.name} (the CLI's path to an agent)`, from: null },
  ];
  const link = new Map<string, number[]>();
  for (let rep = 0; rep < REPS; rep++) {
    for (const p of linkPaths) {
      log(`migration: plain TCP, ${p.what}, ${TRANSFER_MIB} MiB (${rep + 1}/${REPS})`);
      const { received } = await transfer<{ bytes: number; ms: number }, unknown>(
        `TCP ${p.what}`,
        TARGET.name,
        ['tcp-recv', TARGET.ip, String(TCP_PORT)],
        p.from,
        ['tcp-send', TARGET.ip, String(TCP_PORT), String(TRANSFER_MIB)],
      );
      if (received.bytes !== TRANSFER_MIB * MIB) throw new Error(`TCP ${p.what}: ${received.bytes} bytes arrived of ${TRANSFER_MIB * MIB}`);
      link.set(p.what, [...(link.get(p.what) ?? []), gbps(received.bytes, received.ms)]);
    }
  }
  const linkGbps = median(link.get(linkPaths[0]!.what)!);

  // ---- the transport
  const token = newToken();
  const tlsDir = path.join(tmp, 'tls');
  await generateClusterCa(tlsDir);
  const cert = await issueCertificate(tlsDir, TARGET.name, [TARGET.ip], tlsDir);
  const stream = new Map<number, number[]>();
  let shape: { window: number; maxChunkBytes: number; chunksPerSegment: number } | null = null;
  for (let rep = 0; rep < REPS; rep++) {
    for (const [i, c] of STREAM_CASES.entries()) {
      log(`migration: transport stream, ${c.what} writes${c.tls ? ', TLS' : ''}, ${TRANSFER_MIB} MiB (${rep + 1}/${REPS})`);
      const { received, sent } = await transfer<{ bytes: number }, { bytes: number; ms: number; window: number; maxChunkBytes: number; chunks: number }>(
        'transport stream',
        TARGET.name,
        ['stream-recv', TARGET.ip, String(STREAM_PORT), token, ...(c.tls ? [cert.cert, cert.key] : [])],
        SOURCE.name,
        ['stream-send', TARGET.ip, String(STREAM_PORT), token, String(TRANSFER_MIB), String(c.writeMib), ...(c.tls ? [cert.ca] : [])],
      );
      if (received.bytes !== sent.bytes) throw new Error(`transport stream: ${received.bytes} bytes arrived of ${sent.bytes}`);
      if (c.writeMib === SEGMENT_MIB) shape = { window: sent.window, maxChunkBytes: sent.maxChunkBytes, chunksPerSegment: sent.chunks / (TRANSFER_MIB / SEGMENT_MIB) };
      stream.set(i, [...(stream.get(i) ?? []), gbps(sent.bytes, sent.ms)]);
    }
  }
  const streamGbps = median(stream.get(0)!);

  // ---- migrations
  /** The container's init as this machine sees it: the agents report pids of their hosts' namespaces. */
  async function initOf(name: string): Promise<{ pid: number; memoryBytes: number | null } | null> {
    const listed = JSON.parse((await ok(['--json', 'ps'])).stdout) as { containers: Array<{ host: string; name: string; pid: number; state: string; memoryBytes: number | null }> };
    const c = listed.containers.find((x) => x.name === name && x.state === 'running');
    const host = c && readRecord()?.hosts.find((h) => h.name === c.host);
    if (!c || !host) return null;
    const queue = [host.init.pid];
    while (queue.length) {
      const p = queue.shift()!;
      const chain = nsPids(p);
      if (chain.length >= 2 && chain[1] === c.pid) return { pid: p, memoryBytes: c.memoryBytes };
      queue.push(...readChildren(p));
    }
    return null;
  }

  interface Case {
    mib: number;
    mode: 'cold' | 'live';
    memoryBytes: number | null;
    reports: Report[];
    verdict: string;
  }
  const cases: Case[] = [];
  for (const mib of SIZES_MIB) {
    const name = `ballast-${mib}`;
    log(`migration: ${name}: filling ${mib} MiB on ${SOURCE.name}`);
    await ok(['run', name, '--host', SOURCE.name, '--', ballast, '/tmp/result', String(mib)]);
    await waitUntil(`${name} to be READY`, async () => {
      const init = await initOf(name);
      if (init && fs.existsSync(`/proc/${init.pid}/root/tmp/result`)) throw new Error(`${name} failed: ${fs.readFileSync(`/proc/${init.pid}/root/tmp/result`, 'utf8')}`);
      return init !== null && fs.existsSync(`/proc/${init.pid}/root/tmp/result.ready`);
    }, 180_000);
    const memoryBytes = (await initOf(name))?.memoryBytes ?? null;
    const mine: Case[] = [];
    let at = SOURCE.name;
    for (const { mode, args } of MODES) {
      const reports: Report[] = [];
      for (let move = 0; move < MOVES; move++) {
        const to = at === SOURCE.name ? TARGET.name : SOURCE.name;
        log(`migration: ${name} → ${to}, ${mode} (${move + 1}/${MOVES})`);
        const r = await cli(['--json', name, '--to', to, ...args]);
        const report = lastJson<Report>(`migrate ${name} --to ${to} ${args.join(' ')}`, r);
        if (report.outcome !== 'done') throw new Error(`migrate ${name} --to ${to} ${args.join(' ')} rolled back: ${report.error}`);
        reports.push(report);
        at = to;
      }
      mine.push({ mib, mode, memoryBytes, reports, verdict: '' });
    }
    // The block checks itself, every byte, after all the moves: SIGTERM, then its verdict through a handle on its /tmp.
    const last = (await initOf(name))!;
    const tmpFd = fs.openSync(`/proc/${last.pid}/root/tmp`, 'r');
    let verdict: string;
    try {
      process.kill(last.pid, 'SIGTERM');
      await waitUntil(`the verdict of ${name}`, () => fs.existsSync(`/proc/self/fd/${tmpFd}/result`), 120_000);
      verdict = fs.readFileSync(`/proc/self/fd/${tmpFd}/result`, 'utf8').trim();
    } finally {
      fs.closeSync(tmpFd);
    }
    if (verdict !== 'PASS') throw new Error(`${name} after ${MOVES * MODES.length} moves: ${verdict}`);
    cases.push(...mine.map((c) => ({ ...c, verdict })));
  }

  // ---- the section
  const mb = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);
  const largest = (mode: Case['mode']) => cases.filter((c) => c.mode === mode).sort((a, b) => b.mib - a.mib)[0]!;
  const big = largest('cold');
  const bigLive = largest('live');
  const bigFrozen = median(big.reports.map((r) => r.frozenMs));
  const bigRate = mb(big.mib * MIB, bigFrozen);
  const phases = [...new Set(cases.flatMap((c) => c.reports.flatMap((r) => r.phases.map((p) => p.phase))))];
  const phaseMs = (c: Case, phase: string) => median(c.reports.map((r) => r.phases.filter((p) => p.phase === phase).reduce((s, p) => s + p.ms, 0)));
  const totalOf = (c: Case) => median(c.reports.map((r) => r.totalMs));
  const streamed = (c: Case) => mb(median(c.reports.map((r) => r.bytes)), phaseMs(c, 'checkpoint and stream'));
  const smallWrites = median(stream.get(1)!);
  return [
    `Two lab hosts (\`migrate lab up --hosts 2\`: namespaces on this machine, joined by veths on the bridge \`ferry-lab0\`), agents`,
    'without TLS, as the demo and the tests run them. Every byte crosses the same kernel, so the "link" is veth + bridge:',
    'these are the costs of Ferry\'s own path over an ideal link, not of a NIC. GB/s = 10^9 bytes/s, MB/s = 10^6 bytes/s.',
    `Transfers move ${size(TRANSFER_MIB * MIB)} of random data between two Node processes; median of ${REPS} (slowest–fastest).`,
    '',
    `In short: ${size(big.mib * MIB)} of non-zero memory moved in ${fmt(totalOf(big))} ms, ${fmt(bigFrozen)} ms of it frozen: ${fmt(bigRate)} MB/s of memory`,
    `per second of downtime, ${fmt((bigRate / 1000 / streamGbps) * 100)}% of what one transport stream carries with the image's ${SEGMENT_MIB} MiB writes`,
    `(${fmt(streamGbps)} GB/s) and ${fmt((bigRate / 1000 / linkGbps) * 100)}% of plain TCP over the same bridge (${fmt(linkGbps)} GB/s). The stream is what`,
    `the checkpoint waits on: its phase moved page data at ${fmt(streamed(big))} MB/s. The same stream with 1 MiB writes carried`,
    `${fmt(smallWrites)} GB/s (${fmt(smallWrites / streamGbps)}×): a ${SEGMENT_MIB} MiB write leaves as ${shape ? Math.round(shape.chunksPerSegment) : '?'} chunks of up to ${shape ? `${size(shape.window)} less ${shape.window - shape.maxChunkBytes} bytes` : '?'},`,
    'as large as the reader\'s whole window, so no second chunk is in flight while the reader takes the first.',
    `Live (pre-copy, the default), the same ${size(bigLive.mib * MIB)} was frozen for ${fmt(median(bigLive.reports.map((r) => r.frozenMs)))} ms of ${fmt(totalOf(bigLive))} ms:`,
    `the memory crossed while the container ran, and the frozen time is mostly the restore on the target (${fmt(phaseMs(bigLive, 'restore'))} ms).`,
    '',
    'The link: plain TCP (`net.Socket`, 1 MiB writes), timed by the receiver from the first byte to the last.',
    '',
    table(['path', 'GB/s'], linkPaths.map((p) => [p.what, spread(link.get(p.what)!)]), ['l', 'r']),
    '',
    `The transport: one stream over a Ferry channel ${SOURCE.name} → ${TARGET.name} (\`connect\`, \`openStream\`; credit-based flow control,`,
    'sha256 on both ends), each write awaited before the next as the image sink does; from the first write until `end()`',
    'resolved, i.e. the receiver verified the checksum.',
    '',
    table(
      ['writes', 'TLS', 'GB/s', '÷ TCP lab-1 → lab-2'],
      STREAM_CASES.map((c, i) => [c.what, c.tls ? 'yes' : 'no', spread(stream.get(i)!), `${fmt((median(stream.get(i)!) / linkGbps) * 100)}%`]),
      ['l', 'l', 'r', 'r'],
    ),
    '',
    'Migration: a container whose init (`bench/workloads/ballast`) fills N MiB of private anonymous memory with PRNG output',
    `(no zero page), moved between ${SOURCE.name} and ${TARGET.name} ${MOVES} times cold (\`migrate --json <name> --to <host> --cold\`: frozen`,
    `while everything crosses), then ${MOVES} times live (the default: pre-copy rounds while it runs, then a short freeze);`,
    'the numbers are the reports\', median of the moves (slowest–fastest). After all the moves the workload checked every',
    'byte of its block against the PRNG: *verdict*. *Rounds*: pre-copy rounds of a live move.',
    '*Total*: the whole migration as the source agent times it; *frozen*: from the freeze until the copy on the target runs',
    '(the downtime); *pages.bin*: page data streamed (zero pages cross as counts); *memory ÷ frozen*: the block per second of',
    'downtime; *bytes ÷ total*: page data per second of the whole migration; *cgroup memory*: what `migrate ps` said before the moves.',
    '',
    table(
      ['memory', 'mode', 'cgroup memory', 'moves', 'rounds', 'total ms', 'frozen ms', 'pages.bin MiB', 'data / zero pages', 'memory ÷ frozen MB/s', 'bytes ÷ total MB/s', 'verdict'],
      cases.map((c) => [
        size(c.mib * MIB),
        c.mode,
        c.memoryBytes === null ? '–' : `${fmt(c.memoryBytes / MIB)} MiB`,
        String(c.reports.length),
        c.mode === 'live' ? String(median(c.reports.map((r) => r.live?.rounds.length ?? 0))) : '–',
        spread(c.reports.map((r) => r.totalMs)),
        spread(c.reports.map((r) => r.frozenMs)),
        fmt(median(c.reports.map((r) => r.bytes)) / MIB),
        `${median(c.reports.map((r) => r.pages - r.zeroPages)).toLocaleString('en-US')} / ${median(c.reports.map((r) => r.zeroPages)).toLocaleString('en-US')}`,
        fmt(median(c.reports.map((r) => mb(c.mib * MIB, r.frozenMs)))),
        fmt(median(c.reports.map((r) => mb(r.bytes, r.totalMs)))),
        c.verdict,
      ]),
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    '',
    'Where the time goes: the phases the reports name, median ms of each (share of the median total; medians need not add up).',
    '',
    table(
      ['phase', ...cases.map((c) => `${size(c.mib * MIB)} ${c.mode}`)],
      phases.map((p) => [p, ...cases.map((c) => (c.reports.some((r) => r.phases.some((x) => x.phase === p)) ? `${fmt(phaseMs(c, p))} (${fmt((phaseMs(c, p) / totalOf(c)) * 100)}%)` : '–'))]),
      ['l', ...cases.map(() => 'r' as const)],
    ),
    '',
  ].join('\n');
}

export const migration: Benchmark = { name: 'migration', title: 'Migration between two lab hosts, cold and live', run };

// Run directly, it goes through the runner, which writes its section of bench/RESULTS.md.
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  void import('./run.js').then(async ({ main }) => {
    process.exitCode = await main(['migration']);
  });
}
