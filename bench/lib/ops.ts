/**
 * Tracer operations for the benchmarks, loaded into the tracer thread with
 * `tracer.load()`. They time injected syscalls inside the thread that owns
 * the ptrace session, so the numbers carry no message-passing cost; the
 * injection benchmark measures the same calls through Tracer.call() too, and
 * the difference is what the thread hop costs.
 */
import { attachAndStop, detach } from '../../src/native/attach.js';
import { Injector } from '../../src/native/inject.js';
import { Husk } from '../../src/native/husk.js';
import { getRegs, setRegs } from '../../src/native/ptrace.js';
import { writeRanges } from '../../src/native/memory.js';
import { syscall } from '../../src/native/libc.js';
import { Sys } from '../../src/native/syscalls.js';
import type { Op } from '../../src/native/tracer-protocol.js';

export type InjectKind = 'getpid' | 'mmap+munmap' | 'write 4 KiB';

export const INJECT_KINDS: InjectKind[] = ['getpid', 'mmap+munmap', 'write 4 KiB'];

const PROT_RW = 3;
const MAP_PRIVATE_ANON = 0x02 | 0x20;
const MAP_PRIVATE_ANON_FIXED_NOREPLACE = MAP_PRIVATE_ANON | 0x100000;
/** Where the mmap+munmap pair maps its page: far from PIE binaries, the mmap area and husk bases, so the same address works in every task and the pair can be batched without knowing mmap's result. */
export const BENCH_MAP_ADDR = 0x300000000000;
/** The benchmark tasks have /dev/null on fd 1 (posix_spawn's default stdio in Ferry). */
const DEV_NULL_FD = 1;
const PAGE = 4096;

function expect(what: string, got: bigint | number, want: number): void {
  if (Number(got) !== want) throw new Error(`${what} returned ${got}, expected ${want}`);
}

/** One iteration of `kind`, as the core `inject` operation would run it (a write copies its buffer into scratch first). */
function stepFor(inj: Injector, kind: InjectKind): () => void {
  const page = Buffer.alloc(PAGE, 0x5a);
  switch (kind) {
    case 'getpid':
      return () => expect('getpid', inj.callRaw(Sys.getpid), inj.pid);
    case 'mmap+munmap':
      return () => {
        expect('mmap', inj.callRaw(Sys.mmap, BENCH_MAP_ADDR, PAGE, PROT_RW, MAP_PRIVATE_ANON_FIXED_NOREPLACE, -1, 0), BENCH_MAP_ADDR);
        expect('munmap', inj.callRaw(Sys.munmap, BENCH_MAP_ADDR, PAGE), 0);
      };
    case 'write 4 KiB':
      return () => {
        inj.reset();
        expect('write', inj.callRaw(Sys.write, DEV_NULL_FD, inj.put(page), PAGE), PAGE);
      };
  }
}

/** What Injector.batchRaw looks like; it is new, so the benchmark asks for it instead of requiring it. */
interface Batching {
  batchRaw(calls: Array<{ nr: number; args?: Array<number | bigint> }>): bigint[];
}

/**
 * `n` iterations of `kind` run as one table in one ptrace stop (batchRaw),
 * or null when this engine has no batching. The write iterations share one
 * scratch buffer, as the calls of a real batch share their scratch.
 */
function batchFor(inj: Injector, kind: InjectKind, n: number): (() => void) | null {
  const batching = inj as unknown as Partial<Batching>;
  if (typeof batching.batchRaw !== 'function') return null;
  const page = Buffer.alloc(PAGE, 0x5a);
  return () => {
    inj.reset();
    let calls: Array<{ nr: number; args?: Array<number | bigint> }>;
    let want: number[];
    if (kind === 'getpid') {
      calls = [{ nr: Sys.getpid }];
      want = [inj.pid];
    } else if (kind === 'mmap+munmap') {
      calls = [
        { nr: Sys.mmap, args: [BENCH_MAP_ADDR, PAGE, PROT_RW, MAP_PRIVATE_ANON_FIXED_NOREPLACE, -1, 0] },
        { nr: Sys.munmap, args: [BENCH_MAP_ADDR, PAGE] },
      ];
      want = [BENCH_MAP_ADDR, 0];
    } else {
      calls = [{ nr: Sys.write, args: [DEV_NULL_FD, inj.put(page), PAGE] }];
      want = [PAGE];
    }
    const results = batching.batchRaw!.call(inj, Array.from({ length: n }, () => calls).flat());
    results.forEach((r, i) => expect(`batched ${kind} #${i}`, r, want[i % want.length]!));
  };
}

/** µs per iteration of batches of `n`, one sample per batch; null without batching. */
function sampleBatches(inj: Injector, kind: InjectKind, n: number, reps: number): number[] | null {
  const batch = batchFor(inj, kind, n);
  return batch ? sample(batch, reps, 3).map((us) => us / n) : null;
}

/** Microseconds per call of `fn`, one sample per call, after `warmup` untimed calls. */
function sample(fn: () => void, n: number, warmup: number): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    fn();
    out[i] = (performance.now() - t) * 1000;
  }
  return out;
}

function withHusk<T>(use: (h: Husk) => T): T {
  const h = Husk.spawn();
  try {
    return use(h);
  } finally {
    h.kill();
  }
}

export const tracerOps: Record<string, Op> = {
  /** Nothing: timing it from the main thread gives the cost of one Tracer.call round trip. */
  'bench.noop': () => null,

  /** Attaches to a running process, times `n` injections of `kind` one by one and `reps` batches of `batch` in one stop, detaches. µs per iteration. */
  'bench.injectProcess': (_ctx, pid: number, kind: InjectKind, n: number, warmup: number, batch: number, reps: number) => {
    attachAndStop(pid);
    try {
      const inj = new Injector(pid);
      try {
        return { single: sample(stepFor(inj, kind), n, warmup), batched: sampleBatches(inj, kind, batch, reps) };
      } finally {
        inj.end();
      }
    } finally {
      detach(pid);
    }
  },

  /** The same inside a fresh husk. */
  'bench.injectHusk': (_ctx, kind: InjectKind, n: number, warmup: number, batch: number, reps: number) =>
    withHusk((h) => ({ single: sample(stepFor(h.injector, kind), n, warmup), batched: sampleBatches(h.injector, kind, batch, reps) })),

  /**
   * What one injected syscall is made of, in a stopped process: the
   * register round trip alone, and a plain syscall from this thread (the
   * koffi call floor). µs per call.
   */
  'bench.floors': (_ctx, pid: number, n: number) => {
    attachAndStop(pid);
    try {
      const regs = getRegs(pid);
      return {
        localSyscall: sample(() => syscall('getpid', Sys.getpid), n, 100),
        getRegs: sample(() => getRegs(pid), n, 100),
        setRegs: sample(() => setRegs(pid, regs), n, 100),
      };
    } finally {
      detach(pid);
    }
  },

  /** Husk.spawn (write the ELF, posix_spawn, seize, stop) timed; each husk is killed untimed. ms per husk. */
  'bench.huskSpawn': (_ctx, n: number, warmup: number) => {
    const out: number[] = [];
    for (let i = 0; i < n + warmup; i++) {
      const t = performance.now();
      const h = Husk.spawn();
      const ms = performance.now() - t;
      h.kill();
      if (i >= warmup) out.push(ms);
    }
    return out;
  },

  /**
   * clone3 from one husk, `n` times: the injected clone3, the child's first
   * stop and its own injector (which unmaps the inherited scratch). With
   * `pids`, each child gets that exact pid through set_tid. ms per child.
   */
  'bench.huskClone': (_ctx, n: number, pids: number[] | null) =>
    withHusk((h) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        h.clone(pids ? { setTid: [pids[i]!] } : {});
        out.push(performance.now() - t);
      }
      return out;
    }),

  /**
   * What a restore's page writes cost: process_vm_writev of `bytes` into a
   * fresh private anonymous mapping of a husk (every page is allocated by
   * the write), then again into the same, now present, pages. ms for each
   * pass, writing `chunk` bytes per call from one touched buffer.
   */
  'bench.writeIntoHusk': (_ctx, bytes: number, chunk: number) =>
    withHusk((h) => {
      const addr = h.injector.call('mmap', Sys.mmap, 0, bytes, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
      const from = Buffer.allocUnsafe(chunk).fill(0x5a);
      const pass = () => {
        const t = performance.now();
        for (let off = 0; off < bytes; off += chunk) {
          if (writeRanges(h.pid, [{ addr: addr + off, len: chunk }], from) !== chunk) throw new Error(`short process_vm_writev at +${off}`);
        }
        return performance.now() - t;
      };
      return { freshMs: pass(), presentMs: pass() };
    }),
};
