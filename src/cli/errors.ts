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

/** What a user is told about a failure: the fields the native layer attaches, when present. */
export interface ErrorReport {
  message: string;
  code: string | null;
  errno: number | null;
  call: string | null;
}

export function describeError(error: unknown): ErrorReport {
  if (!(error instanceof Error)) {
    return { message: String(error), code: null, errno: null, call: null };
  }
  const fields = error as Error & { code?: unknown; errno?: unknown; call?: unknown; syscall?: unknown };
  // Node's own system errors say `syscall` and carry libuv's negated errno.
  const call = fields.call ?? fields.syscall;
  return {
    message: error.message,
    code: typeof fields.code === 'string' ? fields.code : null,
    errno: typeof fields.errno === 'number' ? Math.abs(fields.errno) : null,
    call: typeof call === 'string' ? call : null,
  };
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
