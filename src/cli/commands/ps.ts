import type { Command } from 'commander';
import { readInventory } from '../../cluster/inventory.js';
import { listContainers, type ContainerSummary } from '../../container/runtime.js';
import { PsReply, PsRequest } from '../../coordinator/messages.js';
import { askAll } from '../cluster.js';
import { formatTable, printResult } from '../output.js';

type Listed = ContainerSummary & { host: string | null };

export function register(program: Command): void {
  program
    .command('ps')
    .description('list containers on every host of the inventory (or this machine): name, host, pid, state, memory, uptime')
    .option('--local', "only this machine's containers, from its state directory, without asking any agent")
    .action(async (options: { local?: boolean }) => {
      const inventory = options.local ? null : readInventory();
      if (!inventory || Object.keys(inventory.hosts).length === 0) {
        const containers: Listed[] = listContainers().map((c) => ({ ...c, host: null }));
        printResult({ containers, unreachable: [] }, (r) => render(r.containers, []));
        return;
      }
      const answers = await askAll(inventory, (ch) => ch.request(PsRequest.make({}), PsReply));
      const containers = answers.flatMap((a) => ('result' in a ? (a.result.containers as unknown as ContainerSummary[]).map((c) => ({ ...c, host: a.host })) : []));
      const unreachable = answers.filter((a): a is { host: string; error: string } => 'error' in a);
      printResult({ containers, unreachable }, (r) => render(r.containers, r.unreachable));
    });
}

function render(containers: Listed[], unreachable: Array<{ host: string; error: string }>): string {
  const note = unreachable.length ? `

no answer from: ${unreachable.map((u) => `${u.host} (${u.error})`).join('; ')}` : '';
  if (containers.length === 0) return `no containers${note}`;
  const hosts = containers.some((c) => c.host !== null);
  const rows = containers.map((c) => [
    ...(hosts ? [c.host ?? '-'] : []),
    c.name,
    String(c.pid),
    c.state,
    c.memoryBytes === null ? '-' : formatBytes(c.memoryBytes),
    c.uptimeSeconds === null ? '-' : formatDuration(c.uptimeSeconds),
    c.command.join(' '),
  ]);
  return formatTable([...(hosts ? ['HOST'] : []), 'NAME', 'PID', 'STATE', 'MEMORY', 'UPTIME', 'COMMAND'], rows) + note;
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
