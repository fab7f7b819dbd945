import type { Command } from 'commander';
import { inspectProcess } from '../../source/checkpoint.js';
import type { Refusal } from '../../source/refusal.js';
import { parsePid } from '../engine.js';
import { ExitCode } from '../exit-codes.js';
import { formatTable, printResult } from '../output.js';

interface InspectReport {
  pid: number;
  /** Nothing was found that would make `migrate checkpoint` refuse. */
  checkpointable: boolean;
  refusals: Refusal[];
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('say whether a process can be checkpointed, and if not, why')
    .argument('<pid>', 'the process to look at', parsePid)
    .option('--tree', 'look at the process with all its descendants, as `checkpoint --tree` would take them')
    .addHelpText('after', '\nExits 0 when `migrate checkpoint` would go ahead, 4 when it would refuse.')
    .action((pid: number, options: { tree?: boolean }) => {
      // Reads /proc only (no ptrace), so it runs here rather than in a tracer thread.
      const refusals = inspectProcess(pid, { tree: options.tree === true });
      const report: InspectReport = { pid, checkpointable: refusals.length === 0, refusals };
      printResult(report, renderReport);
      if (!report.checkpointable) process.exitCode = ExitCode.Refused;
    });
}

function renderReport(report: InspectReport): string {
  if (report.checkpointable) return `pid ${report.pid} can be checkpointed`;
  const count = report.refusals.length;
  const rows = report.refusals.map((r) => [String(r.pid), r.resource, r.reason]);
  return `${formatTable(['pid', 'resource', 'reason'], rows)}\n\npid ${report.pid} cannot be checkpointed: ${count} thing${count === 1 ? '' : 's'} Ferry cannot migrate`;
}
