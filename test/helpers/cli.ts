import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Tracer } from '../../src/native/tracer.js';
import { waitpid, WAIT } from '../../src/native/wait.js';
import { ROOT } from './paths.js';
import { waitFor } from './wait.js';
import type { Workload } from './workload.js';

const SIGTERM = 15;

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node bin/migrate ...args` without blocking the event loop, so the
 * test can reap its own workload while the CLI checkpoints it. Resolves once
 * the CLI has exited and its stdout and stderr are closed: a restored
 * process that kept the CLI's pipes open would hold this up.
 */
export function migrate(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/migrate'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The JSON object a `--json` run printed, or a failure that shows what it printed instead. */
export function jsonOf<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`expected one JSON object on stdout (exit ${result.status}):\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
}

/**
 * A CLI checkpoint of a container whose init is our child (adopted when
 * `migrate run` exited): the checkpoint waits for the killed init's pid to
 * be free, and only its parent, us, can reap it.
 */
export async function checkpointReaping(args: string[], init: number): Promise<CliResult> {
  let done = false;
  const run = migrate(args).finally(() => {
    done = true;
  });
  while (!done) {
    try {
      waitpid(init, WAIT.WNOHANG);
    } catch {
      // not dead yet, or reaped already
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return run;
}

/** The last line of a `--json` run that prints one JSON object per line (`migrate <c> --to <h> --json`: rounds, then the report). */
export function lastJsonOf<T>(result: CliResult): T {
  const lines = result.stdout.split('\n').filter((l) => l.trim());
  return jsonOf<T>({ ...result, stdout: lines.at(-1) ?? '' });
}

/** Every line of such a run but the last, parsed. */
export function jsonLinesOf<T>(result: CliResult): T[] {
  const lines = result.stdout.split('\n').filter((l) => l.trim());
  return lines.slice(0, -1).map((l) => jsonOf<T>({ ...result, stdout: l }));
}

/**
 * `migrate checkpoint` of a workload this process started: the CLI kills
 * it and then waits for its parent (us) to reap it before the pid counts as
 * free, so the reap runs while the CLI does.
 */
export async function checkpointWithCli(tracer: Tracer, w: Workload, args: string[]): Promise<CliResult> {
  const [result] = await Promise.all([
    migrate(['checkpoint', String(w.pid), ...args]).then((r) => {
      // The tracer thread is busy with the reap until the workload ends, and a failed checkpoint left it running.
      if (r.status !== 0 && w.alive()) process.kill(w.pid, 'SIGKILL');
      return r;
    }),
    tracer.call('reap', w.pid, 30_000),
  ]);
  return result;
}

function parentOf(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/**
 * SIGTERMs a workload that `migrate restore` brought back and returns its
 * verdict. When the CLI exited, the workload went to init, or to this
 * process if it is a child subreaper (a tracer that spawned husks here made
 * it one); only in the second case can we reap it, otherwise its new
 * parent does and we wait for the pid to be free.
 */
export async function finishAdopted(tracer: Tracer, w: Workload): Promise<string> {
  await tracer.call('kill', w.pid, SIGTERM);
  await waitFor(`${w.name} (pid ${w.pid}) to write its verdict`, () => fs.existsSync(w.resultFile), 20_000);
  if (parentOf(w.pid) === process.pid) await tracer.call('reap', w.pid, 10_000);
  else await waitFor(`pid ${w.pid} to be reaped by its new parent`, () => !fs.existsSync(`/proc/${w.pid}`), 20_000);
  return w.result();
}
