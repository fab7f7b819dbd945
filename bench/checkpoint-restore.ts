/**
 * Checkpoint and restore of one process holding 64 MiB to 1 GiB of
 * anonymous memory (and a 1 MiB baseline), random or mostly zero, next to
 * what the same bytes cost to read with process_vm_readv and to copy with
 * memcpy in the same run. A component table says where the engine's time
 * goes.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { CheckpointSummary } from '../src/source/checkpoint.js';
import type { RestoreSummary } from '../src/target/restore.js';
import { scanPages } from '../src/image/pages.js';
import type { Benchmark, BenchContext } from './lib/bench.js';
import { Memhog, type Pattern } from './lib/memhog.js';
import { filesystemOf } from './lib/machine.js';
import { readvRate, memcpyRate } from './memory-read.js';
import { gbps, median, table, fmt, mib, size } from './lib/stats.js';

const MIB = 1 << 20;
/** 1 MiB is the baseline: what a checkpoint and a restore cost before there is memory to speak of. */
const SIZES_MIB = [1, 64, 256, 1024];
const PATTERNS: Pattern[] = ['random', 'sparse'];
/** The engine reads memory and hands it to the image writer in segments of this size (4096 pages). */
const SEGMENT = 16 * MIB;
const COMPONENT_BYTES = 256 * MIB;
const PAGE = 4096;
/** process_vm_readv passes over each block before its checkpoint; the median is the reference. */
const READV_PASSES = 3;

interface Case {
  mib: number;
  pattern: Pattern;
  fillMs: number;
  readvMs: number;
  ck: CheckpointSummary;
  rs: RestoreSummary;
  rsWallMs: number;
  verified: boolean;
}

function timeMs(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

/** GB/s of the steps a checkpoint and a restore are made of, each over 256 MiB in 16 MiB pieces (the engine's segment size). */
function components(dir: string): Array<[string, number]> {
  const random = crypto.randomFillSync(Buffer.allocUnsafe(SEGMENT));
  const zero = Buffer.alloc(SEGMENT).fill(0);
  const reps = COMPONENT_BYTES / SEGMENT;
  const over = (fn: () => void) => gbps(COMPONENT_BYTES, timeMs(() => { for (let i = 0; i < reps; i++) fn(); }));
  const big = Buffer.allocUnsafe(COMPONENT_BYTES);
  const firstTouch = gbps(COMPONENT_BYTES, timeMs(() => big.fill(1)));
  for (let off = 0; off < big.length; off += SEGMENT) random.copy(big, off);
  const rows: Array<[string, number]> = [
    ['memcpy (Buffer.copy) out of a 256 MiB buffer', memcpyRate(big, SEGMENT, 3)],
    ['first touch of fresh memory from user space (Buffer.allocUnsafe(256 MiB).fill)', firstTouch],
    ['sha256 (node:crypto): the writer hashes pages.bin, the reader verifies it', over(() => crypto.createHash('sha256').update(random).digest())],
    ['zero-page scan (scanPages), random pages', over(() => scanPages(random))],
    ['zero-page scan (scanPages), zero pages', over(() => scanPages(zero))],
  ];
  const file = path.join(dir, 'component-io');
  const write = (fsync: boolean) => {
    fs.rmSync(file, { force: true });
    const fd = fs.openSync(file, 'w');
    try {
      return gbps(COMPONENT_BYTES, timeMs(() => {
        for (let off = 0; off < COMPONENT_BYTES; off += SEGMENT) fs.writeSync(fd, big, off, SEGMENT, off);
        if (fsync) fs.fsyncSync(fd);
      }));
    } finally {
      fs.closeSync(fd);
    }
  };
  try {
    // The first write of a run can be far slower than the next (this VM backs
    // memory the guest never used before lazily), so both are shown.
    rows.push([`write a new file in the image directory (${filesystemOf(dir)}), no fsync, first time in this run`, write(false)]);
    rows.push(['the same again (page cache memory recycled)', write(false)]);
    rows.push(['write + fsync', write(true)]);
    const fd = fs.openSync(file, 'r');
    try {
      const back = Buffer.alloc(SEGMENT).fill(0);
      let at = 0;
      rows.push([
        'read it back from the page cache',
        over(() => {
          fs.readSync(fd, back, 0, SEGMENT, at);
          at += SEGMENT;
        }),
      ]);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
  return rows;
}

/** ms for a 4 KiB write + fsync of a new file and an fsync of its directory: what finishing an image costs at least. */
function fsyncLatency(dir: string): number[] {
  const page = Buffer.alloc(PAGE, 1);
  const out: number[] = [];
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, `fsync-${i}`);
    out.push(
      timeMs(() => {
        const fd = fs.openSync(file, 'w');
        fs.writeSync(fd, page);
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        const d = fs.openSync(dir, 'r');
        fs.fsyncSync(d);
        fs.closeSync(d);
      }),
    );
    fs.rmSync(file, { force: true });
  }
  return out;
}

async function oneCase(ctx: BenchContext, mibs: number, pattern: Pattern): Promise<Case> {
  const { tracer, tmp, log } = ctx;
  const image = path.join(tmp, `image-${mibs}-${pattern}`);
  log(`checkpoint-restore: ${mibs} MiB ${pattern}: filling`);
  let t = performance.now();
  const hog = await Memhog.start(tracer, tmp, mibs, pattern);
  const fillMs = performance.now() - t;
  try {
    const readvMs = (hog.bytes / readvRate(hog.pid, hog.addr, hog.bytes, SEGMENT, READV_PASSES) / 1e9) * 1000;
    log(`checkpoint-restore: ${mibs} MiB ${pattern}: checkpoint`);
    const ck = await tracer.call<CheckpointSummary>('checkpoint', hog.pid, image, {});
    log(`checkpoint-restore: ${mibs} MiB ${pattern}: restore`);
    t = performance.now();
    const rs = await tracer.call<RestoreSummary>('restore', image);
    const rsWallMs = performance.now() - t;
    if (rs.pid !== hog.pid) throw new Error(`restored as pid ${rs.pid}, expected ${hog.pid}`);
    const { ok } = await hog.verify();
    if (!ok) throw new Error(`${mibs} MiB ${pattern}: the restored process's memory checksum differs from the original's`);
    return { mib: mibs, pattern, fillMs, readvMs, ck, rs, rsWallMs, verified: ok };
  } finally {
    await hog.stop();
    fs.rmSync(image, { recursive: true, force: true });
  }
}

async function run(ctx: BenchContext): Promise<string> {
  ctx.log('checkpoint-restore: component rates');
  const parts = components(ctx.tmp);
  const fsyncMs = median(fsyncLatency(ctx.tmp));
  const w = await ctx.tracer.call<{ freshMs: number; presentMs: number }>('bench.writeIntoHusk', COMPONENT_BYTES, SEGMENT);
  parts.push(
    ['process_vm_writev into fresh memory of a husk (how restore writes pages)', gbps(COMPONENT_BYTES, w.freshMs)],
    ['process_vm_writev into the same pages, now present', gbps(COMPONENT_BYTES, w.presentMs)],
  );
  const memcpy = parts[0]![1];
  const cases: Case[] = [];
  for (const size of SIZES_MIB) for (const pattern of PATTERNS) cases.push(await oneCase(ctx, size, pattern));

  const bytes = (c: Case) => c.mib * MIB;
  const memcpyMs = (c: Case) => (bytes(c) / memcpy / 1e9) * 1000;
  // Rates and ratios of the baseline would only restate its fixed costs.
  const baseline = (c: Case) => c.mib === SIZES_MIB[0];
  const label = (c: Case) => size(bytes(c)) + (baseline(c) ? ' (baseline)' : '');
  const rate = (c: Case, ms: number) => (baseline(c) ? '–' : fmt(gbps(bytes(c), ms)));
  const ratio = (c: Case, ms: number) => (baseline(c) ? '–' : `${fmt(ms / c.readvMs)}×`);
  const checkpointRows = cases.map((c) => [
    label(c),
    c.pattern,
    fmt(c.ck.frozenMs),
    fmt(c.ck.totalMs),
    mib(c.ck.bytes),
    `${c.ck.dataPages.toLocaleString('en-US')} / ${c.ck.zeroPages.toLocaleString('en-US')}`,
    rate(c, c.ck.totalMs),
    fmt(c.readvMs),
    ratio(c, c.ck.totalMs),
    fmt(memcpyMs(c)),
  ]);
  const restoreRows = cases.map((c) => [
    label(c),
    c.pattern,
    fmt(c.rs.restoreMs),
    fmt(c.rsWallMs),
    rate(c, c.rsWallMs),
    fmt(c.fillMs),
    ratio(c, c.rsWallMs),
    c.verified ? 'same' : 'DIFFERS',
  ]);
  const pagesPerMiB = MIB / PAGE;
  const largest = (pattern: Pattern) => cases.filter((c) => c.pattern === pattern).sort((a, b) => b.mib - a.mib)[0]!;
  const big = largest('random');
  const sparse = largest('sparse');
  const summary = [
    `In short: ${size(bytes(big))} of random memory was checkpointed at ${fmt(gbps(bytes(big), big.ck.totalMs))} GB/s`,
    `(${fmt(big.ck.frozenMs)} ms frozen) and restored at ${fmt(gbps(bytes(big), big.rsWallMs))} GB/s, where process_vm_readv read it at`,
    `${fmt(gbps(bytes(big), big.readvMs))} GB/s and memcpy runs at ${fmt(memcpy)} GB/s; mostly zero, the same size took ${fmt(sparse.ck.frozenMs)} ms frozen`,
    `and ${fmt(sparse.rsWallMs)} ms to restore. The component table at the end shows what each byte goes through besides the read.`,
  ].join('\n');
  return [
    'One process (`bench/workloads/memhog`) holding N MiB of private anonymous memory, every page touched:',
    '*random* (no zero page) or *sparse* (1 page in 64 random, the rest written with zeros). The checkpoint',
    `writes an image into a temporary directory on ${filesystemOf(ctx.tmp)} (\`TMPDIR\` moves it) and kills the process; the restore`,
    'brings it back with the same pid, which then checksums its memory again (SIGUSR1) and must match the checksum',
    'it took after filling. GB/s = memory size (10^9 bytes) ÷ time. Times in ms.',
    '',
    summary,
    '',
    'Checkpoint. *Frozen*: from the process stopping to it being killed (image finished and fsynced);',
    '*checkpoint*: the whole `checkpoint` operation including the checks before the stop;',
    `*readv*: process_vm_readv over the same block just before (median of ${READV_PASSES} passes), in ${SEGMENT / MIB} MiB reads into a reused buffer`,
    `(what the engine reads with); *memcpy*: the same size at this run's memcpy rate. ${pagesPerMiB} pages per MiB.`,
    '',
    table(
      ['memory', 'pattern', 'frozen', 'checkpoint', 'pages.bin MiB', 'data / zero pages', 'GB/s', 'readv', 'checkpoint ÷ readv', 'memcpy'],
      checkpointRows,
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    'Restore. *Engine*: from spawning the husk to the process running (the `restoreMs` the engine reports);',
    '*total*: the whole `restore` operation, which first opens the image and verifies every file\'s sha256;',
    '*memhog fill*: how long memhog itself took to allocate and fill the same memory, for scale.',
    '',
    table(
      ['memory', 'pattern', 'engine', 'total', 'GB/s (total)', 'memhog fill', 'total ÷ readv', 'checksum'],
      restoreRows,
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    '',
    `What the steps cost on their own in this run (GB/s, ${COMPONENT_BYTES / MIB} MiB in ${SEGMENT / MIB} MiB pieces):`,
    '',
    table(['step', 'GB/s'], parts.map(([name, rate]) => [name, fmt(rate)]), ['l', 'r']),
    '',
    `A 4 KiB write + fsync of a new file and an fsync of its directory took ${fmt(fsyncMs)} ms (median of 5).`,
    `process_vm_readv in the cases above: median ${fmt(median(cases.filter((c) => c.mib >= 64).map((c) => gbps(bytes(c), c.readvMs))))} GB/s (64 MiB and up).`,
    '',
  ].join('\n');
}

export const checkpointRestore: Benchmark = { name: 'checkpoint-restore', title: 'Checkpoint and restore of anonymous memory', run };
