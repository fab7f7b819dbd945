/**
 * Checkpoint and restore of process trees as they grow in processes (1, 16,
 * 64, 4 MiB each) and in threads (1, 8, 64 in one process of 16 MiB): does
 * the frozen time grow no faster than the state it moves? The trees are
 * bench/workloads/forest, checkpointed with { tree: true }; containers'
 * checkpoint does not exist yet, and a container is such a tree plus its
 * namespaces and cgroup.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Tracer } from '../src/native/tracer.js';
import type { CheckpointSummary } from '../src/source/checkpoint.js';
import type { RestoreSummary } from '../src/target/restore.js';
import { listThreads, readChildren, readStat, processExists } from '../src/native/proc.js';
import type { Benchmark, BenchContext } from './lib/bench.js';
import { ROOT } from './lib/memhog.js';
import { filesystemOf } from './lib/machine.js';
import { median, table, fmt } from './lib/stats.js';

const FOREST = path.join(ROOT, 'bench/workloads/bin/forest');
const MIB = 1 << 20;
const SIGKILL = 9;
/** Each row is measured this many times (in rounds over all rows, so drift spreads over every row); the median is reported. */
const REPS = 3;

type Axis = 'processes' | 'threads';

interface Shape {
  axis: Axis;
  procs: number;
  /** Threads in every process, the main thread included. */
  threads: number;
  /** Anonymous memory each process fills. */
  mib: number;
}

const SHAPES: Shape[] = [
  { axis: 'processes', procs: 1, threads: 1, mib: 4 },
  { axis: 'processes', procs: 16, threads: 1, mib: 4 },
  { axis: 'processes', procs: 64, threads: 1, mib: 4 },
  { axis: 'threads', procs: 1, threads: 1, mib: 16 },
  { axis: 'threads', procs: 1, threads: 8, mib: 16 },
  { axis: 'threads', procs: 1, threads: 64, mib: 16 },
];

/** One measurement of one shape. */
interface Sample {
  frozenMs: number;
  checkpointMs: number;
  restoreMs: number;
  restoreTotalMs: number;
  imageBytes: number;
  /** Checkpoint phases summed over the processes ("dump memory 1234" and "dump memory 1235" count as "dump memory"), in first-seen order. */
  phases: Map<string, number>;
}

/** pid → command name, parent and thread ids, for every process of a tree, read from /proc. */
type Snapshot = Map<number, { comm: string; ppid: number; tids: number[] }>;

function snapshot(root: number): Snapshot {
  const out: Snapshot = new Map();
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift()!;
    const stat = readStat(pid);
    if (stat.fields[3] === 'Z' || stat.fields[3] === 'X') throw new Error(`pid ${pid} of the tree is a zombie`);
    out.set(pid, { comm: stat.comm, ppid: Number(stat.fields[4]), tids: listThreads(pid) });
    queue.push(...readChildren(pid));
  }
  return out;
}

function describe(s: Snapshot): string {
  return [...s].map(([pid, { comm, ppid, tids }]) => `${pid}(${comm})<${ppid} [${tids.join(',')}]`).join(' ');
}

/** Where two snapshots differ, or null when they list the same processes with the same names, parents and thread ids. */
function difference(before: Snapshot, after: Snapshot): string | null {
  for (const [pid, b] of before) {
    const a = after.get(pid);
    if (!a) return `pid ${pid} is missing`;
    if (a.comm !== b.comm) return `pid ${pid} is ${a.comm}, not ${b.comm}`;
    if (a.ppid !== b.ppid) return `pid ${pid} has parent ${a.ppid}, not ${b.ppid}`;
    if (a.tids.join(',') !== b.tids.join(',')) return `pid ${pid} has threads ${a.tids.join(',')}, not ${b.tids.join(',')}`;
  }
  const extra = [...after.keys()].filter((p) => !before.has(p));
  return extra.length ? `pids ${extra.join(', ')} were not in the tree` : null;
}

function samePids(what: string, got: number[], want: Snapshot): void {
  const g = [...got].sort((a, b) => a - b).join(',');
  const w = [...want.keys()].sort((a, b) => a - b).join(',');
  if (g !== w) throw new Error(`${what} reports pids ${g}; the tree had ${w}`);
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size;
  }
  return total;
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Polls with a backoff until `cond` holds; fails after `timeoutMs`, or at once when `gone()` says the tree died. */
async function until(what: string, cond: () => boolean, gone: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pause = 1;
  while (!cond()) {
    if (gone()) throw new Error(`${what}: the process is gone`);
    if (Date.now() > deadline) throw new Error(`${what}: timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 50);
  }
}

/**
 * A running forest, started by the tracer thread (our child, reaped by us;
 * a restored root comes back as our child too). Its children die with it
 * (PR_SET_PDEATHSIG), so killing the root alone would do; stop() kills them
 * all and reaps the root first, after which the killed children, now
 * reparented to us (a child subreaper), are reaped as well.
 */
class Forest {
  /** Every process of the tree as last seen. */
  pids: number[] = [];

  private constructor(
    private readonly tracer: Tracer,
    readonly root: number,
  ) {}

  static async start(tracer: Tracer, dir: string, s: Shape, tag: string): Promise<{ forest: Forest; tree: Snapshot }> {
    const ready = path.join(dir, `forest-${tag}.ready`);
    const root = await tracer.call<number>('spawn', FOREST, {
      argv: ['forest', String(s.procs), String(s.threads), String(s.mib), ready],
      env: { PATH: '/usr/bin:/bin' },
      cwd: dir,
      stderr: { path: `${ready}.stderr` },
    });
    const f = new Forest(tracer, root);
    f.pids = [root];
    live.add(f);
    try {
      await until(`forest ${s.procs} × ${s.threads} (pid ${root}) to get ready`, () => fs.existsSync(ready), () => !isForest(root), 60_000);
      const tree = snapshot(root);
      f.pids = [...tree.keys()];
      const threads = [...tree.values()].reduce((n, p) => n + p.tids.length, 0);
      if (tree.size !== s.procs || threads !== s.procs * s.threads) {
        throw new Error(`forest ${s.procs} × ${s.threads} has ${tree.size} processes and ${threads} threads: ${describe(tree)}`);
      }
      return { forest: f, tree };
    } catch (e) {
      const err = readOr(`${ready}.stderr`).trim();
      await f.stop();
      throw err ? new Error(`${(e as Error).message}: ${err}`) : e;
    }
  }

  /** SIGKILL to every process that is still a forest, then reap: the root, then its orphans. Quiet about what is already gone. */
  async stop(): Promise<void> {
    live.delete(this);
    // Children forked since the last look (a start that failed half way) are killed and reaped too.
    const found = new Set(this.pids);
    for (let i = 0; i < this.pids.length; i++) {
      try {
        for (const c of readChildren(this.pids[i]!)) if (!found.has(c)) (found.add(c), this.pids.push(c));
      } catch {
        // gone
      }
    }
    const ours = this.pids.filter(isForest);
    for (const pid of ours) await this.tracer.call('kill', pid, SIGKILL).catch(() => undefined);
    for (const pid of ours) {
      // Children that are no longer ours (a failed restore's) are reaped by whoever they belong to.
      await this.tracer.call('reap', pid, 10_000).catch(() => undefined);
    }
  }

  static async stopAll(): Promise<void> {
    for (const f of [...live]) await f.stop();
  }
}

const live = new Set<Forest>();

/** The pid is a forest process (alive or a zombie that still holds its pid), not something that reused it. */
function isForest(pid: number): boolean {
  try {
    const stat = readStat(pid);
    return stat.comm === 'forest' && stat.fields[3] !== 'X';
  } catch {
    return false;
  }
}

function phaseName(phase: string): string {
  return phase.replace(/ \d+$/, '');
}

async function measure(ctx: BenchContext, s: Shape, tag: string): Promise<Sample> {
  const { tracer, tmp } = ctx;
  const image = path.join(tmp, `image-${tag}`);
  const { forest, tree } = await Forest.start(tracer, tmp, s, tag);
  try {
    const ck = await tracer.call<CheckpointSummary>('checkpoint', forest.root, image, { tree: true });
    samePids('the checkpoint', ck.pids, tree);
    const imageBytes = dirBytes(image);
    const t = performance.now();
    const rs = await tracer.call<RestoreSummary>('restore', image);
    const restoreTotalMs = performance.now() - t;
    if (rs.pid !== forest.root) throw new Error(`restored the root as pid ${rs.pid}, expected ${forest.root}`);
    samePids('the restore', rs.pids, tree);
    const after = snapshot(forest.root);
    const diff = difference(tree, after);
    if (diff) throw new Error(`the restored tree differs from the original: ${diff}\nbefore: ${describe(tree)}\nafter:  ${describe(after)}`);
    const phases = new Map<string, number>();
    for (const p of ck.phases) phases.set(phaseName(p.phase), (phases.get(phaseName(p.phase)) ?? 0) + p.ms);
    await forest.stop();
    const left = forest.pids.filter(processExists);
    if (left.length) throw new Error(`pids ${left.join(', ')} of the restored tree were killed but are still there`);
    return { frozenMs: ck.frozenMs, checkpointMs: ck.totalMs, restoreMs: rs.restoreMs, restoreTotalMs, imageBytes, phases };
  } finally {
    await forest.stop();
    fs.rmSync(image, { recursive: true, force: true });
  }
}

/** A sample whose every number is the median of the samples' (each on its own). */
function medianSample(samples: Sample[]): Sample {
  const m = (pick: (s: Sample) => number) => median(samples.map(pick));
  const names = [...new Set(samples.flatMap((s) => [...s.phases.keys()]))];
  return {
    frozenMs: m((s) => s.frozenMs),
    checkpointMs: m((s) => s.checkpointMs),
    restoreMs: m((s) => s.restoreMs),
    restoreTotalMs: m((s) => s.restoreTotalMs),
    imageBytes: m((s) => s.imageBytes),
    phases: new Map(names.map((n) => [n, m((s) => s.phases.get(n) ?? 0)])),
  };
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : word.endsWith('s') ? 'es' : 's'}`;
const label = (s: Shape) => (s.axis === 'processes' ? `${plural(s.procs, 'process')} × ${s.mib} MiB` : `1 process × ${plural(s.threads, 'thread')}`);

async function run(ctx: BenchContext): Promise<string> {
  if (!fs.existsSync(FOREST)) throw new Error(`${FOREST} is missing: run \`make -C bench/workloads\` (npm run bench does)`);
  const samples = SHAPES.map((): Sample[] => []);
  try {
    // The first image of a run pays for page cache the machine has not used yet (see checkpoint-restore); not measured.
    ctx.log('tree-threads: warm-up');
    await measure(ctx, SHAPES[0]!, 'warmup');
    for (let rep = 0; rep < REPS; rep++) {
      for (const [i, s] of SHAPES.entries()) {
        ctx.log(`tree-threads: ${plural(s.procs, 'process')} × ${plural(s.threads, 'thread')}, ${s.mib} MiB each (${rep + 1}/${REPS})`);
        samples[i]!.push(await measure(ctx, s, `${i}-${rep}`));
      }
    }
  } finally {
    await Forest.stopAll();
  }
  type Row = { s: Shape; m: Sample; frozen: number[] };
  const rows: Row[] = SHAPES.map((s, i) => ({ s, m: medianSample(samples[i]!), frozen: samples[i]!.map((x) => x.frozenMs) }));

  const mainTable = table(
    ['axis', 'processes', 'threads each', 'MiB each', 'frozen', 'frozen min–max', 'checkpoint', 'restore (engine)', 'restore (total)', 'image MiB', 'frozen ÷ processes', 'frozen ÷ threads'],
    rows.map(({ s, m, frozen }) => [
      s.axis,
      String(s.procs),
      String(s.threads),
      String(s.mib),
      fmt(m.frozenMs),
      `${fmt(Math.min(...frozen))}–${fmt(Math.max(...frozen))}`,
      fmt(m.checkpointMs),
      fmt(m.restoreMs),
      fmt(m.restoreTotalMs),
      fmt(m.imageBytes / MIB),
      fmt(m.frozenMs / s.procs),
      fmt(m.frozenMs / (s.procs * s.threads)),
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );

  /** First against last row of an axis: how much the count, the image and the frozen time grew, and what one more process or thread adds. */
  const growth = (axis: Axis) => {
    const on = rows.filter((r) => r.s.axis === axis);
    const a = on[0]!;
    const b = on[on.length - 1]!;
    const count = (r: Row) => (axis === 'processes' ? r.s.procs : r.s.threads);
    const added = count(b) - count(a);
    return {
      a,
      b,
      n: count(b) / count(a),
      bytes: b.m.imageBytes / a.m.imageBytes,
      frozen: b.m.frozenMs / a.m.frozenMs,
      restore: b.m.restoreMs / a.m.restoreMs,
      frozenPerExtra: (b.m.frozenMs - a.m.frozenMs) / added,
      restorePerExtra: (b.m.restoreMs - a.m.restoreMs) / added,
      /** Each step between neighbouring rows: count from → to, and how much the count and the frozen time grew. */
      steps: on.slice(1).map((r, i) => ({ from: count(on[i]!), to: count(r), n: count(r) / count(on[i]!), frozen: r.m.frozenMs / on[i]!.m.frozenMs })),
    };
  };
  const gp = growth('processes');
  const gt = growth('threads');
  /** The state a checkpoint moves grows with the number of processes or threads (each has its own registers, tables and memory), so that is the bar; the image bytes are shown beside it. */
  const within = (g: ReturnType<typeof growth>) => g.frozen <= g.n;
  const verdict = (g: ReturnType<typeof growth>, unit: string, units: string) => {
    const judged = !within(g)
      ? `**faster than the ${unit} count** (${fmt(g.frozen / g.n)}× its growth)`
      : g.frozen <= g.bytes
        ? `**no faster than the ${unit} count or the image**`
        : `**no faster than the ${unit} count**; faster than the image bytes, which barely grow: the added time is per-${unit} work, not data`;
    const steps = g.steps.map((x) => `${x.from} → ${x.to}: ${fmt(x.frozen)}× for ${fmt(x.n)}×${x.frozen > x.n ? ' (faster than the count)' : ''}`).join('; ');
    return (
      `${fmt(g.n)}× the ${units} and ${fmt(g.bytes)}× the image bytes took ${fmt(g.frozen)}× the frozen time ` +
      `(${fmt(g.a.m.frozenMs)} → ${fmt(g.b.m.frozenMs)} ms, ${fmt(g.frozenPerExtra)} ms per extra ${unit}): ${judged}. ` +
      `Step by step, ${steps}. ` +
      `Restore (engine): ${fmt(g.restore)}×, ${fmt(g.a.m.restoreMs)} → ${fmt(g.b.m.restoreMs)} ms, ${fmt(g.restorePerExtra)} ms per extra ${unit}.`
    );
  };

  // Phase breakdown of the largest row of each axis, summed over the processes.
  const big = [gp.b, gt.b];
  const names = [...new Set(big.flatMap((r) => [...r.m.phases.keys()]))];
  const share = (ms: number, r: Row) => `${fmt((ms / r.m.checkpointMs) * 100, 2)}%`;
  const phaseRows = names.map((n) => [
    n,
    ...big.flatMap((r) => {
      const ms = r.m.phases.get(n) ?? 0;
      return [fmt(ms), share(ms, r)];
    }),
  ]);
  const phaseSum = (r: Row, keep: (name: string) => boolean = () => true) => [...r.m.phases].filter(([n]) => keep(n)).reduce((x, [, ms]) => x + ms, 0);
  phaseRows.push(['sum of the medians', ...big.flatMap((r) => [fmt(phaseSum(r)), share(phaseSum(r), r)])]);
  const top = (r: Row) => [...r.m.phases].sort((x, y) => y[1] - x[1]);
  const dominant = (r: Row) => {
    const [[name, ms], [second, ms2]] = top(r) as [[string, number], [string, number]];
    return `*${name}* (${fmt(ms)} ms, ${share(ms, r)} of the checkpoint${r.s.procs > 1 ? `, ${fmt(ms / r.s.procs)} ms per process` : ''}), then *${second}* (${share(ms2, r)})`;
  };
  const otherDumps = phaseSum(gp.b, (n) => n.startsWith('dump ') && n !== 'dump memory');
  const memoryRate = gp.b.m.imageBytes / ((gp.b.m.phases.get('dump memory') ?? NaN) / 1000) / 1e9;

  const bothWithin = within(gp) && within(gt);
  const topOf = (r: Row) => top(r)[0]![0];
  const summary = [
    `In short: ${label(gp.b.s)} were frozen for ${fmt(gp.b.m.frozenMs)} ms, ${fmt(gp.frozen)}× one process's ${fmt(gp.a.m.frozenMs)} ms`,
    `(${fmt(gp.frozenPerExtra)} ms per extra process of ${gp.b.s.mib} MiB); ${plural(gt.b.s.threads, 'thread')} in one process cost`,
    `${fmt(gt.frozenPerExtra)} ms of frozen time and ${fmt(gt.restorePerExtra)} ms of restore per extra thread.`,
    bothWithin
      ? 'On neither axis does the frozen time grow faster than the number of processes or threads it moves.'
      : `The frozen time grows faster than the number of ${[within(gp) ? '' : 'processes', within(gt) ? '' : 'threads'].filter(Boolean).join(' and ')} it moves.`,
    topOf(gp.b) === topOf(gt.b)
      ? `*${topOf(gp.b)}* dominates the checkpoint of the largest row on both axes.`
      : `*${topOf(gp.b)}* dominates the checkpoint of the largest process row, *${topOf(gt.b)}* that of the largest thread row.`,
  ].join('\n');

  return [
    'Trees of `bench/workloads/forest`: a root and its children (a flat tree), every process filling its own',
    'N MiB of private anonymous memory with non-zero data, its extra threads blocked on a condition variable.',
    '**Bare process trees, not containers**: containers have no checkpoint yet, so each tree is checkpointed with',
    '`{ tree: true }`, the engine path a container\'s processes will take, without namespaces or cgroup.',
    'Two axes: 1, 16 and 64 processes of one thread and 4 MiB each; one process of 16 MiB with 1, 8 and 64 threads.',
    `Each measurement checkpoints the running tree into a temporary directory on ${filesystemOf(ctx.tmp)} (which kills it),`,
    'restores it, and compares /proc before and after: the same pids with the same names, parents and thread ids',
    '(every measurement here did); then the tree is killed and reaped.',
    `Median of ${REPS} measurements per row, taken in ${REPS} rounds over all rows after one unmeasured warm-up. Times in ms.`,
    '',
    summary,
    '',
    '*Frozen*: from the first process stopping until the processes are killed (image written and fsynced);',
    '*checkpoint*: the whole operation, including the inspection before the stop and reaping after the kill;',
    '*restore (engine)*: from the first husk to the tree running; *restore (total)*: the whole `restore` operation,',
    'which first opens the image and verifies its sha256; *image MiB*: every file of the image;',
    '*frozen ÷ threads* counts every thread of the tree.',
    '',
    mainTable,
    '',
    'Growth along each axis, first row against last, then step by step:',
    '',
    `- Processes: ${verdict(gp, 'process', 'processes')}`,
    `- Threads: ${verdict(gt, 'thread', 'threads')}`,
    '',
    `Where the checkpoint's time goes in the largest row of each axis: phases as the engine reports them, a process's`,
    `dumps summed over the processes, median of each over the ${REPS} runs (so the sum need not be the checkpoint median).`,
    '*stop* begins before the frozen time does (at the first stop) and *release* (reaping the killed processes) comes',
    'after it; everything between is frozen. The engine reports no phases for a restore.',
    '',
    table(['phase', ...big.flatMap((r) => [`${label(r.s)}, ms`, 'share'])], phaseRows, ['l', 'r', 'r', 'r', 'r']),
    '',
    `Dominant with ${plural(gp.b.s.procs, 'process')}: ${dominant(gp.b)}.`,
    `Memory was dumped at ${fmt(memoryRate)} GB/s of image; the other dumps together took ${fmt(otherDumps / gp.b.s.procs)} ms per process.`,
    `Dominant with ${plural(gt.b.s.threads, 'thread')}: ${dominant(gt.b)}; *dump thread* took ${fmt((gt.b.m.phases.get('dump thread') ?? NaN) / (gt.b.s.threads))} ms per thread.`,
    '',
  ].join('\n');
}

export const treeThreads: Benchmark = { name: 'tree-threads', title: 'Checkpoint and restore of process trees and threads', run };
