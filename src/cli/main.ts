import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import * as checkpoint from './commands/checkpoint.js';
import * as demo from './commands/demo.js';
import * as doctor from './commands/doctor.js';
import * as inspect from './commands/inspect.js';
import * as logs from './commands/logs.js';
import * as ps from './commands/ps.js';
import * as restore from './commands/restore.js';
import * as run from './commands/run.js';
import * as stop from './commands/stop.js';
import { describeError, exitCodeFor, formatErrorLine, type ErrorReport } from './errors.js';
import { EXIT_CODE_MEANINGS, ExitCode } from './exit-codes.js';
import { setJsonOutput } from './output.js';

/** Each command lives in ./commands/<name>.ts and adds itself to the program. */
const COMMANDS: ReadonlyArray<{ register(program: Command): void }> = [checkpoint, demo, doctor, inspect, logs, ps, restore, run, stop];

/** Runs `migrate` with Node's argv; the outcome is left in process.exitCode. */
export async function main(argv: readonly string[]): Promise<void> {
  // `migrate ... | head` closes the pipe early; that is the reader's choice, not a failure.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit();
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    process.exitCode = report(error, program.opts()['json'] === true);
  }
}

function buildProgram(): Command {
  const program = new Command('migrate');
  program
    .description('Ferry: checkpoint and restore of Linux processes, process trees and containers (live migration between hosts comes next)')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--json', 'print results and errors as one JSON object on stdout')
    .helpOption('-h, --help', 'show help')
    .helpCommand('help [command]', 'show help for a command')
    .addHelpText('after', exitCodeHelp())
    .configureHelp({ showGlobalOptions: true })
    // Subcommands copy these settings when created, so they come before registration.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({
      outputError: (text, write) => {
        if (program.opts()['json'] !== true) write(text.replace(/^error: /, 'migrate: '));
      },
    })
    .hook('preAction', (root) => setJsonOutput(root.opts()['json'] === true));
  for (const command of COMMANDS) command.register(program);
  return program;
}

function packageVersion(): string {
  const packageJson = new URL('../../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string }).version;
}

function exitCodeHelp(): string {
  const lines = EXIT_CODE_MEANINGS.map(([code, meaning]) => `  ${code}  ${meaning}`);
  return `\nExit codes:\n${lines.join('\n')}`;
}

/** Tells the user what went wrong and returns the exit code for it. */
function report(error: unknown, json: boolean): ExitCode {
  if (error instanceof CommanderError) {
    // --help and --version also arrive here, with exit code 0 and their output already written.
    if (error.exitCode === 0) return ExitCode.Ok;
    // Commander has already printed its message to stderr (unless --json).
    if (json) printJsonError({ message: usageMessage(error), code: 'USAGE', errno: null, call: null });
    return ExitCode.Usage;
  }
  const description = describeError(error);
  if (json) printJsonError(description);
  else process.stderr.write(`${formatErrorLine(description)}\n`);
  return exitCodeFor(error);
}

function usageMessage(error: CommanderError): string {
  // A bare `migrate` shows the help and reports no message of its own.
  if (error.code === 'commander.help') return 'no command given';
  return error.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
}

function printJsonError(description: ErrorReport): void {
  process.stdout.write(`${JSON.stringify({ error: description })}\n`);
}
