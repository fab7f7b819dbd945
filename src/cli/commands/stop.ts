import { InvalidArgumentError, type Command } from 'commander';
import { stopContainer, type StopReport } from '../../container/runtime.js';
import { validateName } from '../../container/spec.js';
import { printResult } from '../output.js';
import { requireRoot, usage } from './run.js';

function parseSeconds(text: string): number {
  const seconds = /^\d+(?:\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(seconds)) throw new InvalidArgumentError('a number of seconds, e.g. 10 or 0.5');
  return seconds;
}

export function register(program: Command): void {
  program
    .command('stop')
    .description('stop a container: SIGTERM to its init, SIGKILL after the timeout; its cgroup goes, its log stays')
    .argument('<name>', 'the container', usage(validateName))
    .option('--timeout <seconds>', 'how long SIGTERM has before SIGKILL', parseSeconds, 10)
    .addHelpText(
      'after',
      '\nEvery process of the container ends with its init. An init with no SIGTERM handler' +
        '\nnever receives SIGTERM (the kernel shields a pid namespace\'s init), so it gets' +
        '\nSIGKILL at once. Stopping a container that has already exited removes its cgroup.',
    )
    .action(async (name: string, options: { timeout: number }) => {
      requireRoot('stop containers');
      const report = await stopContainer(name, options.timeout * 1000);
      printResult(report, render);
    });
}

function render(r: StopReport): string {
  if (r.signal === null) return `container ${r.name} had already exited; its cgroup is removed`;
  return `stopped container ${r.name} (pid ${r.pid}) with ${r.signal}`;
}
