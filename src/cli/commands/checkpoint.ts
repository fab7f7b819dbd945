import path from 'node:path';
import type { Command } from 'commander';
import type { CheckpointSummary } from '../../source/checkpoint.js';
import { parsePid, withTracer } from '../engine.js';
import { formatFields, printResult } from '../output.js';

const CHECKPOINT = new URL('../../source/checkpoint.js', import.meta.url);

interface CheckpointOptions {
  dir: string;
  leaveRunning?: boolean;
  tree?: boolean;
}

export function register(program: Command): void {
  program
    .command('checkpoint')
    .description('checkpoint a process into an image directory, then end it')
    .argument('<pid>', 'the process to checkpoint', parsePid)
    .requiredOption('-D, --dir <dir>', 'where to write the image: a new or empty directory')
    .option('--leave-running', 'let the process go on running after the checkpoint instead of ending it')
    .option('--tree', 'take the process with all its descendants (without it, a process with children is refused)')
    .addHelpText(
      'after',
      '\nBefore it touches the process, the checkpoint looks for state Ferry cannot migrate;' +
        '\nif there is any, it exits 4, lists all of it, and leaves the process as it was.',
    )
    .action(async (pid: number, options: CheckpointOptions) => {
      const dir = path.resolve(options.dir);
      const summary = await withTracer(CHECKPOINT, (tracer) =>
        tracer.call<CheckpointSummary>('checkpoint', pid, dir, { leaveRunning: options.leaveRunning === true, tree: options.tree === true }),
      );
      printResult(summary, renderSummary);
    });
}

function renderSummary(s: CheckpointSummary): string {
  const fate = s.leftRunning ? 'it is still running' : 'it has been ended';
  const fields: Array<[string, string]> = [
    ...(s.pids.length > 1 ? [['processes', s.pids.join(' ')] as [string, string]] : []),
    ['pages', `${s.pages} (${s.dataPages} with data, ${s.zeroPages} zero)`],
    ['bytes', `${s.bytes} (${(s.bytes / 1048576).toFixed(1)} MiB of page data)`],
    ['entries', String(s.entries)],
    ['frozen', `${s.frozenMs.toFixed(1)} ms`],
    ['total', `${s.totalMs.toFixed(1)} ms`],
  ];
  const what = s.pids.length > 1 ? `the tree of pid ${s.pid} (${s.pids.length} processes)` : `pid ${s.pid}`;
  return `checkpointed ${what} into ${s.dir}; ${s.pids.length > 1 ? fate.replace('it is', 'they are').replace('it has', 'they have') : fate}\n${formatFields(fields)}`;
}
