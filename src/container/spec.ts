/** What `migrate run` asks for, and the rules its inputs must follow. */
import { z } from 'zod';
import { HOSTNAME_MAX } from '../native/namespaces.js';
import { parseAddress, parseGateway, validateNetworkSpec, type NetworkSpec } from './network.js';

export interface ContainerSpec {
  name: string;
  /** The program and its arguments, run as the container's pid 1. */
  command: string[];
  hostname: string;
  /** Variables given with --env; they override the defaults (PATH, HOME, HOSTNAME). */
  env: Record<string, string>;
  /** The init's working directory, inside the container. */
  cwd: string;
  memoryBytes: number | null;
  cpus: number | null;
  /** A directory to use as the container's root; null shares the host's root, read-only. */
  rootfs: string | null;
  /**
   * Its addresses and gateways (--ip, --gateway): an eth0 on this host's
   * bridge (FERRY_BRIDGE). Absent: its loopback only. Left out rather than
   * empty, so a spec without addresses is one an older agent still takes.
   */
  network?: NetworkSpec;
}

/** Also what a container's directory and cgroup are called, so it stays a single safe path component. */
const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function validateName(name: string): string {
  if (!NAME.test(name)) {
    throw new RangeError(`invalid container name "${name}": 1 to 63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit`);
  }
  return name;
}

export function validateHostname(hostname: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(hostname) || hostname.length > HOSTNAME_MAX) {
    throw new RangeError(`invalid hostname "${hostname}": 1 to ${HOSTNAME_MAX} characters of letters, digits, '_', '.' and '-'`);
  }
  return hostname;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
/** Below this a limit is almost surely a unit left off ("--memory 512"), and the init would be OOM-killed at once. */
const MIN_MEMORY = 1024 ** 2;

/** "512m", "1g", "1.5GiB", "1048576": binary units, as docker and the kernel's own files use them. */
export function parseMemory(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const bytes = m ? Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!Number.isFinite(bytes)) throw new RangeError(`invalid memory size "${text}": a number with an optional unit k, m, g or t (e.g. 512m)`);
  if (bytes < MIN_MEMORY) throw new RangeError(`memory limit "${text}" is below 1 MiB; did you leave off the unit (512m)?`);
  return bytes;
}

/** A number of CPUs' worth of time, e.g. 0.5 or 2. */
export function parseCpus(text: string): number {
  const cpus = /^\d+(?:\.\d+)?$/.test(text.trim()) ? Number(text) : NaN;
  if (!(cpus >= 0.01)) throw new RangeError(`invalid CPU count "${text}": a number of CPUs, at least 0.01 (e.g. 0.5 or 2)`);
  return cpus;
}

export function parseEnv(text: string): [string, string] {
  const eq = text.indexOf('=');
  const key = eq < 0 ? text : text.slice(0, eq);
  if (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new RangeError(`invalid environment variable "${text}": expected NAME=value`);
  return [key, text.slice(eq + 1)];
}

export function validateCwd(dir: string): string {
  if (!dir.startsWith('/')) throw new RangeError(`invalid working directory "${dir}": it is a path inside the container, so it must be absolute`);
  return dir;
}

/** A spec that arrived over the network (`migrate run --host`): checked by the same rules as the CLI's arguments. */
export const ContainerSpecSchema = z.strictObject({
  name: z.string().refine(ok(validateName), 'a container name: 1-63 characters of a-z, 0-9, _ . -'),
  command: z.array(z.string()).min(1),
  hostname: z.string().refine(ok(validateHostname), 'a hostname of letters, digits, _ . -'),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()),
  cwd: z.string().refine(ok(validateCwd), 'an absolute path'),
  memoryBytes: z.number().int().min(MIN_MEMORY).nullable(),
  cpus: z.number().min(0.01).nullable(),
  rootfs: z.string().startsWith('/').nullable(),
  network: z
    .strictObject({
      addresses: z.array(z.string().refine((a) => ok(parseAddress)(a) && parseAddress(a) === a, 'an address/prefix in canonical form')).min(1),
      gateways: z.array(z.string().refine((g) => ok(parseGateway)(g) && parseGateway(g) === g, 'a gateway address in canonical form')),
    })
    .refine(ok(validateNetworkSpec), 'distinct addresses, and at most one gateway per family on their link')
    .optional(),
});

function ok<T>(validate: (value: T) => unknown): (value: T) => boolean {
  return (value) => {
    try {
      validate(value);
      return true;
    } catch {
      return false;
    }
  };
}
