import path from 'node:path';
import type { Command } from 'commander';
import type { CheckpointSummary } from '../../source/checkpoint.js';
import { parsePid, withTracer } from '../engine.js';
import { formatFields, printResult } from '../output.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { recordCheckpointed } from '../../container/runtime.js';
import { containerStatus, readState, type ContainerState } from '../../container/state.js';
import { validateName } from '../../container/spec.js';

const CHECKPOINT = new URL('../../source/checkpoint.js', import.meta.url);

interface CheckpointOptions {
  dir: string;
  leaveRunning?: boolean;
  tree?: boolean;
  tcpEstablished?: boolean;
}

export function register(program: Command): void {
  program
    .command('checkpoint')
    .description('checkpoint a process, a process tree or a container into an image directory, then end it')
    .argument('<target>', 'the process (a pid) or the container (a name, as `migrate run` gave it) to checkpoint')
    .requiredOption('-D, --dir <dir>', 'where to write the image: a new or empty directory')
    .option('--leave-running', 'let the process go on running after the checkpoint instead of ending it')
    .option('--tree', 'take the process with all its descendants (without it, a process with children is refused)')
    .option(
      '--tcp-established',
      "take its TCP sockets (connections and listeners): their traffic is held with nftables in the process's network namespace from the freeze until `migrate restore` has them back (a container's are always taken)",
    )
    .addHelpText(
      'after',
      '\nBefore it touches the process, the checkpoint looks for state Ferry cannot migrate;' +
        '\nif there is any, it exits 4, lists all of it, and leaves the process as it was.',
    )
    .action(async (target: string, options: CheckpointOptions) => {
      const dir = path.resolve(options.dir);
      const container = /^\d+$/.test(target) ? null : runningContainer(target);
      const pid = container ? container.pid : parsePid(target);
      const summary = await withTracer(CHECKPOINT, (tracer) =>
        tracer.call<CheckpointSummary>('checkpoint', pid, dir, {
          leaveRunning: options.leaveRunning === true,
          tree: options.tree === true,
          tcpEstablished: options.tcpEstablished === true,
          ...(container ? { container } : {}),
        }),
      );
      if (container && !summary.leftRunning) recordCheckpointed(container);
      printResult(summary, (s) => renderSummary(s, container?.name));
    });
}

/** The container named, which must be running: a checkpoint takes a live container. */
function runningContainer(name: string): ContainerState {
  const state = readState(validateName(name));
  if (!state) throw new CliError(`no container named "${name}" (a process is named by its pid)`, ExitCode.Failed);
  if (containerStatus(state) === 'exited') throw new CliError(`container "${name}" is not running`, ExitCode.Failed);
  return state;
}

function renderSummary(s: CheckpointSummary, container?: string): string {
  const fate = s.leftRunning ? 'it is still running' : 'it has been ended';
  const fields: Array<[string, string]> = [
    ...(s.pids.length > 1 ? [['processes', s.pids.join(' ')] as [string, string]] : []),
    ['pages', `${s.pages} (${s.dataPages} with data, ${s.zeroPages} zero)`],
    ['bytes', `${s.bytes} (${(s.bytes / 1048576).toFixed(1)} MiB of page data)`],
    ['entries', String(s.entries)],
    ...(s.tcp?.sockets ? [['tcp', `${s.tcp.sockets} socket${s.tcp.sockets === 1 ? '' : 's'}${s.tcp.locks.length ? `; held by nftables table${s.tcp.locks.length > 1 ? 's' : ''} ${s.tcp.locks.map((l) => l.table).join(', ')} until restored` : ''}`] as [string, string]] : []),
    ['frozen', `${s.frozenMs.toFixed(1)} ms`],
    ['total', `${s.totalMs.toFixed(1)} ms`],
  ];
  const what = container ? `container ${container} (${s.pids.length} process${s.pids.length > 1 ? 'es' : ''})` : s.pids.length > 1 ? `the tree of pid ${s.pid} (${s.pids.length} processes)` : `pid ${s.pid}`;
  return `checkpointed ${what} into ${s.dir}; ${s.pids.length > 1 ? fate.replace('it is', 'they are').replace('it has', 'they have') : fate}\n${formatFields(fields)}`;
}
