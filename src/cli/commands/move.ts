import type { Command } from 'commander';
import { validateName } from '../../container/spec.js';
import { CancelReply, CancelRequest, Finished, MigrateRequest, MigrationStarted, Progress, PsReply, PsRequest, type MigrationReport } from '../../coordinator/messages.js';
import type { Channel } from '../../transport/index.js';
import { askAll, connectHost, hostAddress, requireInventory } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatFields, formatTable, isJsonOutput, printResult } from '../output.js';
import { usage } from './run.js';

interface MoveOptions {
  to: string;
  from?: string;
}

export function register(program: Command): void {
  program
    .command('move')
    .description('migrate a running container to another host (also: migrate <container> --to <host>)')
    .argument('<container>', 'the container, by name', usage(validateName))
    .requiredOption('--to <host>', 'the host to move it to, by its inventory name')
    .option('--from <host>', 'the host it runs on (default: found by asking every host)')
    .addHelpText(
      'after',
      '\nThe source agent checks the target first (kernel, CPU, files, memory, name), then' +
        '\nfreezes the container, streams its image into the target, restores it there frozen,' +
        '\nkills the source copy and resumes the target copy. Any failure before that point' +
        '\nrolls back: the container thaws and runs on where it was (exit 5). The migration' +
        '\nbelongs to the source agent: if this command dies, it goes on, and' +
        '\n`migrate status <id>` tells how it ended. Ctrl-C asks for a rollback.',
    )
    .action(async (container: string, options: MoveOptions) => {
      const inventory = requireInventory();
      const to = { host: options.to, address: hostAddress(inventory, options.to) };
      const from = options.from ?? (await findContainer(inventory, container));
      if (from === to.host) throw new CliError(`container "${container}" already runs on ${from}`, ExitCode.Usage);
      const channel = await connectHost(inventory, from);
      try {
        const report = await follow(channel, container, to, from);
        printResult(report, render);
        if (report.outcome !== 'done') process.exitCode = ExitCode.RolledBack;
      } finally {
        await channel.close();
      }
    });
}

/** The host whose agent runs `container`, asking every host in the inventory. */
async function findContainer(inventory: Parameters<typeof askAll>[0], container: string): Promise<string> {
  const answers = await askAll(inventory, (ch) => ch.request(PsRequest.make({}), PsReply));
  const running = answers.filter((a) => 'result' in a && a.result.containers.some((c) => c['name'] === container && c['state'] === 'running')).map((a) => a.host);
  if (running.length === 1) return running[0]!;
  if (running.length > 1) throw new CliError(`container "${container}" runs on ${running.join(' and ')}; say which with --from`, ExitCode.Usage);
  const down = answers.filter((a) => 'error' in a).map((a) => `${a.host} (${'error' in a ? a.error : ''})`);
  throw new CliError(`no container named "${container}" runs on any host${down.length ? `; no answer from ${down.join(', ')}` : ''}`, ExitCode.Failed);
}

/** Starts the migration on the source agent and follows it to its end. */
export async function follow(channel: Channel, container: string, to: { host: string; address: string }, from: string): Promise<MigrationReport> {
  let id = '';
  const finished = new Promise<MigrationReport>((resolve, reject) => {
    channel.on(Finished, ({ report }) => {
      if (report['id'] === id) resolve(report as unknown as MigrationReport);
    });
    void channel.closed.then((why) =>
      reject(new CliError(`lost the connection to ${from}${id ? ` during migration ${id}` : ''} (${why?.message ?? 'closed'}); the migration goes on there: \`migrate status ${id}\` tells how it ends`)),
    );
  });
  finished.catch(() => {});
  const live = !isJsonOutput() && process.stderr.isTTY;
  channel.on(Progress, ({ phase }) => {
    if (live) process.stderr.write(`  ${phase}\n`);
  });
  ({ id } = await channel.request(MigrateRequest.make({ container, to }), MigrationStarted));
  if (!isJsonOutput()) process.stderr.write(`migration ${id}: ${container} from ${from} to ${to.host}\n`);
  const onInterrupt = () => {
    process.stderr.write(`migrate: asking ${from} to roll migration ${id} back\n`);
    channel.request(CancelRequest.make({ id }), CancelReply).catch((e: unknown) => process.stderr.write(`migrate: ${e instanceof Error ? e.message : String(e)}\n`));
  };
  process.on('SIGINT', onInterrupt);
  try {
    return await finished;
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

export function render(r: MigrationReport): string {
  if (r.outcome !== 'done') return `migration ${r.id} of ${r.container} from ${r.from} to ${r.to} was rolled back; it runs on ${r.from}\nreason: ${r.error}`;
  const mib = (r.bytes ?? 0) / (1 << 20);
  const head = `moved ${r.container} from ${r.from} to ${r.to} (migration ${r.id})\n${formatFields([
    ['downtime', `${(r.frozenMs ?? 0).toFixed(0)} ms frozen`],
    ['total', `${r.totalMs.toFixed(0)} ms`],
    ['memory', `${mib.toFixed(1)} MiB of data in ${r.pages} pages (${r.zeroPages} zero pages sent as counts)`],
    ['processes', (r.pids ?? []).join(' ')],
  ])}`;
  return `${head}\n\n${formatTable(['PHASE', 'MS'], r.phases.map((p) => [p.phase, p.ms.toFixed(1)]))}`;
}
