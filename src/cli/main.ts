import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import * as agent from './commands/agent.js';
import * as cancel from './commands/cancel.js';
import * as checkpoint from './commands/checkpoint.js';
import * as demo from './commands/demo.js';
import * as doctor from './commands/doctor.js';
import * as host from './commands/host.js';
import * as init from './commands/init.js';
import * as inspect from './commands/inspect.js';
import * as lab from './commands/lab.js';
import * as logs from './commands/logs.js';
import * as move from './commands/move.js';
import * as ps from './commands/ps.js';
import * as restore from './commands/restore.js';
import * as run from './commands/run.js';
import * as status from './commands/status.js';
import * as stop from './commands/stop.js';
import { describeError, exitCodeFor, formatErrorLine, type ErrorReport } from './errors.js';
import { EXIT_CODE_MEANINGS, ExitCode } from './exit-codes.js';
import { setJsonOutput } from './output.js';

/** Each command lives in ./commands/<name>.ts and adds itself to the program. */
const COMMANDS: ReadonlyArray<{ register(program: Command): void }> = [agent, cancel, checkpoint, demo, doctor, host, init, inspect, lab, logs, move, ps, restore, run, status, stop];

/** Runs `migrate` with Node's argv; the outcome is left in process.exitCode. */
export async function main(argv: readonly string[]): Promise<void> {
  // `migrate ... | head` closes the pipe early; that is the reader's choice, not a failure.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit();
  });
  const program = buildProgram();
  try {
    await program.parseAsync(withMoveShorthand(program, argv));
  } catch (error) {
    process.exitCode = report(error, program.opts()['json'] === true);
  }
}

/**
 * `migrate web --to host2` is `migrate move web --to host2`: the everyday
 * command reads as a sentence. Only a first word that is no command, with
 * --to after it, is taken as a container name, so typos still fail as
 * unknown commands.
 */
function withMoveShorthand(program: Command, argv: readonly string[]): string[] {
  // Global options (--json) take no value, so the first word that is not an option is the command.
  const at = argv.findIndex((a, i) => i >= 2 && !a.startsWith('-'));
  const known = new Set(program.commands.flatMap((c) => [c.name(), ...c.aliases()]));
  if (at < 0 || known.has(argv[at]!) || !argv.slice(at + 1).some((a) => a === '--to' || a.startsWith('--to='))) return [...argv];
  return [...argv.slice(0, at), 'move', ...argv.slice(at)];
}

function buildProgram(): Command {
  const program = new Command('migrate');
  program
    .description('Ferry: moves running containers between hosts (migrate <container> --to <host>), and checkpoints and restores processes, process trees and containers')
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
