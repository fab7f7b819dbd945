/** What the commands that drive the checkpoint/restore engine share. */
import { InvalidArgumentError } from 'commander';
import { Tracer } from '../native/tracer.js';

/** The largest pid_max Linux allows (2^22). */
const PID_LIMIT = 4_194_304;

/** Commander argument parser for a pid; anything else is a usage error. */
export function parsePid(value: string): number {
  const pid = /^[1-9][0-9]*$/.test(value) ? Number(value) : NaN;
  if (!(pid < PID_LIMIT)) throw new InvalidArgumentError(`a pid is a whole number from 1 to ${PID_LIMIT - 1}`);
  return pid;
}

/**
 * Runs `use` with a tracer thread that has loaded `module`'s operations.
 * The thread is stopped afterwards whatever happens: it would hold the
 * event loop open, and the husks of a restore that failed halfway die
 * with it (they are traced with PTRACE_O_EXITKILL).
 */
export async function withTracer<T>(module: URL, use: (tracer: Tracer) => Promise<T>): Promise<T> {
  const tracer = await Tracer.start([module]);
  const release = deferInterrupts();
  try {
    return await use(tracer);
  } finally {
    release();
    await tracer.close();
  }
}

const INTERRUPTS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * While the engine holds a process stopped with injected state, dying would
 * leave that process detached mid-injection: registers pointing at Ferry's
 * scratch code, every signal blocked. So Ctrl-C (and SIGTERM/SIGHUP) wait
 * for the operation, which ends in a consistent state either way, and the
 * CLI exits with 128+signal right after. Returns the function that ends the
 * deferral.
 */
function deferInterrupts(): () => void {
  let received: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!received) process.stderr.write(`migrate: ${signal} received; finishing the current step so no process is left half-stopped\n`);
    received = signal;
  };
  for (const s of INTERRUPTS) process.on(s, onSignal);
  return () => {
    for (const s of INTERRUPTS) process.off(s, onSignal);
    if (received) process.exitCode = 128 + (received === 'SIGINT' ? 2 : received === 'SIGTERM' ? 15 : 1);
  };
}
