import type { Command } from 'commander';
import type { JournalRecord } from '../../coordinator/journal.js';
import { StatusReply, StatusRequest } from '../../coordinator/messages.js';
import { askAll, requireInventory } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatFields, formatTable, printResult } from '../output.js';
import { render as renderReport } from './move.js';
import type { MigrationReport } from '../../coordinator/messages.js';

export function register(program: Command): void {
  program
    .command('status')
    .description('list migrations on every host, or show one: phase, outcome, report')
    .argument('[id]', 'a migration id, as `migrate <container> --to <host>` printed it')
    .addHelpText(
      'after',
      '\nEach host answers from its journal, so a migration whose CLI died shows how far it' +
        '\ngot. The source\'s record decides: `done` means the container runs on the target,' +
        '\n`rolled-back` that it runs on the source. A host that does not answer is listed.',
    )
    .action(async (id: string | undefined) => {
      if (id !== undefined && !/^[0-9a-f]{12}$/.test(id)) throw new CliError(`"${id}" is not a migration id (12 hex digits)`, ExitCode.Usage);
      const answers = await askAll(requireInventory(), (ch) => ch.request(StatusRequest.make({ id: null }), StatusReply));
      const records = answers.flatMap((a) => ('result' in a ? (a.result.migrations as unknown as JournalRecord[]).map((r) => ({ ...r, reportedBy: a.host })) : []));
      const unreachable = answers.filter((a): a is { host: string; error: string } => 'error' in a);
      if (id === undefined) {
        // One line per migration: the source's record, which decides, where the source answered.
        const byId = new Map<string, (typeof records)[number]>();
        for (const r of records) if (r.role === 'source' || !byId.has(r.id)) byId.set(r.id, r);
        const list = [...byId.values()].sort((a, b) => (a.history[0]!.at < b.history[0]!.at ? 1 : -1));
        printResult({ migrations: list, unreachable }, (r) => renderList(r.migrations, r.unreachable));
        return;
      }
      const mine = records.filter((r) => r.id === id);
      if (!mine.length) {
        throw new CliError(`no host knows migration ${id}${unreachable.length ? ` (no answer from ${unreachable.map((u) => u.host).join(', ')})` : ''}`, ExitCode.Failed);
      }
      printResult({ id, records: mine, unreachable }, (r) => renderOne(r.records, r.unreachable));
    });
}

function renderList(list: Array<JournalRecord & { reportedBy: string }>, unreachable: Array<{ host: string; error: string }>): string {
  const rows = list.map((r) => {
    const report = r.report as unknown as MigrationReport | null;
    return [r.id, r.container, r.source.host, r.target.host, r.phase, r.history[0]!.at.replace('T', ' ').slice(0, 19), report?.frozenMs != null ? `${report.frozenMs.toFixed(0)} ms` : '-'];
  });
  const table = list.length ? formatTable(['ID', 'CONTAINER', 'FROM', 'TO', 'PHASE', 'STARTED', 'DOWNTIME'], rows) : 'no migrations';
  return table + unreachableNote(unreachable);
}

function renderOne(records: Array<JournalRecord & { reportedBy: string }>, unreachable: Array<{ host: string; error: string }>): string {
  const parts = records.map((r) => {
    const fields: Array<[string, string]> = [
      ['role', `${r.role} (journal of ${r.reportedBy})`],
      ['container', r.container],
      ['from', r.source.host],
      ['to', r.target.host],
      ['phase', r.phase],
      ['history', r.history.map((h) => `${h.phase} ${h.at}`).join(', ')],
    ];
    if (r.error) fields.push(['error', r.error]);
    const report = r.report as unknown as MigrationReport | null;
    return `migration ${r.id}\n${formatFields(fields)}${report && report.outcome === 'done' ? `\n\n${renderReport(report)}` : ''}`;
  });
  return parts.join('\n\n') + unreachableNote(unreachable);
}

function unreachableNote(unreachable: Array<{ host: string; error: string }>): string {
  return unreachable.length ? `\n\nno answer from: ${unreachable.map((u) => `${u.host} (${u.error})`).join('; ')}` : '';
}
