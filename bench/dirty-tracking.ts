/**
 * Dirty-page tracking for pre-copy (src/precopy): what a round (collect)
 * costs against the process's memory and the share of it written, what
 * start and stop cost, and how much a process writing in a loop slows
 * down while tracked. The process is test/workloads/dirtier, which writes
 * exactly the pages it is told to, or loops writing one word per page and
 * reports its rate.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Tracer } from '../src/native/tracer.js';
import type { CollectResult, StartedTracker } from '../src/precopy/ops.js';
import type { Benchmark, BenchContext } from './lib/bench.js';
import { ROOT } from './lib/memhog.js';
import { median, table, fmt, size } from './lib/stats.js';

const DIRTIER = path.join(ROOT, 'test/workloads/bin/dirtier');
const OPS = new URL('../src/precopy/ops.js', import.meta.url);
const PAGE = 4096;
const MIB = 1 << 20;
const SIZES_MIB = [64, 1024];
const FRACTIONS = [0, 0.01, 0.1, 1];
const REPS = 5;
const HASH_REPS = 3;
const LOOP_SECONDS = 2;
const SLOW_REPS = 3;
const SIGUSR1 = 10;
const SIGKILL = 9;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The dirtier workload, spawned by the tracer thread (so libuv never reaps it) and driven through its command file. */
class Dirtier {
  private seq = 0;

  private constructor(
    private readonly tracer: Tracer,
    readonly pid: number,
    private readonly result: string,
  ) {}

  static async start(tracer: Tracer, dir: string, mib: number): Promise<Dirtier> {
    if (!fs.existsSync(DIRTIER)) throw new Error(`${DIRTIER} is missing: run \`make -C test/workloads\` (npm run bench does)`);
    const result = path.join(dir, `dirtier-${mib}-${Date.now()}`);
    const pid = await tracer.call<number>('spawn', DIRTIER, {
      argv: ['dirtier', result, String(mib), '0'],
      env: { PATH: '/usr/bin:/bin' },
      cwd: dir,
      stderr: { path: `${result}.stderr` },
    });
    const d = new Dirtier(tracer, pid, result);
    const deadline = Date.now() + 180_000;
    while (!fs.existsSync(`${result}.ready`)) {
      if (fs.existsSync(result) || !d.alive()) {
        await d.stop();
        throw new Error(`dirtier ${mib} MiB did not start: ${readOr(result)}${readOr(`${result}.stderr`)}`);
      }
      if (Date.now() > deadline) throw new Error(`dirtier ${mib} MiB: no READY after 180 s`);
      await sleep(10);
    }
    return d;
  }

  alive(): boolean {
    return !/^\d+ \(.*\) [ZX]/.test(readOr(`/proc/${this.pid}/stat`) || '0 (x) X');
  }

  /** Sends a command; the promise settles with its answer. */
  async cmd(text: string): Promise<string> {
    const seq = ++this.seq;
    fs.writeFileSync(`${this.result}.cmd.tmp`, `${seq} ${text}\n`);
    fs.renameSync(`${this.result}.cmd.tmp`, `${this.result}.cmd`);
    await this.tracer.call('kill', this.pid, SIGUSR1);
    let pause = 0.05;
    for (;;) {
      const ack = readOr(`${this.result}.ack`);
      if (ack.startsWith(`${seq} `)) {
        const m = /^\d+ (OK|ERR) (.*)$/.exec(ack.trim());
        if (m?.[1] !== 'OK') throw new Error(`dirtier: ${text}: ${ack.trim()}`);
        return m[2]!;
      }
      if (!this.alive()) throw new Error(`dirtier died during '${text}'`);
      await sleep(pause);
      pause = Math.min(pause * 2, 5);
    }
  }

  /** Until every thread sleeps in a syscall, so a round measures the writes asked for and nothing else. */
  async idle(): Promise<void> {
    for (;;) {
      const busy = fs.readdirSync(`/proc/${this.pid}/task`).some((tid) => !/^\d+ /.test(readOr(`/proc/${this.pid}/task/${tid}/syscall`)));
      if (!busy) return;
      await sleep(1);
    }
  }

  minorFaults(): number {
    return Number(readOr(`/proc/${this.pid}/stat`).replace(/^\d+ \(.*\) /, '').split(' ')[7]);
  }

  async stop(): Promise<void> {
    try {
      await this.tracer.call('kill', this.pid, SIGKILL);
      await this.tracer.call('reap', this.pid, 10_000);
    } catch {
      // gone already
    }
  }
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

function writeSpec(pages: number, fraction: number): string {
  return `0-${pages - 1}/${Math.round(1 / fraction)}`;
}

async function run({ tracer, tmp, log }: BenchContext): Promise<string> {
  await tracer.load(OPS);
  const choice = await tracer.call<{ method: string; reason: string }>('precopyChoose');
  const collectRows: Array<Array<string | number>> = [];
  const costRows: Array<Array<string | number>> = [];
  const hashRows: Array<Array<string | number>> = [];

  for (const mib of SIZES_MIB) {
    log(`dirty-tracking: dirtier with ${mib} MiB`);
    const d = await Dirtier.start(tracer, tmp, mib);
    try {
      const pages = (mib * MIB) / PAGE;
      await d.idle();
      const untrackedWrite = await timed(() => d.cmd(`write main 0-${pages - 1}`));
      await d.idle();
      const started = await timed(() => tracer.call<StartedTracker>('precopyStart', d.pid));
      const id = started.value.id;
      let trackedWriteMs = 0;
      let faults = 0;
      for (const fraction of FRACTIONS) {
        log(`dirty-tracking: ${mib} MiB, ${fraction * 100}% written per round`);
        const inThread: number[] = [];
        const viaCall: number[] = [];
        const reported: number[] = [];
        const ranges: number[] = [];
        for (let rep = 0; rep < REPS; rep++) {
          if (fraction > 0) {
            const f0 = d.minorFaults();
            const w = await timed(() => d.cmd(`write main ${writeSpec(pages, fraction)}`));
            if (fraction === 1) {
              trackedWriteMs = w.ms;
              faults = d.minorFaults() - f0;
            }
          }
          await d.idle();
          const c = await timed(() => tracer.call<CollectResult>('precopyCollect', id));
          inThread.push(c.value.stats.ms);
          viaCall.push(c.ms);
          reported.push(c.value.stats.dataPages);
          ranges.push(c.value.stats.ranges);
        }
        const ms = median(inThread);
        collectRows.push([size(mib * MIB), `${fraction * 100}%`, fmt(median(reported)), fmt(median(ranges)), ms, Math.max(...inThread), median(viaCall), fmt(ms / (mib / 1024))]);
      }
      const stopped = await timed(() => tracer.call('precopyStop', id));
      costRows.push([size(mib * MIB), started.ms, stopped.ms, untrackedWrite.ms, trackedWriteMs, fmt(faults), faults ? ((trackedWriteMs - untrackedWrite.ms) * 1000) / faults : NaN]);

      log(`dirty-tracking: ${mib} MiB, hashing`);
      const h = await tracer.call<StartedTracker>('precopyStart', d.pid, { method: 'hashing' });
      for (const fraction of [0, 0.1]) {
        const ms: number[] = [];
        for (let rep = 0; rep < HASH_REPS; rep++) {
          if (fraction > 0) await d.cmd(`write main ${writeSpec(pages, fraction)}`);
          await d.idle();
          ms.push((await tracer.call<CollectResult>('precopyCollect', h.id)).stats.ms);
        }
        hashRows.push([size(mib * MIB), `${fraction * 100}%`, median(ms), fmt(median(ms) / (mib / 1024))]);
      }
      await tracer.call('precopyStop', h.id);
    } finally {
      await d.stop();
    }
  }

  const slowRows = await slowdown(tracer, tmp, log);

  const loadEnd = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  return [
    `Method here: **${choice.method}** (${choice.reason}).`,
    '',
    `Load average ${loadEnd} at the end: on a busy machine (2 vCPUs shared with other work) every number here, the`,
    'kernel’s share included, is several times what it is on an idle one; the medians and ranges show how much.',
    '',
    '`collect()` cost: the process (`test/workloads/dirtier`, private anonymous memory filled at start, 4 KiB pages,',
    'no THP) writes one word into the given share of its pages (every 100th, 10th, every page), sleeps, and one',
    `round is taken; ${REPS} rounds per row. *In thread*: the round inside the tracer thread (maps, registration check,`,
    'PAGEMAP_SCAN with write-protection, sorting and joining ranges); *Tracer.call*: the same seen from the agent',
    '(adds the thread hop and copying the ranges). *Pages* and *ranges*: what the round reported (a few pages beyond',
    'the region are the workload’s own stack and heap).',
    '',
    table(['memory', 'written', 'pages', 'ranges', 'in thread ms (median)', 'max', 'Tracer.call ms', 'ms per GiB'], collectRows),
    '',
    'Start, stop and the write fault. *Start*: `precopyStart` from the agent (first use probes the kernel; a thread is',
    'stopped for two injected syscalls; every mapping is registered and write-protected, writable anonymous ones whole).',
    '*Stop*: closing the userfaultfd, after which the kernel unregisters and unprotects everything. *Write all pages*: one',
    'word into every page by the `write` command, untracked and then tracked right after a round (so every page',
    'takes a write-protect fault, counted from the process’s minor faults); the difference per fault is what tracking',
    'adds to the first write of a page after each round.',
    '',
    table(['memory', 'start ms', 'stop ms', 'write all pages, untracked ms', 'tracked ms', 'faults', 'µs per fault'], costRows),
    '',
    'The fallback for kernels without either: hashing every data page (SHA-256) each round, whatever was written.',
    '',
    table(['memory', 'written', 'collect ms (median)', 'ms per GiB'], hashRows),
    '',
    `Slowdown of a writer: the process writes one word per page, page after page, for ${LOOP_SECONDS} s over its 64 MiB`,
    '(all 16384 pages, or a hot set of every 100th page), and reports its rate. *Rounds every*: how often',
    'the agent collects meanwhile (each round re-protects what was written, so the next write to each such page',
    `faults again). ${SLOW_REPS} runs of each case, interleaved; median (slowest–fastest) in millions of writes per second;`,
    'faults: the process’s minor faults during a run (median).',
    '',
    table(['pages written', 'tracking', 'rounds every', 'M writes/s', 'of untracked', 'faults', 'rounds'], slowRows),
    '',
  ].join('\n');
}

interface Scenario {
  label: string;
  stride: number;
  tracking: boolean;
  /** ms between rounds during the loop; 0 = none. */
  every: number;
  rates: number[];
  faults: number[];
  rounds: number[];
}

/**
 * Each scenario runs SLOW_REPS times, interleaved with the others (every
 * repetition visits all of them in turn), so a machine whose load changes
 * meanwhile shifts them all alike; the table gives the median and range.
 */
async function slowdown(tracer: Tracer, tmp: string, log: (m: string) => void): Promise<Array<Array<string | number>>> {
  const d = await Dirtier.start(tracer, tmp, 64);
  const scenarios: Scenario[] = [];
  for (const [label, stride] of [
    ['all 16384', 1],
    ['hot 164 (1%)', 100],
  ] as const) {
    for (const [tracking, every] of [
      [false, 0],
      [true, 0],
      [true, 500],
      [true, 100],
    ] as const) {
      scenarios.push({ label, stride, tracking, every, rates: [], faults: [], rounds: [] });
    }
  }
  try {
    for (let rep = 0; rep < SLOW_REPS; rep++) {
      for (const sc of scenarios) {
        log(`dirty-tracking: slowdown ${rep + 1}/${SLOW_REPS}, ${sc.label} pages, ${sc.tracking ? `tracked, rounds every ${sc.every || '∞'} ms` : 'untracked'}`);
        await d.idle();
        const t = sc.tracking ? await tracer.call<StartedTracker>('precopyStart', d.pid) : null;
        let rounds = 0;
        try {
          if (t) await tracer.call('precopyCollect', t.id);
          const f0 = d.minorFaults();
          let done = false;
          const loop = d.cmd(`loop main ${LOOP_SECONDS} ${sc.stride}`).finally(() => (done = true));
          if (t && sc.every) {
            for (;;) {
              await sleep(sc.every);
              if (done) break;
              await tracer.call('precopyCollect', t.id);
              rounds++;
            }
          }
          const m = /writes=(\d+) ns=(\d+)/.exec(await loop)!;
          sc.rates.push(Number(m[1]) / (Number(m[2]) / 1e9));
          sc.faults.push(d.minorFaults() - f0);
          sc.rounds.push(rounds);
        } finally {
          if (t) await tracer.call('precopyStop', t.id);
        }
      }
    }
  } finally {
    await d.stop();
  }
  const rows: Array<Array<string | number>> = [];
  for (const sc of scenarios) {
    const baseline = median(scenarios.find((x) => x.label === sc.label && !x.tracking)!.rates);
    const rate = median(sc.rates);
    rows.push([
      sc.label,
      sc.tracking ? 'uffd-wp' : 'none',
      sc.tracking ? (sc.every ? `${sc.every} ms` : 'none during the loop') : '–',
      `${fmt(rate / 1e6)} (${fmt(Math.min(...sc.rates) / 1e6)}–${fmt(Math.max(...sc.rates) / 1e6)})`,
      `${fmt((rate / baseline) * 100)}%`,
      fmt(median(sc.faults)),
      sc.tracking ? fmt(median(sc.rounds)) : '–',
    ]);
  }
  return rows;
}

export const dirtyTracking: Benchmark = { name: 'dirty-tracking', title: 'Dirty-page tracking for pre-copy', run };
