import type { Command } from 'commander';
import type { JournalRecord } from '../../coordinator/journal.js';
import { CancelReply, CancelRequest, StatusReply, StatusRequest } from '../../coordinator/messages.js';
import { askAll, requireInventory, withHost } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { printResult } from '../output.js';

export function register(program: Command): void {
  program
    .command('cancel')
    .description('roll back a migration in progress (up to its commit; after that it finishes)')
    .argument('<id>', 'the migration id')
    .action(async (id: string) => {
      if (!/^[0-9a-f]{12}$/.test(id)) throw new CliError(`"${id}" is not a migration id (12 hex digits)`, ExitCode.Usage);
      const inventory = requireInventory();
      const answers = await askAll(inventory, (ch) => ch.request(StatusRequest.make({ id: null }), StatusReply));
      const source = answers.find((a) => 'result' in a && (a.result.migrations as unknown as JournalRecord[]).some((r) => r.id === id && r.role === 'source'));
      if (!source) {
        // The source may be among the hosts that did not answer: say so rather than suggest the id is wrong.
        const silent = answers.filter((a): a is { host: string; error: string } => 'error' in a);
        throw new CliError(`no host runs migration ${id} as its source${silent.length ? ` (no answer from ${silent.map((s) => `${s.host}: ${s.error}`).join('; ')})` : ''}`, ExitCode.Failed);
      }
      const reply = await withHost(inventory, source.host, (ch) => ch.request(CancelRequest.make({ id }), CancelReply));
      printResult({ id, host: source.host, phase: reply.phase }, (r) => `migration ${r.id}: ${r.host} rolls it back (it was ${r.phase}); \`migrate status ${r.id}\` shows the end`);
    });
}
