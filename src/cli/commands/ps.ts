import type { Command } from 'commander';
import { listContainers, type ContainerSummary } from '../../container/runtime.js';
import { formatTable, printResult } from '../output.js';

export function register(program: Command): void {
  program
    .command('ps')
    .description('list containers: name, root pid, state (running, frozen, exited), memory, uptime')
    .action(() => {
      const containers = listContainers();
      printResult({ containers }, (r) => render(r.containers));
    });
}

function render(containers: ContainerSummary[]): string {
  if (containers.length === 0) return 'no containers';
  const rows = containers.map((c) => [
    c.name,
    String(c.pid),
    c.state,
    c.memoryBytes === null ? '-' : formatBytes(c.memoryBytes),
    c.uptimeSeconds === null ? '-' : formatDuration(c.uptimeSeconds),
    c.command.join(' '),
  ]);
  return formatTable(['NAME', 'PID', 'STATE', 'MEMORY', 'UPTIME', 'COMMAND'], rows);
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** 42s, 3m05s, 2h07m, 4d03h: the two largest units. */
function formatDuration(seconds: number): string {
  const units: Array<[string, number]> = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  const i = Math.max(0, units.findIndex(([, size]) => seconds >= size));
  const [bigName, bigSize] = units[i]!;
  const big = Math.floor(seconds / bigSize);
  if (i === units.length - 1) return `${big}${bigName}`;
  const [smallName, smallSize] = units[i + 1]!;
  const small = Math.floor((seconds % bigSize) / smallSize);
  return `${big}${bigName}${String(small).padStart(2, '0')}${smallName}`;
}
