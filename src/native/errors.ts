import { errnoName, errnoMessage } from './errno.js';

/**
 * A failed kernel call. Carries the errno, its symbolic name and the call that
 * failed, so that a message at 3 a.m. says what the kernel refused, not just
 * that something went wrong.
 */
export class NativeError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly call: string;

  constructor(call: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${call}${detail ? ` ${detail}` : ''}: ${code} (${errnoMessage(errno)})`);
    this.name = 'NativeError';
    this.errno = errno;
    this.code = code;
    this.call = call;
  }
}

export function isNativeError(e: unknown, code?: string): e is NativeError {
  return e instanceof NativeError && (code === undefined || e.code === code);
}
