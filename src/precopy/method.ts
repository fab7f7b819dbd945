/**
 * Which dirty tracking a migration uses, and why: the best this kernel
 * offers, said in words a user can act on. In order of preference:
 *
 *   uffd-wp     userfaultfd asynchronous write-protection + PAGEMAP_SCAN
 *               (6.7+): the kernel records writes, a round is one
 *               page-table walk, the process never stops.
 *   soft-dirty  CONFIG_MEM_SOFT_DIRTY: the kernel records writes, but
 *               reading and clearing the bits are two steps, so each round
 *               stops the process briefly.
 *   hashing     nothing from the kernel: every round reads and hashes every
 *               page, which costs time and CPU proportional to the memory.
 */
import { readStatus } from '../native/proc.js';
import { probeUserfaultfd, featureNames, UFFD_FEATURE } from '../native/userfaultfd.js';
import { pagemapScanSupported, softDirtySupport } from '../native/pagemap.js';
import { kernelRelease } from '../native/host.js';
import type { DirtyMethod } from './dirty.js';

export interface MethodCandidate {
  method: DirtyMethod;
  available: boolean;
  reason: string;
}

export interface MethodChoice {
  method: DirtyMethod;
  reason: string;
  /** Every method, in order of preference, with whether this host has it and why (not). */
  candidates: MethodCandidate[];
}

export const METHODS: DirtyMethod[] = ['uffd-wp', 'soft-dirty', 'hashing'];

let hostCandidates: MethodCandidate[] | null = null;

/** What the kernel offers: asked once per process (the answer does not change while it runs). */
function probeHost(): MethodCandidate[] {
  if (hostCandidates) return hostCandidates;
  hostCandidates = [uffdCandidate(), softDirtyCandidate(), hashingCandidate()];
  return hostCandidates;
}

function uffdCandidate(): MethodCandidate {
  const method = 'uffd-wp' as const;
  const uffd = probeUserfaultfd();
  if (!uffd.available) return { method, available: false, reason: `userfaultfd is not usable here: ${uffd.error}` };
  const missing = featureNames(UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED).filter((name) => !(uffd.features & UFFD_FEATURE[name as keyof typeof UFFD_FEATURE]));
  if (missing.length) return { method, available: false, reason: `userfaultfd lacks ${missing.map((m) => `UFFD_FEATURE_${m}`).join(' and ')} (Linux ${kernelRelease()}; 6.7+ has them)` };
  const scan = pagemapScanSupported();
  if (!scan.supported) return { method, available: false, reason: `the PAGEMAP_SCAN ioctl is missing (${scan.error}; Linux 6.7+ has it)` };
  const extra = uffd.features & UFFD_FEATURE.WP_HUGETLBFS_SHMEM ? ', WP_HUGETLBFS_SHMEM' : '';
  return {
    method,
    available: true,
    reason: `userfaultfd has WP_ASYNC and WP_UNPOPULATED${extra}, and PAGEMAP_SCAN exists: the kernel records writes and each round is one page-table walk that also re-protects, so the process never stops`,
  };
}

function softDirtyCandidate(): MethodCandidate {
  const sd = softDirtySupport();
  return { method: 'soft-dirty', available: sd.available, reason: sd.available ? `${sd.reason}; each round stops the process while its bits are read and cleared` : sd.reason };
}

function hashingCandidate(): MethodCandidate {
  return { method: 'hashing', available: true, reason: 'needs nothing from the kernel, but every round reads and hashes every data page (about 4 µs per 4 KiB page here)' };
}

/** The best method this host has; with `pid`, what may still stop it in that process. */
export function chooseMethod(pid?: number): MethodChoice {
  const candidates = probeHost().map((c) => ({ ...c }));
  if (pid !== undefined) {
    const caveat = processCaveat(pid);
    if (caveat) candidates[0]!.reason += `; ${caveat}`;
  }
  const best = candidates.find((c) => c.available)!;
  return { method: best.method, reason: best.reason, candidates };
}

/** A seccomp filter can forbid userfaultfd(2) in the process; which it forbids only shows when tracking starts (it falls back then). */
function processCaveat(pid: number): string | null {
  try {
    const seccomp = readStatus(pid).Seccomp;
    if (seccomp === '2') return `pid ${pid} runs under a seccomp filter, which may forbid userfaultfd (tracking falls back to the next method if it does)`;
  } catch {
    return null;
  }
  return null;
}

/** The candidates of a choice, one line each, for a doctor-style report. */
export function describeChoice(choice: MethodChoice): string[] {
  return [
    `dirty tracking: ${choice.method}`,
    ...choice.candidates.map((c) => `  ${c.method === choice.method ? '*' : c.available ? '+' : '-'} ${c.method.padEnd(10)} ${c.available ? 'available' : 'unavailable'}: ${c.reason}`),
  ];
}

/** What a migration of `pid` (or of any process, without one) would use for pre-copy, and why; for `migrate doctor` and the pre-migration checks. */
export function precopyPreflight(pid?: number): MethodChoice & { lines: string[] } {
  const choice = chooseMethod(pid);
  return { ...choice, lines: describeChoice(choice) };
}
