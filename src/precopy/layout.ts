/**
 * Which mappings of a process dirty tracking covers, read from
 * /proc/PID/maps at every round: mappings come and go while a process
 * runs, and a round must cover the ones that exist when it scans.
 *
 * Tracked: every private mapping, anonymous or of a file, whatever its
 * protection. A read-only or PROT_NONE mapping can be made writable and
 * written between two rounds (JITs do), and one written and then made
 * read-only must still be reported; only registering it keeps either from
 * slipping through. What travels of a private file mapping is its
 * copy-on-write pages, so there only anonymous pages count as written.
 *
 * Not tracked: shared mappings (their object travels whole, whatever this
 * process wrote: other processes may write it too) and the kernel's
 * special mappings (vdso, vvar, vsyscall), which hold no process data.
 */
import { readMaps, type MapsEntry } from '../native/proc.js';

export type VmaKind = 'anon' | 'file';

export interface AddressRange {
  start: number;
  end: number;
}

export interface TrackedVma extends AddressRange {
  kind: VmaKind;
  readable: boolean;
  writable: boolean;
  path: string;
  /** Its line in /proc/PID/maps: consecutive numbers mean nothing untracked lies between. */
  seq: number;
}

export interface UntrackedVma extends AddressRange {
  path: string;
  reason: string;
}

export interface Layout {
  /** Tracked mappings in address order. */
  tracked: TrackedVma[];
  /** Mappings left out, with why. */
  untracked: UntrackedVma[];
}

function isAnonymous(m: MapsEntry): boolean {
  return m.path === '' || m.path === '[heap]' || m.path === '[stack]' || m.path.startsWith('[anon:') || m.path.startsWith('[stack:');
}

export function classify(maps: MapsEntry[]): Layout {
  const out: Layout = { tracked: [], untracked: [] };
  for (const [seq, m] of maps.entries()) {
    const anon = isAnonymous(m);
    // [vdso], [vvar], [vvar_vclock], [vsyscall], [uprobes]: kernel pages, never process data.
    if (!anon && m.path.startsWith('[')) continue;
    if (m.shared) {
      out.untracked.push({ start: m.start, end: m.end, path: m.path, reason: 'a shared mapping: its object travels whole, written by whichever process' });
      continue;
    }
    out.tracked.push({ start: m.start, end: m.end, kind: anon ? 'anon' : 'file', readable: m.read, writable: m.write, path: m.path, seq });
  }
  return out;
}

export function readLayout(pid: number): Layout {
  return classify(readMaps(pid));
}

/** Adjacent or overlapping ranges joined; input in any order. */
export function mergeRanges(ranges: AddressRange[]): AddressRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: AddressRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/** The parts of `a` not covered by `b` (both merged, in address order). */
export function subtractRanges(a: AddressRange[], b: AddressRange[]): AddressRange[] {
  const out: AddressRange[] = [];
  let j = 0;
  for (const r of a) {
    let start = r.start;
    while (j < b.length && b[j]!.end <= start) j++;
    for (let k = j; k < b.length && b[k]!.start < r.end; k++) {
      if (b[k]!.start > start) out.push({ start, end: b[k]!.start });
      start = Math.max(start, b[k]!.end);
    }
    if (start < r.end) out.push({ start, end: r.end });
  }
  return out;
}

/**
 * Runs of consecutive tracked mappings (consecutive in /proc/PID/maps:
 * nothing untracked between them) that `allowed` accepts and `sameRun`
 * keeps together, each with its address span. Gaps inside a span held no
 * mapping when the maps were read.
 */
export function runsOf(vmas: TrackedVma[], allowed: (v: TrackedVma) => boolean, sameRun: (a: TrackedVma, b: TrackedVma) => boolean = () => true): Array<{ start: number; end: number; vmas: TrackedVma[] }> {
  const runs: Array<{ start: number; end: number; vmas: TrackedVma[] }> = [];
  let cur: { start: number; end: number; vmas: TrackedVma[] } | null = null;
  for (const v of vmas) {
    if (!allowed(v)) {
      cur = null;
      continue;
    }
    const last = cur?.vmas.at(-1);
    if (cur && last && last.seq + 1 === v.seq && sameRun(last, v)) {
      cur.end = v.end;
      cur.vmas.push(v);
    } else {
      cur = { start: v.start, end: v.end, vmas: [v] };
      runs.push(cur);
    }
  }
  return runs;
}
