import type { Refusal } from '../source/refusal.js';
import { ExitCode } from './exit-codes.js';

/** An error the CLI reports as-is and exits with its code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode = ExitCode.Failed,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/**
 * Errors of the engine that mean "Ferry will not do this to this state",
 * not "something broke". They arrive from the tracer thread rebuilt with
 * their name and fields but not their class, so they are known by name.
 */
const REFUSALS = new Set(['CheckpointRefused', 'RestoreRefused']);

/** What a user is told about a failure: the fields the native layer and the engine attach, when present. */
export interface ErrorReport {
  message: string;
  code: string | null;
  errno: number | null;
  call: string | null;
  /** CheckpointRefused: everything in the process that Ferry cannot migrate. */
  refusals?: Refusal[];
  /** RestoreRefused: everything on this host that stops the image from being restored. */
  problems?: string[];
  /** ImageError: what is wrong with the image (ImageErrorReason), and in which of its files. */
  reason?: string;
  file?: string;
}

export function exitCodeFor(error: unknown): ExitCode {
  if (error instanceof CliError) return error.exitCode;
  if (error instanceof Error && REFUSALS.has(error.name)) return ExitCode.Refused;
  return ExitCode.Failed;
}

export function describeError(error: unknown): ErrorReport {
  if (!(error instanceof Error)) {
    return { message: String(error), code: null, errno: null, call: null };
  }
  const fields = error as Error & Record<'code' | 'errno' | 'call' | 'syscall' | 'refusals' | 'problems' | 'reason' | 'file', unknown>;
  // Node's own system errors say `syscall` and carry libuv's negated errno.
  const call = fields.call ?? fields.syscall;
  const report: ErrorReport = {
    message: error.message,
    code: typeof fields.code === 'string' ? fields.code : null,
    errno: typeof fields.errno === 'number' ? Math.abs(fields.errno) : null,
    call: typeof call === 'string' ? call : null,
  };
  if (Array.isArray(fields.refusals)) report.refusals = fields.refusals as Refusal[];
  if (Array.isArray(fields.problems)) report.problems = fields.problems as string[];
  if (error.name === 'ImageError' && typeof fields.reason === 'string') {
    report.reason = fields.reason;
    if (typeof fields.file === 'string') report.file = fields.file;
  }
  return report;
}

/**
 * One line, e.g. "migrate: cannot attach to pid 42 (call ptrace(PTRACE_SEIZE), errno 3 ESRCH)".
 * Native errors already name the call and code in their message; those are not repeated.
 */
export function formatErrorLine(report: ErrorReport): string {
  const { message, code, errno, call } = report;
  const details: string[] = [];
  if (call !== null && !message.includes(call)) details.push(`call ${call}`);
  if (errno !== null) details.push(code !== null && !message.includes(code) ? `errno ${errno} ${code}` : `errno ${errno}`);
  return `migrate: ${message}${details.length > 0 ? ` (${details.join(', ')})` : ''}`;
}
