import path from 'node:path';
import type { Command } from 'commander';
import type { RestoreSummary } from '../../target/restore.js';
import { withTracer } from '../engine.js';
import { printResult } from '../output.js';
import { recordRestored } from '../../container/runtime.js';

const RESTORE = new URL('../../target/restore.js', import.meta.url);

export function register(program: Command): void {
  program
    .command('restore')
    .description('restore a process, a process tree or a container from an image directory, with its pids')
    .requiredOption('-D, --dir <dir>', 'the image directory written by `migrate checkpoint`')
    .option('--netns <path>', 'restore a bare process into this network namespace (e.g. /run/netns/NAME) instead of migrate\'s own: where its TCP connections belong')
    .addHelpText(
      'after',
      '\nThe restored process outlives this command: it is handed to init (or the nearest' +
        '\nsubreaper), as if its parent had exited. Exits 4 when this host cannot take the' +
        '\nimage (its pid is in use, a file it maps differs), 1 when the image is damaged.' +
        '\nA container gets back its pids inside; its pids on this host are new ones.',
    )
    .action(async (options: { dir: string; netns?: string }) => {
      const dir = path.resolve(options.dir);
      const summary = await withTracer(RESTORE, (tracer) => tracer.call<RestoreSummary>('restore', dir, options.netns ? { netns: path.resolve(options.netns) } : {}));
      // A container is recorded like one `migrate run` started, so ps, stop and logs know it.
      if (summary.container) recordRestored(summary.container, summary.pid);
      printResult(summary, (s) =>
        s.container
          ? `restored container ${s.container.name} (pid 1 inside, host pid ${s.pid}; ${s.pids.length} process${s.pids.length > 1 ? 'es' : ''}) from ${s.dir} in ${s.restoreMs.toFixed(1)} ms`
          : s.pids.length > 1
            ? `restored the tree of pid ${s.pid} (${s.pids.join(' ')}) from ${s.dir} in ${s.restoreMs.toFixed(1)} ms`
            : `restored pid ${s.pid} from ${s.dir} in ${s.restoreMs.toFixed(1)} ms`,
      );
    });
}
