/**
 * What this host offers Ferry: kernel version, architecture, privileges,
 * ptrace policy, cgroup freezers, userfaultfd. Read from /proc, /sys and
 * uname; nothing here changes the host.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { machine, release } from 'node:os';
import { delimiter, join } from 'node:path';

export interface KernelVersion {
  major: number;
  minor: number;
  patch: number;
}

/** `uname -r`, e.g. "6.18.44-fc-v769". */
export function kernelRelease(): string {
  return release();
}

/** The numeric part of the kernel release; distribution suffixes are ignored. */
export function kernelVersion(): KernelVersion {
  const releaseText = kernelRelease();
  const match = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(releaseText);
  if (!match) throw new Error(`cannot parse kernel release "${releaseText}"`);
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3] ?? 0) };
}

export function kernelVersionAtLeast(major: number, minor: number): boolean {
  const running = kernelVersion();
  return running.major > major || (running.major === major && running.minor >= minor);
}

/** `uname -m`, e.g. "x86_64". */
export function machineArchitecture(): string {
  return machine();
}

export function effectiveUid(): number {
  // Always defined on Linux; the optional type only exists for Windows.
  return process.geteuid!();
}

/** Capability names by bit number, as in <linux/capability.h>. */
const CAPABILITY_NAMES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID',
  'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/**
 * The capabilities in this process's effective set, by name. Bits newer than
 * this table appear as "CAP_<bit>" so they are never silently dropped.
 */
export function effectiveCapabilities(): Set<string> {
  const hexMask = procStatusField('CapEff');
  const mask = BigInt(`0x${hexMask}`);
  const names = new Set<string>();
  for (let bit = 0; mask >> BigInt(bit) !== 0n; bit++) {
    if ((mask >> BigInt(bit)) & 1n) names.add(CAPABILITY_NAMES[bit] ?? `CAP_${bit}`);
  }
  return names;
}

function procStatusField(field: string): string {
  const status = readFileSync('/proc/self/status', 'utf8');
  const line = status.split('\n').find((candidate) => candidate.startsWith(`${field}:`));
  if (line === undefined) throw new Error(`/proc/self/status has no ${field} line`);
  return line.slice(field.length + 1).trim();
}

/**
 * Yama's kernel.yama.ptrace_scope: 0 classic, 1 restricted to descendants,
 * 2 CAP_SYS_PTRACE only, 3 no attach at all. null when Yama is not built in,
 * which means classic ptrace rules.
 */
export function ptraceScope(): number | null {
  return readNumberIfPresent('/proc/sys/kernel/yama/ptrace_scope');
}

/** kernel.pid_max: restored processes keep their pids, so the target's limit must cover them. */
export function pidMax(): number {
  const value = readNumberIfPresent('/proc/sys/kernel/pid_max');
  if (value === null) throw new Error('/proc/sys/kernel/pid_max is missing');
  return value;
}

function readNumberIfPresent(path: string): number | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  return Number.parseInt(text.trim(), 10);
}

export interface CgroupFreezers {
  /** Mount point of the cgroup v1 hierarchy that carries the freezer controller. */
  v1: string | null;
  /** Mount point of the cgroup2 hierarchy, whose non-root groups have cgroup.freeze. */
  v2: string | null;
}

export function cgroupFreezers(): CgroupFreezers {
  let v1: string | null = null;
  let v2: string | null = null;
  for (const mount of mounts()) {
    if (v1 === null && mount.fsType === 'cgroup' && mount.superOptions.includes('freezer')) {
      v1 = mount.mountPoint;
    }
    // cgroup.freeze is a core cgroup2 file since 5.2 (not a controller), and
    // exists in every group but the root, so a cgroup2 mount on a new enough
    // kernel is enough: the root group itself offers nothing to look at.
    if (v2 === null && mount.fsType === 'cgroup2' && kernelVersionAtLeast(5, 2)) {
      v2 = mount.mountPoint;
    }
  }
  return { v1, v2 };
}

interface Mount {
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** This mount namespace's mounts, from /proc/self/mountinfo (see proc(5)). */
function mounts(): Mount[] {
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  return mountinfo
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => {
      const [mountFields, fsFields] = line.split(' - ');
      const mountPoint = mountFields!.split(' ')[4]!;
      const [fsType, , superOptions] = fsFields!.split(' ');
      return {
        mountPoint: unescapeMountField(mountPoint),
        fsType: fsType!,
        superOptions: (superOptions ?? '').split(','),
      };
    });
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/**
 * Whether the kernel has userfaultfd (CONFIG_USERFAULTFD). Either the
 * /dev/userfaultfd device (5.11+) or the vm.unprivileged_userfaultfd sysctl
 * exists exactly when it is built in.
 */
export function hasUserfaultfd(): boolean {
  return existsSync('/dev/userfaultfd') || existsSync('/proc/sys/vm/unprivileged_userfaultfd');
}

/** Full path of an executable found on PATH, like `command -v`, or null. */
export function findExecutable(name: string): string | null {
  for (const directory of (process.env['PATH'] ?? '').split(delimiter)) {
    if (directory === '') continue;
    const candidate = join(directory, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Absent or not executable here; keep looking.
    }
  }
  return null;
}

/** What restored code may rely on from the CPU: the instruction sets it may have probed, and the size of the signal frame (the XSAVE layout). */
export interface CpuProfile {
  /** ISA flags from /proc/cpuinfo that user code detects and then uses without asking again. */
  isa: string[];
  /** AT_MINSIGSTKSZ: the kernel's signal frame size, which grows with every XSAVE feature enabled. */
  minSigStackSize: number;
}

/** Flags whose instructions a program may have chosen (glibc ifuncs, JITs) before the migration. */
const ISA_FLAG = /^(sse\d?|ssse3|sse4_[12]|sse4a|avx.*|fma4?|f16c|bmi[12]|adx|aes|vaes|sha_ni|pclmulqdq|vpclmulqdq|gfni|popcnt|abm|lzcnt|movbe|rdrand|rdseed|xsave.*|xgetbv1|fsgsbase|rdpid|clflushopt|clwb|erms|fsrm|amx.*|avx512.*|pku|ospke|cx16|rtm|hle|movdiri|movdir64b|serialize|waitpkg)$/;

const AT_MINSIGSTKSZ = 51;

export function cpuProfile(): CpuProfile {
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/) ?? [];
  const auxv = readFileSync('/proc/self/auxv');
  let minSigStackSize = 0;
  for (let at = 0; at + 16 <= auxv.length; at += 16) {
    if (auxv.readBigUInt64LE(at) === BigInt(AT_MINSIGSTKSZ)) minSigStackSize = Number(auxv.readBigUInt64LE(at + 8));
  }
  return { isa: flags.filter((f) => ISA_FLAG.test(f)).sort(), minSigStackSize };
}

/** MemAvailable from /proc/meminfo, in bytes: what can be allocated without swapping. */
export function memoryAvailable(): number {
  const kib = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  if (kib === undefined) throw new Error('/proc/meminfo has no MemAvailable line');
  return Number(kib) * 1024;
}
