import fs from 'node:fs';
import os from 'node:os';

/** Filesystem magic numbers (statfs f_type) worth naming in a results table. */
const FS_TYPES: Record<number, string> = {
  0x01021994: 'tmpfs',
  0xef53: 'ext4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x794c7630: 'overlayfs',
  0x65735546: 'fuse',
  0x6969: 'nfs',
};

export function filesystemOf(dir: string): string {
  try {
    const type = fs.statfsSync(dir).type;
    return FS_TYPES[type] ?? `fs 0x${type.toString(16)}`;
  } catch {
    return 'unknown fs';
  }
}

/** The selected transparent-huge-page mode: it decides how fast first-touch faults are, which restore pays for every page. */
function thpMode(): string {
  try {
    const text = fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    return /\[(\w+)\]/.exec(text)?.[1] ?? 'unknown';
  } catch {
    return 'unavailable';
  }
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  thp: string;
  /** 1-minute load average when the benchmark started: other work on the machine shows up as noise, mostly in the p99 columns. */
  load: number;
  date: string;
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() || 'unknown CPU',
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.release()} ${os.machine()}`,
    node: process.version,
    thp: thpMode(),
    load: os.loadavg()[0]!,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

export function machineLine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}, THP ${m.thp}; run ${m.date}, load average ${m.load.toFixed(2)} at the start`;
}
