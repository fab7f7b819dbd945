/** Messages between a Tracer (any thread) and its worker (the one thread that owns every ptrace session). */

export interface OpRequest {
  id: number;
  op: string;
  args: unknown[];
}

export interface LoadRequest {
  id: number;
  load: string;
}

export type TracerRequest = OpRequest | LoadRequest;

export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** Own enumerable fields of the error (errno, code, call, reason, ...). */
  fields: Record<string, unknown>;
}

export type TracerReply =
  | { id: number; done: true; result: unknown }
  | { id: number; done: true; error: SerializedError }
  | { id: number; done: false; event: unknown };

/** What an operation gets besides its arguments: a way to report progress before it returns. */
export interface OpContext {
  emit(event: unknown): void;
}

export type Op = (ctx: OpContext, ...args: any[]) => unknown;

export function serializeError(e: unknown): SerializedError {
  if (e instanceof Error) {
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(e)) {
      if (v === undefined || typeof v === 'function') continue;
      fields[k] = v;
    }
    return { name: e.name, message: e.message, stack: e.stack, fields };
  }
  return { name: 'Error', message: String(e), fields: {} };
}
