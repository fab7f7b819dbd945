import fs from 'node:fs';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { containerLogPath } from '../../container/runtime.js';
import { validateName } from '../../container/spec.js';
import { isJsonOutput, printResult } from '../output.js';
import { usage } from './run.js';

export function register(program: Command): void {
  program
    .command('logs')
    .description("print a container's output (its stdout and stderr, kept after it exits)")
    .argument('<name>', 'the container', usage(validateName))
    .action(async (name: string) => {
      const file = containerLogPath(name);
      if (isJsonOutput()) {
        printResult({ name, log: fs.readFileSync(file, 'utf8') }, (r) => r.log);
        return;
      }
      // Streamed: a long-running container's log can be far bigger than we want in memory.
      const log = fs.createReadStream(file);
      log.pipe(process.stdout, { end: false });
      await finished(log);
    });
}
