/**
 * The errors of the transport. Everything the transport itself detects is a
 * ProtocolError with a machine-readable `code`; an error that a request
 * handler on the other side raised comes back as a RemoteError carrying the
 * code and message that handler chose.
 */

export type ProtocolErrorCode =
  /** Not a msgpack frame, not an object with a string `t`, or a text WebSocket message. */
  | 'MALFORMED'
  /** A frame whose `t` no defineMessage() registered on this side. */
  | 'UNKNOWN_TYPE'
  /** A known frame type whose fields fail its schema. */
  | 'BAD_FIELDS'
  /** A frame larger than the receiver's limit (or a stream chunk larger than its window). */
  | 'TOO_LARGE'
  /** The peers speak different protocol versions. */
  | 'VERSION'
  /** The token (or the peer's proof of it) is wrong. */
  | 'AUTH'
  /** No answer in time: connect, handshake, a request, or the heartbeat. */
  | 'TIMEOUT'
  /** The connection is closed or was lost. */
  | 'CLOSED'
  /** A stream was aborted by its writer or cancelled by its reader. */
  | 'ABORTED'
  /** A stream's data does not match the checksum its writer sent. */
  | 'CHECKSUM'
  /** A well-formed frame that is wrong at this point: a reply to no request, data for a stream never opened, a sequence gap. */
  | 'UNEXPECTED'
  /** A message handler registered on this side threw. */
  | 'HANDLER'
  /** The TCP connection or the WebSocket upgrade failed. */
  | 'CONNECT'
  /** TLS: the certificate is not trusted, is for another name, or a client certificate is missing. */
  | 'TLS';

export const PROTOCOL_ERROR_CODES: readonly ProtocolErrorCode[] = [
  'MALFORMED',
  'UNKNOWN_TYPE',
  'BAD_FIELDS',
  'TOO_LARGE',
  'VERSION',
  'AUTH',
  'TIMEOUT',
  'CLOSED',
  'ABORTED',
  'CHECKSUM',
  'UNEXPECTED',
  'HANDLER',
  'CONNECT',
  'TLS',
];

export function isProtocolErrorCode(code: unknown): code is ProtocolErrorCode {
  return typeof code === 'string' && (PROTOCOL_ERROR_CODES as readonly string[]).includes(code);
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';

  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The error a request handler on the peer raised, rebuilt here with its code and message. */
export class RemoteError extends Error {
  override name = 'RemoteError';

  constructor(
    readonly code: string,
    message: string,
    /** The request type that failed. */
    readonly request: string,
  ) {
    super(message);
  }
}

/** `error` as a ProtocolError, keeping it if it is one; anything else becomes `fallback` with its message. */
export function asProtocolError(error: unknown, fallback: ProtocolErrorCode, context?: string): ProtocolError {
  if (error instanceof ProtocolError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new ProtocolError(fallback, context ? `${context}: ${message}` : message, { cause: error });
}
