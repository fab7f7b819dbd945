import fs from 'node:fs';
import { readMaps, readVmFlags, readStat, readProcFile, readLink, type MapsEntry } from '../native/proc.js';
import { readRanges, readMappedObject, mappedObjectMode, ProcMem, PAGE_IS, type PageRegion } from '../native/memory.js';
import { pagemapScan } from '../native/pagemap.js';
import { Sys } from '../native/syscalls.js';
import { VmaEntry, ShmemEntry, MmEntry, VMA_FLAGS } from '../image/memory.js';
import { identifyFile } from '../image/file-identity.js';
import type { FileIdentity } from '../image/fields.js';
import { countPageRuns, packPageRuns, type PackedPageRuns, type PageRun } from '../image/pages.js';
import type { SentPages } from '../precopy/sent.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { Refusal } from './refusal.js';
import { ferryRanges, type DumpContext } from './context.js';

const SEGMENT_MAX_PAGES = 4096;
const STAGING_BYTES = 2 * SEGMENT_MAX_PAGES * 4096;
const KERNEL_MAPPINGS = new Map([
  ['[vdso]', 'vdso'],
  ['[vvar]', 'vvar'],
  ['[vvar_vclock]', 'vvar_vclock'],
] as const);
const VMFLAG_CODES: Record<string, (typeof VMA_FLAGS)[number]> = {
  gd: 'growsdown',
  nr: 'noreserve',
  dd: 'dontdump',
  dc: 'dontfork',
  wf: 'wipeonfork',
  hg: 'hugepage',
  nh: 'nohugepage',
};

type MappingClass = 'anon' | 'file' | 'shmem' | 'kernel' | 'vsyscall';

/** Shared tmpfs objects that exist only as long as something holds them: their contents travel. */
function isShmem(m: MapsEntry): boolean {
  return m.shared && m.deleted && (m.path === '/dev/zero' || m.path.startsWith('/memfd:') || m.path.startsWith('/dev/shm/'));
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

/**
 * Hashes every file the image will refer to and faults in the staging
 * buffer, before the freeze: hashing a Python's or a JVM's libraries takes
 * hundreds of milliseconds that would otherwise count as downtime. The dump
 * then finds the hashes in the cache.
 */
export function prepare(pid: number): void {
  stagingBuffer();
  for (const m of readMaps(pid)) if (classify(m) === 'file') identifyFile(m.path);
  identifyFile(readLink(`/proc/${pid}/exe`));
}

/** The files a process maps or runs from, which its image will refer to by identity: a target must have them, the same. */
export function referencedFiles(pid: number): FileIdentity[] {
  const paths = new Set(readMaps(pid).filter((m) => classify(m) === 'file').map((m) => m.path));
  paths.add(readLink(`/proc/${pid}/exe`));
  return [...paths].map((p) => identifyFile(p));
}

function prot(m: MapsEntry): number {
  return (m.read ? 1 : 0) | (m.write ? 2 : 0) | (m.exec ? 4 : 0);
}

/** A stretch of pages of one mapping, by page index from the mapping's start. */
interface PageStretch {
  first: number;
  pages: number;
}

/** The top of x86_64 user space (47-bit addresses), where a whole-address-space scan ends. */
const USER_SPACE_END = 0x7ffffffff000;

/**
 * Every page of the process that holds data: present or swapped, not the
 * shared zero page, with whether it is a page-cache (file) page. One page
 * table walk for the whole address space, shared by every mapping.
 */
function scanDataPages(pid: number): PageRegion[] {
  return pagemapScan(pid, 0, USER_SPACE_END, {
    required: PAGE_IS.PFNZERO,
    inverted: PAGE_IS.PFNZERO,
    anyOf: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
    report: PAGE_IS.FILE,
  });
}

/**
 * Which pages of a private mapping carry data that is neither in the file
 * nor zero: anonymous and copy-on-write pages, in memory or swapped out.
 * Page-cache pages of a file mapping are left out: the file has them.
 */
function travellingPages(regions: PageRegion[], m: MapsEntry, anon: boolean): PageStretch[] {
  const out: PageStretch[] = [];
  let lo = 0;
  let hi = regions.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (regions[mid]!.end <= m.start) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < regions.length && regions[i]!.start < m.end; i++) {
    const r = regions[i]!;
    if (!anon && r.categories & PAGE_IS.FILE) continue;
    const start = Math.max(r.start, m.start);
    const end = Math.min(r.end, m.end);
    out.push({ first: (start - m.start) / PAGE_SIZE, pages: (end - start) / PAGE_SIZE });
  }
  return out;
}

let staging: Buffer | null = null;

/**
 * One staging buffer per tracer thread, kept for its lifetime: touching
 * fresh memory costs a page fault per page (about 12 µs each on the VMs
 * measured in bench/), which a new 32 MiB buffer per checkpoint would pay
 * inside the freeze every time.
 */
function stagingBuffer(): Buffer {
  staging ??= Buffer.alloc(STAGING_BYTES);
  return staging;
}

/**
 * Reads pages into a staging buffer and queues them for the image. Segments
 * are packed back to back; only when the buffer is full does the dump wait
 * for the writes, so a process with hundreds of small mappings costs a
 * handful of waits, not hundreds.
 */
class PageStager {
  private readonly buf = stagingBuffer();
  private used = 0;
  private procMem: ProcMem | null = null;

  constructor(
    private readonly ctx: DumpContext,
    private readonly pid: number,
  ) {}

  private async room(bytes: number): Promise<Buffer> {
    if (this.used + bytes > this.buf.length) {
      await this.ctx.image.flushPages();
      this.used = 0;
    }
    const out = this.buf.subarray(this.used, this.used + bytes);
    this.used += bytes;
    return out;
  }

  /** Reads `pages` pages at `addr` (through /proc/PID/mem when the mapping is unreadable, e.g. PROT_NONE) and stores them. */
  async storeRemote(addr: number, pages: number, readable: boolean): Promise<PackedPageRuns> {
    const out = await this.room(pages * PAGE_SIZE);
    if (!readable || readRanges(this.pid, [{ addr, len: out.length }], out) !== out.length) {
      this.procMem ??= new ProcMem(this.pid);
      this.procMem.read(addr, out);
    }
    return this.store(out);
  }

  async storeLocal(data: Buffer): Promise<PackedPageRuns> {
    const out = await this.room(data.length);
    data.copy(out);
    return this.store(out);
  }

  private store(pages: Buffer): PackedPageRuns {
    const runs = this.ctx.image.queuePageRuns(pages);
    const c = countPageRuns(runs);
    this.ctx.stats.pages += c.pages;
    this.ctx.stats.dataPages += c.dataPages;
    this.ctx.stats.zeroPages += c.zeroPages;
    return packPageRuns(runs);
  }

  async close(): Promise<void> {
    this.procMem?.close();
    await this.ctx.image.flushPages();
  }
}

type Segments = Array<{ page: number; runs: PackedPageRuns }>;

async function storeSegments(stretches: PageStretch[], store: (firstPage: number, pages: number) => Promise<PackedPageRuns>): Promise<Segments> {
  const segments: Segments = [];
  for (const s of stretches) {
    for (let first = s.first; first < s.first + s.pages; first += SEGMENT_MAX_PAGES) {
      segments.push({ page: first, runs: await store(first, Math.min(SEGMENT_MAX_PAGES, s.first + s.pages - first)) });
    }
  }
  return segments;
}

/**
 * Like storeSegments, but pages whose copy an earlier pre-copy round put in
 * the image (and that were not written since) are referred to where they
 * are; only the others are read now. A segment's data runs must lie back to
 * back in pages.bin, so a segment ends wherever the copies do not.
 */
async function storeSegmentsAfterPrecopy(
  start: number,
  stretches: PageStretch[],
  sent: SentPages,
  stats: DumpContext['stats'],
  store: (firstPage: number, pages: number) => Promise<PackedPageRuns>,
): Promise<Segments> {
  const segments: Segments = [];
  /** The segment of copies being built: its first page, its runs, and where its next data page must be. */
  let known: { page: number; runs: PageRun[]; next: number | null } | null = null;
  let unknownFrom = -1;
  const closeKnown = (): void => {
    if (known) segments.push({ page: known.page, runs: packPageRuns(known.runs) });
    known = null;
  };
  const closeUnknown = async (end: number): Promise<void> => {
    if (unknownFrom >= 0) segments.push(...(await storeSegments([{ first: unknownFrom, pages: end - unknownFrom }], store)));
    unknownFrom = -1;
  };
  for (const s of stretches) {
    for (let page = s.first; page < s.first + s.pages; page++) {
      const at = sent.lookup(start + page * PAGE_SIZE);
      if (at === undefined) {
        closeKnown();
        if (unknownFrom < 0) unknownFrom = page;
        continue;
      }
      await closeUnknown(page);
      stats.pages++;
      stats.precopiedPages++;
      if (at === 'zero') stats.zeroPages++;
      else stats.dataPages++;
      known = extendCopies(known, page, at, closeKnown);
    }
    closeKnown();
    await closeUnknown(s.first + s.pages);
  }
  return segments;
}

/** Adds one copied page to the segment being built, starting a new one where the copies stop lying back to back. */
function extendCopies(
  known: { page: number; runs: PageRun[]; next: number | null } | null,
  page: number,
  at: number | 'zero',
  close: () => void,
): { page: number; runs: PageRun[]; next: number | null } {
  if (known && at !== 'zero' && known.next !== null && known.next !== at) {
    close();
    known = null;
  }
  const seg = known ?? { page, runs: [], next: null };
  const last = seg.runs.at(-1);
  if (at === 'zero') {
    if (last?.kind === 'zero') last.pages++;
    else seg.runs.push({ kind: 'zero', pages: 1 });
  } else {
    if (last?.kind === 'data' && last.offset + last.pages * PAGE_SIZE === at) last.pages++;
    else seg.runs.push({ kind: 'data', pages: 1, offset: at });
    seg.next = at + PAGE_SIZE;
  }
  return seg;
}

async function dumpShmem(ctx: DumpContext, m: MapsEntry, stager: PageStager): Promise<number> {
  const key = `${m.dev}:${m.inode}`;
  const known = ctx.shmemIds.get(key);
  if (known !== undefined) return known;
  const id = ctx.shmemIds.size;
  ctx.shmemIds.set(key, id);
  const contents = readMappedObject(ctx.pid, m.start, m.end);
  const pages = Math.ceil(contents.length / PAGE_SIZE);
  const padded = Buffer.alloc(pages * PAGE_SIZE);
  contents.copy(padded);
  const segments = await storeSegments(pages ? [{ first: 0, pages }] : [], (first, n) => stager.storeLocal(padded.subarray(first * PAGE_SIZE, (first + n) * PAGE_SIZE)));
  const memfd = m.path.startsWith('/memfd:');
  const tmpfs = m.path.startsWith('/dev/shm/');
  const kind = memfd ? 'memfd' : tmpfs ? 'tmpfs' : 'anon';
  const name = memfd ? m.path.slice('/memfd:'.length) : tmpfs ? m.path : '';
  const mode = tmpfs ? mappedObjectMode(ctx.pid, m.start, m.end) : undefined;
  ctx.image.addEntry(ShmemEntry.make({ id, kind, name, ...(mode !== undefined ? { mode } : {}), size: contents.length, key, segments }));
  return id;
}

/**
 * The pages of a process that its image carries as data (private anonymous
 * and copy-on-write pages that are present or swapped), as address ranges:
 * what pre-copy sends while the process runs. The dump at the freeze takes
 * the same set.
 */
export function travellingRanges(pid: number): Array<{ addr: number; pages: number; readable: boolean }> {
  const dataPages = scanDataPages(pid);
  const out: Array<{ addr: number; pages: number; readable: boolean }> = [];
  for (const m of readMaps(pid)) {
    const c = classify(m);
    if (c !== 'anon' && !(c === 'file' && !m.shared)) continue;
    for (const s of travellingPages(dataPages, m, c === 'anon')) out.push({ addr: m.start + s.first * PAGE_SIZE, pages: s.pages, readable: m.read });
  }
  return out;
}

export async function dump(ctx: DumpContext): Promise<void> {
  const { pid } = ctx;
  const skip = ferryRanges(ctx);
  const maps = readMaps(pid).filter((m) => !skip.some((r) => m.start < r.end && m.end > r.start));
  const vmflags = readVmFlags(pid);
  const dataPages = scanDataPages(pid);
  const stager = new PageStager(ctx, pid);
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
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: 'shmem', shmem: await dumpShmem(ctx, m, stager), segments: [] }));
      } else if (c === 'file' && m.shared) {
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: 'file', file: identifyFile(m.path), segments: [] }));
      } else {
        const travel = travellingPages(dataPages, m, c === 'anon');
        const read = (first: number, n: number) => stager.storeRemote(m.start + first * PAGE_SIZE, n, m.read);
        const segments = ctx.sent ? await storeSegmentsAfterPrecopy(m.start, travel, ctx.sent, ctx.stats, read) : await storeSegments(travel, read);
        ctx.image.addEntry(VmaEntry.make({ ...base, kind: c, ...(c === 'file' ? { file: identifyFile(m.path) } : {}), segments }));
      }
    }
  } finally {
    await stager.close();
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
