/**
 * How long one injected syscall takes, into a running C process and into a
 * husk, measured three ways: timed inside the tracer thread (the engine's
 * own cost), through Tracer.call with a batch of calls (what a restore step
 * that sends many calls at once pays), and through Tracer.call one call at a
 * time (the worst case: a thread hop per syscall, and for a process a fresh
 * Injector per call). Also: what a husk costs to spawn and a child to clone.
 */
import { Sys } from '../src/native/syscalls.js';
import { pidMax } from '../src/native/host.js';
import { processExists } from '../src/native/proc.js';
import type { InjectedCall, InjectedResult } from '../src/native/tracer-ops.js';
import type { Tracer } from '../src/native/tracer.js';
import type { Benchmark, BenchContext } from './lib/bench.js';
import { BENCH_MAP_ADDR, INJECT_KINDS, type InjectKind } from './lib/ops.js';
import { Memhog } from './lib/memhog.js';
import { summarize, table, fmt, type Summary } from './lib/stats.js';

const IN_THREAD = 2000;
const SINGLE = 500;
const BATCH = 100;
const BATCH_REPS = 30;
const WARMUP = 100;
const SPAWNS = 50;
const CLONES = 100;
const PAGE = 4096;

/** The calls of one iteration of `kind`, for the core inject operations (the mmap+munmap pair is two calls). */
function callsFor(kind: InjectKind): InjectedCall[] {
  switch (kind) {
    case 'getpid':
      return [{ nr: Sys.getpid }];
    case 'mmap+munmap':
      return [
        { nr: Sys.mmap, args: [BENCH_MAP_ADDR, PAGE, 3, 0x02 | 0x20 | 0x100000, -1, 0] },
        { nr: Sys.munmap, args: [BENCH_MAP_ADDR, PAGE] },
      ];
    case 'write 4 KiB':
      return [{ nr: Sys.write, args: [1, { data: new Uint8Array(PAGE).fill(0x5a) }, PAGE] }];
  }
}

function checkResults(kind: InjectKind, pid: number, results: InjectedResult[]): void {
  const want = kind === 'getpid' ? [pid] : kind === 'mmap+munmap' ? [BENCH_MAP_ADDR, 0] : [PAGE];
  for (let i = 0; i < results.length; i++) {
    const got = results[i]!.result;
    if (got !== want[i % want.length]) throw new Error(`injected ${kind}: call ${i} returned ${got}, expected ${want[i % want.length]}`);
  }
}

/** µs per iteration through Tracer.call: one call per iteration, and batches of BATCH iterations (per-iteration time of each batch). */
async function throughTracer(tracer: Tracer, op: 'inject' | 'husk.inject', pid: number, kind: InjectKind): Promise<{ single: Summary; batch: Summary }> {
  const one = callsFor(kind);
  const many = Array.from({ length: BATCH }, () => one).flat();
  const run = async (calls: InjectedCall[]) => checkResults(kind, pid, await tracer.call<InjectedResult[]>(op, pid, calls));
  for (let i = 0; i < WARMUP; i++) await run(one);
  const single: number[] = [];
  for (let i = 0; i < SINGLE; i++) {
    const t = performance.now();
    await run(one);
    single.push((performance.now() - t) * 1000);
  }
  await run(many);
  const batch: number[] = [];
  for (let i = 0; i < BATCH_REPS; i++) {
    const t = performance.now();
    await run(many);
    batch.push(((performance.now() - t) * 1000) / BATCH);
  }
  return { single: summarize(single), batch: summarize(batch) };
}

/** `n` pids nobody uses, from the top of the pid range (the kernel hands those out last). */
function freePids(n: number): number[] {
  const out: number[] = [];
  for (let p = pidMax() - 1; p > 300 && out.length < n; p--) if (!processExists(p)) out.push(p);
  if (out.length < n) throw new Error(`only ${out.length} free pids found`);
  return out;
}

const us = (s: Summary) => [fmt(s.median), fmt(s.p99)];

async function run({ tracer, tmp, log }: BenchContext): Promise<string> {
  const rows: string[][] = [];
  /** getpid medians by target, for the summary line. */
  const getpid: Record<string, { single: number; batched: number | null; viaTracer: number }> = {};
  let noBatching = false;
  const hog = await Memhog.start(tracer, tmp, 1, 'random');
  let huskPid = 0;
  try {
    for (const target of ['process', 'husk'] as const) {
      if (target === 'husk') huskPid = (await tracer.call<{ pid: number }>('husk.spawn')).pid;
      for (const kind of INJECT_KINDS) {
        log(`injection: ${kind} into a ${target}`);
        type InThread = { single: number[]; batched: number[] | null };
        const inThread =
          target === 'process'
            ? await tracer.call<InThread>('bench.injectProcess', hog.pid, kind, IN_THREAD, WARMUP, BATCH, BATCH_REPS)
            : await tracer.call<InThread>('bench.injectHusk', kind, IN_THREAD, WARMUP, BATCH, BATCH_REPS);
        if (!inThread.batched) noBatching = true;
        let viaTracer: { single: Summary; batch: Summary };
        if (target === 'process') {
          await tracer.call('attach', hog.pid, {});
          try {
            viaTracer = await throughTracer(tracer, 'inject', hog.pid, kind);
          } finally {
            await tracer.call('detach', hog.pid);
          }
        } else {
          viaTracer = await throughTracer(tracer, 'husk.inject', huskPid, kind);
        }
        if (kind === 'getpid') {
          getpid[target] = {
            single: summarize(inThread.single).median,
            batched: inThread.batched ? summarize(inThread.batched).median : null,
            viaTracer: viaTracer.single.median,
          };
        }
        rows.push([
          target === 'process' ? 'C process' : 'husk',
          kind,
          ...us(summarize(inThread.single)),
          ...(inThread.batched ? us(summarize(inThread.batched)) : ['–', '–']),
          ...us(viaTracer.batch),
          ...us(viaTracer.single),
        ]);
      }
    }
    if (!hog.alive()) throw new Error('the C process died during injection');

    log('injection: floors');
    const floors = await tracer.call<Record<'localSyscall' | 'getRegs' | 'setRegs', number[]>>('bench.floors', hog.pid, IN_THREAD);
    const hop: number[] = [];
    for (let i = 0; i < IN_THREAD; i++) {
      const t = performance.now();
      await tracer.call('bench.noop');
      hop.push((performance.now() - t) * 1000);
    }

    log('injection: husk spawn and clone3');
    const spawnInThread = (await tracer.call<number[]>('bench.huskSpawn', SPAWNS, 3)).map((ms) => ms * 1000);
    const spawnViaTracer: number[] = [];
    for (let i = 0; i < SPAWNS; i++) {
      const t = performance.now();
      const { pid } = await tracer.call<{ pid: number }>('husk.spawn');
      spawnViaTracer.push((performance.now() - t) * 1000);
      await tracer.call('husk.kill', pid);
    }
    const clone = (await tracer.call<number[]>('bench.huskClone', CLONES, null)).map((ms) => ms * 1000);
    const cloneSetTid = (await tracer.call<number[]>('bench.huskClone', CLONES, freePids(CLONES))).map((ms) => ms * 1000);

    const latency = table(
      ['target', 'syscall', 'in thread median', 'p99', `one stop ×${BATCH} median`, 'p99', `Tracer.call ×${BATCH} median`, 'p99', 'Tracer.call ×1 median', 'p99'],
      rows,
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    );
    const parts = table(
      ['step', 'median µs', 'p99 µs'],
      [
        ['a syscall in the tracer thread itself (koffi → glibc syscall)', ...us(summarize(floors.localSyscall))],
        ['PTRACE_GETREGS on a stopped task', ...us(summarize(floors.getRegs))],
        ['PTRACE_SETREGS on a stopped task', ...us(summarize(floors.setRegs))],
        ['Tracer.call round trip of an empty operation (thread hop)', ...us(summarize(hop))],
      ],
      ['l', 'r', 'r'],
    );
    const husk = table(
      ['operation', 'n', 'median µs', 'p99 µs'],
      [
        ['husk spawn, in the tracer thread (write ELF, posix_spawn, seize, first stop)', String(SPAWNS), ...us(summarize(spawnInThread))],
        ["husk spawn through Tracer.call('husk.spawn')", String(SPAWNS), ...us(summarize(spawnViaTracer))],
        ['clone3 child of a husk, kernel-chosen pid (clone3, first stop, child injector)', String(CLONES), ...us(summarize(clone))],
        ['clone3 child of a husk with set_tid (exact pid, as restore does)', String(CLONES), ...us(summarize(cloneSetTid))],
      ],
      ['l', 'r', 'r', 'r'],
    );
    const p = getpid.process!;
    const h = getpid.husk!;
    const summary =
      `In short: an injected getpid took ${fmt(p.single)} µs in the C process and ${fmt(h.single)} µs in a husk as its own ptrace stop` +
      (p.batched !== null && h.batched !== null ? `, ${fmt(p.batched)} / ${fmt(h.batched)} µs inside a batch run in one stop` : '') +
      `, and ${fmt(p.viaTracer)} / ${fmt(h.viaTracer)} µs as a Tracer.call of its own. A husk took ${fmt(summarize(spawnInThread).median / 1000)} ms to spawn,` +
      ` a clone3 child with an exact pid ${fmt(summarize(cloneSetTid).median / 1000)} ms.`;
    return [
      summary,
      '',
      'Latency of one injected syscall in µs (an mmap+munmap row is the pair). The C process is',
      '`bench/workloads/memhog` (1 MiB) stopped in `pause()`; the husk is a fresh Ferry husk.',
      `*In thread*: ${IN_THREAD} calls timed one by one inside the tracer thread (\`bench/lib/ops.ts\`), one Injector for all;`,
      'each call is its own ptrace stop (SETREGS, single-step, wait4, GETREGS).',
      noBatching
        ? '*One stop*: this engine has no `Injector.batchRaw`, so there is nothing to measure.'
        : `*One stop ×${BATCH}*: \`Injector.batchRaw\` runs ${BATCH} iterations as one table in one ptrace stop, time ÷ ${BATCH}, ${BATCH_REPS} batches.`,
      `*Tracer.call ×${BATCH}*: one \`inject\`/\`husk.inject\` call carrying ${BATCH} iterations, time ÷ ${BATCH}; median and p99 over ${BATCH_REPS} such calls.`,
      `*Tracer.call ×1*: ${SINGLE} calls of one iteration each, timed from the main thread. For the C process every \`inject\` call builds`,
      'and ends its own Injector (save/restore registers and signal mask; a call with a buffer also maps and unmaps its scratch);',
      'a husk keeps one Injector for its life.',
      '',
      latency,
      '',
      'What an injection is made of (each injected call is SETREGS, a single-step, a wait4 for the trap, GETREGS):',
      '',
      parts,
      '',
      'Restore helpers:',
      '',
      husk,
      '',
    ].join('\n');
  } finally {
    if (huskPid) await tracer.call('husk.kill', huskPid).catch(() => undefined);
    await hog.stop();
  }
}

export const injection: Benchmark = { name: 'injection', title: 'Injected syscalls, husks and clone3', run };
