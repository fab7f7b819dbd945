import path from 'node:path';
import type { Command } from 'commander';
import type { RestoreSummary } from '../../target/restore.js';
import { withTracer } from '../engine.js';
import { printResult } from '../output.js';

const RESTORE = new URL('../../target/restore.js', import.meta.url);

export function register(program: Command): void {
  program
    .command('restore')
    .description('restore a process from an image directory, with its pid')
    .requiredOption('-D, --dir <dir>', 'the image directory written by `migrate checkpoint`')
    .addHelpText(
      'after',
      '\nThe restored process outlives this command: it is handed to init (or the nearest' +
        '\nsubreaper), as if its parent had exited. Exits 4 when this host cannot take the' +
        '\nimage (its pid is in use, a file it maps differs), 1 when the image is damaged.',
    )
    .action(async (options: { dir: string }) => {
      const dir = path.resolve(options.dir);
      const summary = await withTracer(RESTORE, (tracer) => tracer.call<RestoreSummary>('restore', dir));
      printResult(summary, (s) =>
        s.pids.length > 1
          ? `restored the tree of pid ${s.pid} (${s.pids.join(' ')}) from ${s.dir} in ${s.restoreMs.toFixed(1)} ms`
          : `restored pid ${s.pid} from ${s.dir} in ${s.restoreMs.toFixed(1)} ms`,
      );
    });
}
