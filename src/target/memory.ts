import { Sys } from '../native/syscalls.js';
import { readMaps } from '../native/proc.js';
import { writeRanges, ProcMem } from '../native/memory.js';
import { NativeError, isNativeError } from '../native/errors.js';
import { Errno } from '../native/errno.js';
import { VmaEntry, ShmemEntry, MmEntry } from '../image/memory.js';
import { unpackPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import { fileMismatch } from '../image/file-identity.js';
import { openInHusk, parkFd, fetchFd, type RestoreContext } from './context.js';
import { MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TMPFILE, PROT_WRITE } from '../native/flags.js';

const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;
/** Pages per injected pwrite: the injection scratch is 1 MiB. */
const PWRITE_PAGES = 128;
const MADVISE: Record<string, number> = { dontfork: 10, dontdump: 16, wipeonfork: 18, hugepage: 14, nohugepage: 15 };
const KERNEL_KINDS = ['vvar', 'vvar_vclock', 'vdso'] as const;

/** Why the image's memory cannot be restored here (files that differ, a different vdso), checked before anything is created. */
export function preflight(ctx: Pick<RestoreContext, 'image'>, problems: string[]): void {
  const seen = new Set<string>();
  for (const v of ctx.image.entriesOf(VmaEntry)) {
    if (v.kind === 'file' && v.file && !seen.has(v.file.path)) {
      seen.add(v.file.path);
      const why = fileMismatch(v.file);
      if (why) problems.push(`mapping ${v.start.toString(16)}-${v.end.toString(16)}: ${why}`);
    }
  }
  for (const mm of ctx.image.entriesOf(MmEntry)) {
    const why = fileMismatch(mm.exe);
    if (why) problems.push(`executable: ${why}`);
  }
  const ours = new Map(readMaps('self').map((m) => [m.path, m.end - m.start]));
  for (const v of ctx.image.entriesOf(VmaEntry)) {
    if (v.kind !== 'vdso' && v.kind !== 'vvar' && v.kind !== 'vvar_vclock') continue;
    const size = ours.get(`[${v.kind}]`);
    if (size !== v.end - v.start) problems.push(`[${v.kind}] is ${v.end - v.start} bytes in the image and ${size ?? 'absent'} here: the image needs the same kernel`);
  }
}

/** Address ranges the image occupies, for choosing where the husk may live. */
export function occupiedRanges(ctx: Pick<RestoreContext, 'image'>): Array<{ start: number; end: number }> {
  return ctx.image.entriesOf(VmaEntry).map((v) => ({ start: v.start, end: v.end }));
}

/**
 * Clears the husk's address space down to its own code page and moves the
 * kernel's vdso/vvar to where the image had them. The three kernel mappings
 * move together keeping their offsets; when the old and new places overlap,
 * they go through a parking area first (an overlapping mremap is EINVAL).
 */
function prepareAddressSpace(ctx: RestoreContext, parking: number): void {
  const inj = ctx.injector;
  const keep = { start: ctx.husk.layout.start, end: ctx.husk.layout.end };
  const current = readMaps(ctx.pid);
  for (const m of current) {
    if (m.path === '[vsyscall]' || KERNEL_KINDS.some((k) => m.path === `[${k}]`)) continue;
    if (m.start === keep.start) continue;
    const scratch = inj.scratchRange;
    if (scratch && m.start >= scratch.start && m.end <= scratch.end) continue;
    inj.call(`munmap(${m.path || 'anon'})`, Sys.munmap, m.start, m.end - m.start);
  }
  const saved = new Map(ctx.image.entriesOf(VmaEntry).filter((v) => v.pid === ctx.imagePid && (KERNEL_KINDS as readonly string[]).includes(v.kind)).map((v) => [v.kind, v]));
  const have = current.filter((m) => KERNEL_KINDS.some((k) => m.path === `[${k}]`));
  const overlaps = have.some((m) => [...saved.values()].some((v) => v.start < m.end && v.end > m.start));
  const move = (from: number, len: number, to: number, what: string) => inj.call(`mremap(${what})`, Sys.mremap, from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
  let positions = have.map((m) => ({ kind: m.path.slice(1, -1), start: m.start, len: m.end - m.start }));
  if (overlaps) {
    const base = Math.min(...positions.map((p) => p.start));
    positions = positions.map((p) => {
      const to = parking + (p.start - base);
      move(p.start, p.len, to, `[${p.kind}] to parking`);
      return { ...p, start: to };
    });
  }
  for (const p of positions) {
    const target = saved.get(p.kind as (typeof KERNEL_KINDS)[number]);
    if (target) move(p.start, p.len, target.start, `[${p.kind}]`);
    else inj.call(`munmap([${p.kind}])`, Sys.munmap, p.start, p.len);
  }
}

/**
 * An unlinked /dev/shm file, made under its old name and unlinked at once so
 * /proc/PID/maps shows the same "(deleted)" path; O_TMPFILE when that name
 * is taken here.
 */
function createUnlinked(ctx: RestoreContext, path: string, mode: number): number {
  const inj = ctx.injector;
  try {
    const fd = openInHusk(ctx, path, O_RDWR | O_CREAT | O_EXCL, mode);
    inj.reset();
    inj.call(`unlink(${path})`, Sys.unlink, inj.put(Buffer.from(path + '\0')));
    inj.reset();
    return fd;
  } catch (e) {
    if (!isNativeError(e, 'EEXIST')) throw e;
    return openInHusk(ctx, path.slice(0, path.lastIndexOf('/')) || '/', O_RDWR | O_TMPFILE, mode);
  }
}

/**
 * The husk fd of a memfd or unlinked /dev/shm file of the image: created here (memfd_create, and its
 * whole contents written with pwrite, not only what some mapping shows) by
 * the first process that needs it, fetched from that process by the others.
 */
export async function shmemFd(ctx: RestoreContext, id: number): Promise<number> {
  const local = ctx.shmemFds.get(id);
  if (local !== undefined) return local;
  const home = ctx.shared.homes.get(`shmem:${id}`);
  if (home) {
    const fd = fetchFd(ctx, home);
    ctx.shmemFds.set(id, fd);
    return fd;
  }
  const s = ctx.image.entriesOf(ShmemEntry).find((e) => e.id === id);
  if (!s) throw new Error(`the image lacks shmem ${id}`);
  if (s.kind === 'anon') throw new Error(`shmem ${id} is shared anonymous memory, which only a mapping creates`);
  const inj = ctx.injector;
  let fd: number;
  if (s.kind === 'tmpfs') {
    fd = createUnlinked(ctx, s.name, s.mode ?? 0o600);
  } else {
    inj.reset();
    const name = inj.put(Buffer.from(s.name + '\0'));
    fd = inj.call(`memfd_create(${s.name})`, Sys.memfd_create, name, 0);
    inj.reset();
  }
  inj.call('ftruncate', Sys.ftruncate, fd, s.size);
  for (const seg of s.segments) {
    let page = seg.page;
    for (const run of unpackPageRuns(seg.runs)) {
      for (let done = 0; run.kind === 'data' && done < run.pages; done += PWRITE_PAGES) {
        const n = Math.min(PWRITE_PAGES, run.pages - done);
        const data = await ctx.image.readPages(run.offset + done * PAGE_SIZE, n * PAGE_SIZE);
        const at = (page + done) * PAGE_SIZE;
        const len = Math.min(n * PAGE_SIZE, s.size - at);
        inj.reset();
        const buf = inj.put(data.subarray(0, len));
        inj.call('pwrite64(memfd)', Sys.pwrite64, fd, buf, len, at);
      }
      page += run.pages;
    }
  }
  inj.reset();
  const parked = parkFd(ctx, fd);
  ctx.shmemFds.set(id, parked);
  ctx.shared.homes.set(`shmem:${id}`, { pid: ctx.pid, fd: parked });
  return parked;
}

interface Filler {
  write(addr: number, data: Buffer, writable: boolean): void;
  close(): void;
}

function filler(pid: number): Filler {
  let procMem: ProcMem | null = null;
  return {
    write(addr, data, writable) {
      if (writable && writeRanges(pid, [{ addr, len: data.length }], data) === data.length) return;
      procMem ??= new ProcMem(pid, true);
      procMem.write(addr, data);
    },
    close() {
      procMem?.close();
    },
  };
}

/** Writes a mapping's stored pages; zero runs are written only where the page would otherwise show file contents. */
async function fillSegments(ctx: RestoreContext, start: number, segments: VmaEntry['segments'], writable: boolean, writeZeros: boolean, fill: Filler): Promise<void> {
  for (const seg of segments) {
    let page = seg.page;
    for (const run of unpackPageRuns(seg.runs)) {
      const addr = start + page * PAGE_SIZE;
      const len = run.pages * PAGE_SIZE;
      if (run.kind === 'data') fill.write(addr, await ctx.image.readPages(run.offset, len), writable);
      else if (writeZeros) fill.write(addr, Buffer.alloc(len), writable);
      page += run.pages;
    }
  }
}

/**
 * Maps a shared object; returns true when this mapping created it and its
 * contents still have to be written. Shared anonymous memory is created by
 * its first mapping in the image; every other mapping, in this process or
 * another, reaches the same object through that mapping's map_files entry.
 */
async function mapShmem(ctx: RestoreContext, v: VmaEntry): Promise<boolean> {
  const inj = ctx.injector;
  const len = v.end - v.start;
  const prot = v.prot | PROT_WRITE;
  const entry = ctx.image.entriesOf(ShmemEntry).find((s) => s.id === v.shmem);
  if (!entry) throw new Error(`mapping ${v.start.toString(16)} refers to shmem ${v.shmem}, which the image lacks`);
  let fd: number;
  let ours = false;
  if (entry.kind === 'memfd') {
    fd = await shmemFd(ctx, entry.id);
  } else {
    const first = ctx.shared.anonMappings.get(entry.id);
    if (!first) {
      inj.call('mmap(shared anonymous)', Sys.mmap, v.start, len, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
      ctx.shared.anonMappings.set(entry.id, { pid: ctx.pid, start: v.start, end: v.end });
      return true;
    }
    const owner = first.pid === ctx.pid ? 'self' : String(first.pid);
    fd = openInHusk(ctx, `/proc/${owner}/map_files/${first.start.toString(16)}-${first.end.toString(16)}`, O_RDWR);
    ours = true;
  }
  try {
    inj.call('mmap(shared object)', Sys.mmap, v.start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, v.offset);
  } finally {
    if (ours) inj.call('close', Sys.close, fd);
  }
  return false;
}

export async function restore(ctx: RestoreContext, parking: number): Promise<void> {
  const inj = ctx.injector;
  prepareAddressSpace(ctx, parking);
  const fill = filler(ctx.pid);
  try {
    for (const v of ctx.image.entriesOf(VmaEntry)) {
      if (v.pid !== ctx.imagePid || (KERNEL_KINDS as readonly string[]).includes(v.kind)) continue;
      const len = v.end - v.start;
      const extra = (v.flags.includes('growsdown') ? MAP_GROWSDOWN : 0) | (v.flags.includes('noreserve') ? MAP_NORESERVE : 0);
      const writable = (v.prot & PROT_WRITE) !== 0;
      if (v.kind === 'anon') {
        inj.call(`mmap(${v.name || 'anon'})`, Sys.mmap, v.start, len, v.prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | extra, -1, 0);
        await fillSegments(ctx, v.start, v.segments, writable, false, fill);
      } else if (v.kind === 'file') {
        const fd = openInHusk(ctx, v.file!.path, v.shared && writable ? O_RDWR : O_RDONLY);
        try {
          inj.call(`mmap(${v.file!.path})`, Sys.mmap, v.start, len, v.prot, (v.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE | extra, fd, v.offset);
        } finally {
          inj.call('close', Sys.close, fd);
        }
        if (!v.shared) await fillSegments(ctx, v.start, v.segments, writable, true, fill);
      } else if (v.kind === 'shmem') {
        if (await mapShmem(ctx, v)) {
          const entry = ctx.image.entriesOf(ShmemEntry).find((s) => s.id === v.shmem)!;
          const fromPage = v.offset / PAGE_SIZE;
          const pages = len / PAGE_SIZE;
          const inside = entry.segments
            .map((seg) => ({ page: seg.page - fromPage, runs: seg.runs }))
            .filter((seg) => seg.page >= 0 && seg.page < pages);
          await fillSegments(ctx, v.start, inside, true, false, fill);
        }
        if (!(v.prot & PROT_WRITE)) inj.call('mprotect', Sys.mprotect, v.start, len, v.prot);
      }
      for (const f of v.flags) if (MADVISE[f] !== undefined) inj.call(`madvise(${f})`, Sys.madvise, v.start, len, MADVISE[f]!);
    }
  } finally {
    fill.close();
  }
}

/** prctl(PR_SET_MM, PR_SET_MM_MAP): brk, stack, arg/env ranges, auxv and /proc/PID/exe, in one call. */
export function restoreMm(ctx: RestoreContext): void {
  const mm = ctx.image.entriesOf(MmEntry).find((m) => m.pid === ctx.imagePid);
  if (!mm) throw new NativeError('restore', Errno.EINVAL, `the image has no mm entry for pid ${ctx.imagePid}`);
  const inj = ctx.injector;
  const exeFd = openInHusk(ctx, mm.exe.path, O_RDONLY);
  try {
    inj.reset();
    const auxv = inj.put(Buffer.from(mm.auxv));
    const map = Buffer.alloc(104);
    const fields = [mm.startCode, mm.endCode, mm.startData, mm.endData, mm.startBrk, mm.brk, mm.startStack, mm.argStart, mm.argEnd, mm.envStart, mm.envEnd, auxv];
    fields.forEach((f, i) => map.writeBigUInt64LE(BigInt(f), i * 8));
    map.writeUInt32LE(mm.auxv.length, 96);
    map.writeUInt32LE(exeFd, 100);
    const mapAddr = inj.put(map);
    inj.call('prctl(PR_SET_MM, PR_SET_MM_MAP)', Sys.prctl, 35, 14, mapAddr, 104, 0);
  } finally {
    inj.reset();
    inj.call('close', Sys.close, exeFd);
  }
}
