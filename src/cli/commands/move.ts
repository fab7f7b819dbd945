import { InvalidArgumentError, type Command } from 'commander';
import { validateName } from '../../container/spec.js';
import {
  CancelReply,
  CancelRequest,
  DEFAULT_MIGRATION_OPTIONS,
  Finished,
  MigrateRequest,
  MigrationStarted,
  Progress,
  PsReply,
  PsRequest,
  type MigrationOptions,
  type MigrationReport,
  type RoundEvent,
} from '../../coordinator/messages.js';
import type { Channel } from '../../transport/index.js';
import { askAll, connectHost, hostAddress, requireInventory } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatFields, formatTable, isJsonOutput, printResult } from '../output.js';
import { usage } from './run.js';

interface MoveOptions {
  to: string;
  from?: string;
  cold?: boolean;
  maxDowntime: number;
  maxRounds: number;
  minRounds: number;
  throttle: boolean;
  strictDowntime?: boolean;
}

function positiveInt(what: string, max: number): (text: string) => number {
  return (text) => {
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(n >= 1 && n <= max)) throw new InvalidArgumentError(`${what}: a whole number from 1 to ${max}`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command('move')
    .description('migrate a running container to another host (also: migrate <container> --to <host>)')
    .argument('<container>', 'the container, by name', usage(validateName))
    .requiredOption('--to <host>', 'the host to move it to, by its inventory name')
    .option('--from <host>', 'the host it runs on (default: found by asking every host)')
    .option('--max-downtime <ms>', 'the downtime budget: freeze when the rest can cross in this long', positiveInt('--max-downtime', 3_600_000), DEFAULT_MIGRATION_OPTIONS.maxDowntimeMs)
    .option('--max-rounds <n>', 'pre-copy rounds at most before the freeze', positiveInt('--max-rounds', 1000), DEFAULT_MIGRATION_OPTIONS.maxRounds)
    .option('--min-rounds <n>', 'pre-copy rounds at least, whatever the predictions say', positiveInt('--min-rounds', 1000), DEFAULT_MIGRATION_OPTIONS.minRounds)
    .option('--no-throttle', 'never slow the container down to make pre-copy converge')
    .option('--strict-downtime', 'roll back rather than freeze over the budget')
    .option('--cold', 'no pre-copy: freeze first, then copy everything')
    .addHelpText(
      'after',
      '\nThe source agent checks the target first (kernel, CPU, files, memory, name, address).' +
        '\nThen, live: round 0 copies the memory while the container runs, each later round' +
        '\nwhat it wrote meanwhile, until the rest fits the downtime budget at the measured' +
        '\nbandwidth, the dirty set stops shrinking (the container is first slowed through its' +
        '\ncgroup, unless --no-throttle), or --max-rounds. Then it freezes the container, sends' +
        '\nthe last pages and the other state, has the target restore it frozen, kills the' +
        '\nsource copy and resumes the target copy. Any failure before that point rolls back:' +
        '\nthe container runs on where it was (exit 5). The migration belongs to the source' +
        '\nagent: if this command dies it goes on, and `migrate status <id>` tells how it ended.' +
        '\nCtrl-C asks for a rollback. With --json, each round is one JSON line, and the report' +
        '\nis the last line.',
    )
    .action(async (container: string, options: MoveOptions) => {
      const inventory = requireInventory();
      const to = { host: options.to, address: hostAddress(inventory, options.to) };
      const from = options.from ?? (await findContainer(inventory, container));
      if (from === to.host) throw new CliError(`container "${container}" already runs on ${from}`, ExitCode.Usage);
      const channel = await connectHost(inventory, from);
      try {
        const report = await follow(channel, container, to, from, {
          live: !options.cold,
          maxDowntimeMs: options.maxDowntime,
          maxRounds: options.maxRounds,
          minRounds: Math.min(options.minRounds, options.maxRounds),
          throttle: options.throttle,
          strictDowntime: options.strictDowntime === true,
        });
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
export async function follow(channel: Channel, container: string, to: { host: string; address: string }, from: string, options: MigrationOptions = DEFAULT_MIGRATION_OPTIONS): Promise<MigrationReport> {
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
  const tty = !isJsonOutput() && process.stderr.isTTY;
  channel.on(Progress, (event) => {
    if (isJsonOutput()) {
      if (event.round) process.stdout.write(`${JSON.stringify({ event: 'round', id: event.id, ...event.round })}\n`);
      return;
    }
    if (event.note) process.stderr.write(`  ${event.note}\n`);
    if (event.round) process.stderr.write(`  ${roundLine(event.round)}\n`);
    else if (tty) process.stderr.write(`  ${event.phase}\n`);
  });
  ({ id } = await channel.request(MigrateRequest.make({ container, to, options }), MigrationStarted));
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

/** One line per pre-copy round: what it sent, what was written meanwhile, and what a freeze would cost now. */
function roundLine(r: RoundEvent): string {
  const mib = (r.bytes / (1 << 20)).toFixed(1);
  const throttle = r.cpuFraction === null ? '' : `, CPU ${Math.round(r.cpuFraction * 100)}%`;
  return `round ${r.round}: ${r.pages} pages (${mib} MiB) in ${r.ms.toFixed(0)} ms at ${r.bandwidth.toFixed(0)} MB/s; written meanwhile ${r.dirtiedPages} pages (${r.dirtyRate.toFixed(0)} MB/s); freeze now ≈ ${r.predictedDowntimeMs.toFixed(0)} ms${throttle} → ${r.decision}`;
}

export function render(r: MigrationReport): string {
  if (r.outcome !== 'done') return `migration ${r.id} of ${r.container} from ${r.from} to ${r.to} was rolled back; it runs on ${r.from}\nreason: ${r.error}`;
  const mib = (r.bytes ?? 0) / (1 << 20);
  const live = r.live
    ? [
        ['pre-copy', `${r.live.rounds.length} rounds (${r.live.method}); ${r.live.precopiedPages} pages were already there at the freeze${r.live.throttled ? '; the container was throttled' : ''}`] as [string, string],
        ['budget', r.live.fits === false ? `${r.live.budgetMs} ms: missed` : `${r.live.budgetMs} ms`] as [string, string],
      ]
    : [['pre-copy', 'none (cold)'] as [string, string]];
  const head = `moved ${r.container} from ${r.from} to ${r.to} (migration ${r.id})\n${formatFields([
    ['downtime', `${(r.frozenMs ?? 0).toFixed(0)} ms frozen`],
    ...live,
    ['total', `${r.totalMs.toFixed(0)} ms`],
    ['memory', `${mib.toFixed(1)} MiB of data in ${r.pages} pages (${r.zeroPages} zero pages sent as counts)`],
    ['processes', (r.pids ?? []).join(' ')],
  ])}`;
  return `${head}\n\n${formatTable(['PHASE', 'MS'], r.phases.map((p) => [p.phase, p.ms.toFixed(1)]))}`;
}
