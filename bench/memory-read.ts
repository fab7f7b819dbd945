/**
 * How fast Ferry can read another process's memory, against the ceiling of
 * copying the same bytes inside Node. The source is memhog holding 256 MiB
 * of touched random memory; every method reads all of it, chunk by chunk.
 */
import { readRanges, ProcMem } from '../src/native/memory.js';
import type { Benchmark, BenchContext } from './lib/bench.js';
import { Memhog } from './lib/memhog.js';
import { gbps, median, table, fmt, size } from './lib/stats.js';

const MIB = 1 << 20;
const BLOCK_MIB = 256;
const CHUNKS = [64 << 10, MIB, 16 * MIB];
/** Passes over the block per measurement: enough for a median and a range on a shared machine. */
const PASSES = 5;

/** GB/s of each pass of `readChunk` over `bytes`, chunk by chunk; the median pass is reported. */
function passes(bytes: number, chunk: number, n: number, readChunk: (offset: number) => void): number[] {
  const out: number[] = [];
  for (let p = 0; p < n; p++) {
    const t = performance.now();
    for (let off = 0; off < bytes; off += chunk) readChunk(off);
    out.push(gbps(bytes, performance.now() - t));
  }
  return out;
}

export interface ReadRates {
  readvReused: number;
  memcpyReused: number;
}

/** A buffer whose pages are already faulted in, so a "reused buffer" measurement never pays first-touch faults. */
function touched(len: number): Buffer {
  return Buffer.allocUnsafe(len).fill(0);
}

/** process_vm_readv into one reused buffer, for the comparisons other benchmarks make. */
export function readvRate(pid: number, addr: number, bytes: number, chunk: number, n = 1): number {
  const buf = touched(chunk);
  return median(
    passes(bytes, chunk, n, (off) => {
      const len = Math.min(chunk, bytes - off);
      if (readRanges(pid, [{ addr: addr + off, len }], buf) !== len) throw new Error(`short process_vm_readv at +${off}`);
    }),
  );
}

/** Buffer.copy out of `src` into one reused buffer: memcpy from memory larger than any cache. */
export function memcpyRate(src: Buffer, chunk: number, n = 1): number {
  const dst = touched(chunk);
  return median(passes(src.length, chunk, n, (off) => src.copy(dst, 0, off, Math.min(off + chunk, src.length))));
}

async function run({ tracer, tmp, log }: BenchContext): Promise<string> {
  log(`memory-read: starting memhog with ${BLOCK_MIB} MiB of random data`);
  const hog = await Memhog.start(tracer, tmp, BLOCK_MIB, 'random');
  try {
    const { pid, addr, bytes } = hog;
    // The memcpy source holds the very same bytes, read out of the process once.
    const src = Buffer.allocUnsafe(bytes);
    if (readRanges(pid, [{ addr, len: bytes }], src) !== bytes) throw new Error('could not read the block for the memcpy source');

    const readv = (buf: (chunk: number) => Buffer) => (chunk: number) =>
      passes(bytes, chunk, PASSES, (off) => {
        if (readRanges(pid, [{ addr: addr + off, len: chunk }], buf(chunk)) !== chunk) throw new Error(`short process_vm_readv at +${off}`);
      });
    const reused = (chunk: number) => {
      const b = touched(chunk);
      return () => b;
    };
    const methods: Array<{ name: string; rates: (chunk: number) => number[] }> = [
      { name: 'process_vm_readv, reused buffer', rates: (chunk) => readv(reused(chunk))(chunk) },
      { name: 'process_vm_readv, fresh buffer per chunk', rates: readv((chunk) => Buffer.allocUnsafe(chunk)) },
      {
        name: '/proc/PID/mem pread, reused buffer',
        rates: (chunk) => {
          const mem = new ProcMem(pid);
          try {
            const buf = touched(chunk);
            return passes(bytes, chunk, PASSES, (off) => mem.read(addr + off, buf));
          } finally {
            mem.close();
          }
        },
      },
      {
        name: 'Buffer.copy (memcpy) in Node, reused buffer',
        rates: (chunk) => {
          const dst = touched(chunk);
          return passes(bytes, chunk, PASSES, (off) => src.copy(dst, 0, off, off + chunk));
        },
      },
      {
        name: 'Buffer.copy (memcpy) in Node, fresh buffer per chunk',
        rates: (chunk) => passes(bytes, chunk, PASSES, (off) => src.copy(Buffer.allocUnsafe(chunk), 0, off, off + chunk)),
      },
    ];
    const rows: string[][] = [];
    for (const m of methods) {
      const row = [m.name];
      for (const chunk of CHUNKS) {
        log(`memory-read: ${m.name}, ${size(chunk)} chunks`);
        const r = m.rates(chunk);
        row.push(`${fmt(median(r))} (${fmt(Math.min(...r))}–${fmt(Math.max(...r))})`);
      }
      rows.push(row);
    }
    if (!hog.alive()) throw new Error('memhog died during the reads');
    return [
      `GB/s (10^9 bytes/s) reading all of a ${BLOCK_MIB} MiB block of touched random memory in \`bench/workloads/memhog\`,`,
      `chunk by chunk, from the main thread (process_vm_readv needs no ptrace stop): median of ${PASSES} passes (slowest–fastest).`,
      '*Fresh buffer*: `Buffer.allocUnsafe(chunk)` per chunk, dropped right after; whether its pages must fault in',
      'again depends on whether malloc hands back memory the garbage collector has freed, hence the wide ranges.',
      'The memcpy rows copy the same bytes out of a Node buffer.',
      '',
      table(['method', ...CHUNKS.map((c) => `${size(c)} chunks`)], rows, ['l', 'r', 'r', 'r']),
      '',
    ].join('\n');
  } finally {
    await hog.stop();
  }
}

export const memoryRead: Benchmark = { name: 'memory-read', title: 'Reading another process’s memory', run };
