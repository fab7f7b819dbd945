/**
 * The checks a migration runs before the freeze, so that a migration that
 * cannot work is refused while the workload still runs untouched. The
 * source describes what the container needs (HostNeeds); the target
 * compares it with what it has and lists every problem it finds.
 */
import { z } from 'zod';
import { fileMismatch } from '../image/file-identity.js';
import { FileIdentity } from '../image/fields.js';
import { hostFacts } from '../image/format.js';
import { cpuProfile, memoryAvailable } from '../native/host.js';
import { addressConflicts, containerAddresses } from '../container/network.js';

export const HostNeeds = z.strictObject({
  kernel: z.string(),
  kernelBuild: z.string(),
  arch: z.string(),
  isa: z.array(z.string()),
  minSigStackSize: z.number().int().nonnegative(),
  /** Bytes the container's memory takes now: the image and the restored copy each need about this much. */
  memoryBytes: z.number().int().nonnegative(),
  /** Files its processes map or run from, which the image refers to instead of carrying. */
  files: z.array(FileIdentity),
  container: z.string(),
  /** Its addresses ("address/prefix"), which must be free on the target, which must have a bridge; absent when it has none. */
  addresses: z.array(z.string()).optional(),
});
export type HostNeeds = z.infer<typeof HostNeeds>;

/** This host as a migration source: what a target must offer. */
export function describeNeeds(container: string, memoryBytes: number, files: FileIdentity[]): HostNeeds {
  const facts = hostFacts();
  const cpu = cpuProfile();
  const addresses = containerAddresses(container);
  return { kernel: facts.kernel, kernelBuild: facts.kernelBuild, arch: facts.arch, isa: cpu.isa, minSigStackSize: cpu.minSigStackSize, memoryBytes, files, container, ...(addresses.length ? { addresses } : {}) };
}

export interface TargetOptions {
  /** Memory this host keeps for itself: a migration that would leave less is refused. */
  memoryReserveBytes: number;
  /** Whether a container of that name already runs here. */
  containerRunning(name: string): boolean;
}

/** Everything that stops this host from taking the container, in words an operator can act on; empty when it can. */
export function checkTarget(needs: HostNeeds, host: string, opts: TargetOptions): string[] {
  const problems: string[] = [];
  const facts = hostFacts();
  if (needs.arch !== facts.arch) problems.push(`${host} is ${facts.arch}; the container runs on ${needs.arch}`);
  // The restored processes call into the vdso at the offsets of the kernel they were frozen on.
  if (needs.kernel !== facts.kernel || needs.kernelBuild !== facts.kernelBuild) {
    problems.push(`${host} runs kernel ${facts.kernel} (${facts.kernelBuild}); the container runs on ${needs.kernel} (${needs.kernelBuild}), and its processes need the very same build`);
  }
  const cpu = cpuProfile();
  const missing = needs.isa.filter((f) => !cpu.isa.includes(f));
  if (missing.length) problems.push(`${host}'s CPU lacks ${missing.join(', ')}, which the container's programs may already use`);
  if (cpu.minSigStackSize !== needs.minSigStackSize) {
    problems.push(`${host}'s CPU saves ${cpu.minSigStackSize}-byte signal frames, the source ${needs.minSigStackSize}: the XSAVE layouts differ`);
  }
  for (const f of needs.files) {
    const why = fileMismatch(f);
    if (why) problems.push(`${host}: ${why}`);
  }
  // The image lands in memory first, then in the restored processes.
  const needed = 2 * needs.memoryBytes;
  const available = memoryAvailable() - opts.memoryReserveBytes;
  if (needed > available) {
    problems.push(`${host} has no room: the container needs about ${mib(needed)} while it is restored, and ${host} has ${mib(Math.max(0, available))} to spare (${mib(memoryAvailable())} available, ${mib(opts.memoryReserveBytes)} kept in reserve)`);
  }
  if (opts.containerRunning(needs.container)) problems.push(`a container named "${needs.container}" already runs on ${host}`);
  problems.push(...addressConflicts(needs, host));
  return problems;
}

function mib(bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}
