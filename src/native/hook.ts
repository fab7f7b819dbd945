/**
 * Programs an operator configures Ferry to run at certain moments (the
 * network hook, container/network.ts): run to completion with a time
 * limit, their output kept for the error when they fail.
 */
import { spawnSync } from 'node:child_process';

export class HookError extends Error {
  readonly code = 'HOOK_FAILED';

  constructor(
    readonly argv: readonly string[],
    how: string,
    readonly output: string,
  ) {
    super(`${argv.join(' ')} ${how}${output.trim() ? `: ${output.trim().split('\n').slice(-5).join(' / ')}` : ''}`);
    this.name = 'HookError';
  }
}

/** Runs argv with `env` added to ours and stdin closed; throws HookError unless it exits 0 within `timeoutMs`. */
export function runHook(argv: readonly string[], env: Record<string, string>, timeoutMs: number): void {
  const result = spawnSync(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  if (result.error) {
    const code = (result.error as NodeJS.ErrnoException).code;
    if (code === 'ETIMEDOUT') throw new HookError(argv, `did not finish within ${timeoutMs / 1000} s (it was killed)`, output);
    throw new HookError(argv, `could not be run (${code ?? result.error.message})`, output);
  }
  if (result.status !== 0) throw new HookError(argv, result.status === null ? `was killed by ${result.signal}` : `exited with ${result.status}`, output);
}
