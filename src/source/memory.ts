import fs from 'node:fs';
import { readMaps, readVmFlags, readStat, readProcFile, readLink, type MapsEntry } from '../native/proc.js';
import { readPagemap, readRanges, readMappedObject, ProcMem, PM } from '../native/memory.js';
import { Sys } from '../native/syscalls.js';
import { VmaEntry, ShmemEntry, MmEntry, VMA_FLAGS } from '../image/memory.js';
import { identifyFile } from '../image/file-identity.js';
import { countPageRuns, packPageRuns, type PackedPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { Refusal } from './refusal.js';
import { ferryRanges, type DumpContext } from './context.js';

const SEGMENT_MAX_PAGES = 4096;
const KERNEL_MAPPINGS = new Map([
  ['[vdso]', 'vdso'],
  ['[vvar]', 'vvar'],
  ['[vvar_vclock]', 'vvar_vclock'],
] as const);
const VMFLAG_CODES: Record<string, (typeof VMA_FLAGS)[number]> = {
  gd: 'growsdown',
  dd: 'dontdump',
  dc: 'dontfork',
  wf: 'wipeonfork',
  hg: 'hugepage',
  nh: 'nohugepage',
};

type MappingClass = 'anon' | 'file' | 'shmem' | 'kernel' | 'vsyscall';

function isShmem(m: MapsEntry): boolean {
  return m.shared && m.deleted && (m.path === '/dev/zero' || m.path.startsWith('/memfd:'));
}

/** How a mapping is dumped, or why it cannot be. */
function classify(m: MapsEntry): MappingClass | { refuse: string } {
  if (m.path === '[vsyscall]') return 'vsyscall';
  if (KERNEL_MAPPINGS.has(m.path as never)) return 'kernel';
  if (m.path === '' || m.path === '[heap]' || m.path === '[stack]' || m.path.startsWith('[anon:')) {
    return m.shared ? { refuse: 'shared anonymous memory without a backing object (unexpected kernel state)' } : 'anon';
  }
  if (m.path.startsWith('[')) return { refuse: `a special kernel mapping ${m.path}` };
  if (m.path.startsWith('/SYSV')) return { refuse: 'System V shared memory (not supported for a single process yet)' };
  if (isShmem(m)) return 'shmem';
  if (m.path.startsWith('/memfd:')) return { refuse: 'a private mapping of a memfd' };
  if (m.deleted) return { refuse: `a mapping of the deleted file ${m.path}` };
  let st: fs.Stats;
  try {
    st = fs.statSync(m.path);
  } catch {
    return { refuse: `a mapping of ${m.path}, which Ferry cannot open` };
  }
  if (!st.isFile()) return { refuse: `a mapping of ${m.path}, which is ${st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'not a regular file'}` };
  return 'file';
}

export function inspect(pid: number, refusals: Refusal[]): void {
  for (const m of readMaps(pid)) {
    const c = classify(m);
    if (typeof c === 'object') refusals.push({ pid, resource: `mapping ${m.start.toString(16)}-${m.end.toString(16)}`, reason: c.refuse });
  }
}

function prot(m: MapsEntry): number {
  return (m.read ? 1 : 0) | (m.write ? 2 : 0) | (m.exec ? 4 : 0);
}

/** Which pages of a private mapping carry data that is not in the file or zero: anonymous and copy-on-write pages, in memory or swapped out. */
function travellingPages(pid: number, m: MapsEntry, anon: boolean): Uint8Array {
  const pages = (m.end - m.start) / PAGE_SIZE;
  const map = readPagemap(pid, m.start, pages);
  const out = new Uint8Array(pages);
  for (let i = 0; i < pages; i++) {
    const w = map[i]!;
    if (w & PM.SWAPPED) out[i] = 1;
    else if (w & PM.PRESENT) out[i] = anon || !(w & PM.FILE_OR_SHARED_ANON) ? 1 : 0;
  }
  return out;
}

class PageReader {
  private buf = Buffer.allocUnsafe(SEGMENT_MAX_PAGES * PAGE_SIZE);
  private procMem: ProcMem | null = null;

  constructor(private readonly pid: number) {}

  /** Reads pages; unreadable mappings (PROT_NONE) go through /proc/PID/mem. */
  read(addr: number, pages: number, readable: boolean): Buffer {
    const out = this.buf.subarray(0, pages * PAGE_SIZE);
    if (readable && readRanges(this.pid, [{ addr, len: out.length }], out) === out.length) return out;
    this.procMem ??= new ProcMem(this.pid);
    this.procMem.read(addr, out);
    return out;
  }

  close(): void {
    this.procMem?.close();
  }
}

async function storeSegments(ctx: DumpContext, travel: Uint8Array, read: (firstPage: number, pages: number) => Buffer): Promise<Array<{ page: number; runs: PackedPageRuns }>> {
  const segments: Array<{ page: number; runs: PackedPageRuns }> = [];
  for (let i = 0; i < travel.length; ) {
    if (!travel[i]) {
      i++;
      continue;
    }
    let n = 1;
    while (i + n < travel.length && travel[i + n] && n < SEGMENT_MAX_PAGES) n++;
    const runs = await ctx.image.writePageRuns(read(i, n));
    const c = countPageRuns(runs);
    ctx.stats.pages += c.pages;
    ctx.stats.dataPages += c.dataPages;
    ctx.stats.zeroPages += c.zeroPages;
    segments.push({ page: i, runs: packPageRuns(runs) });
    i += n;
  }
  return segments;
}

async function dumpShmem(ctx: DumpContext, m: MapsEntry): Promise<number> {
  const key = `${m.dev}:${m.inode}`;
  const known = ctx.shmemIds.get(key);
  if (known !== undefined) return known;
  const id = ctx.shmemIds.size;
  ctx.shmemIds.set(key, id);
  const contents = readMappedObject(ctx.pid, m.start, m.end);
  const pages = Math.ceil(contents.length / PAGE_SIZE);
  const padded = Buffer.alloc(pages * PAGE_SIZE);
  contents.copy(padded);
  const segments = await storeSegments(ctx, new Uint8Array(pages).fill(1), (first, n) => padded.subarray(first * PAGE_SIZE, (first + n) * PAGE_SIZE));
  const memfd = m.path.startsWith('/memfd:');
  ctx.image.addEntry(
    ShmemEntry.make({ id, kind: memfd ? 'memfd' : 'anon', name: memfd ? m.path.slice('/memfd:'.length) : '', size: contents.length, key, segments }),
  );
  return id;
}

export async function dump(ctx: DumpContext): Promise<void> {
  const { pid } = ctx;
  const skip = ferryRanges(ctx);
  const maps = readMaps(pid).filter((m) => !skip.some((r) => m.start < r.end && m.end > r.start));
  const vmflags = readVmFlags(pid);
  const reader = new PageReader(pid);
  try {
    for (const m of maps) {
      const c = classify(m);
      if (c === 'vsyscall') continue;
      if (typeof c === 'object') throw new Error(`pid ${pid} mapping ${m.start.toString(16)}-${m.end.toString(16)}: ${c.refuse} (it appeared after the checks)`);
      const flags = (vmflags.get(m.start) ?? []).map((f) => VMFLAG_CODES[f]).filter((f): f is (typeof VMA_FLAGS)[number] => !!f);
      const base = { pid, start: m.start, end: m.end, prot: prot(m), shared: m.shared, name: m.path, offset: m.offset, flags };
      if (c === 'kernel') {
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: KERNEL_MAPPINGS.get(m.path as never)!, segments: [] }));
      } else if (c === 'shmem') {
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: 'shmem', shmem: await dumpShmem(ctx, m), segments: [] }));
      } else if (c === 'file' && m.shared) {
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: 'file', file: identifyFile(m.path), segments: [] }));
      } else {
        const travel = travellingPages(pid, m, c === 'anon');
        const segments = await storeSegments(ctx, travel, (first, n) => reader.read(m.start + first * PAGE_SIZE, n, m.read));
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: c, ...(c === 'file' ? { file: identifyFile(m.path) } : {}), segments }));
      }
    }
  } finally {
    reader.close();
  }
  dumpMm(ctx);
}

function dumpMm(ctx: DumpContext): void {
  const { pid, injector } = ctx;
  const f = readStat(pid).fields.map((x) => Number(x));
  const brk = injector.call('brk', Sys.brk, 0);
  const auxv = Buffer.from(readProcFile(`/proc/${pid}/auxv`), 'latin1');
  ctx.image.addEntry(
    MmEntry.make({
      pid,
      startCode: f[26]!,
      endCode: f[27]!,
      startStack: f[28]!,
      startData: f[45]!,
      endData: f[46]!,
      startBrk: f[47]!,
      brk,
      argStart: f[48]!,
      argEnd: f[49]!,
      envStart: f[50]!,
      envEnd: f[51]!,
      auxv: new Uint8Array(auxv),
      exe: identifyFile(readLink(`/proc/${pid}/exe`)),
    }),
  );
}
