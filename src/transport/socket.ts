/**
 * What the handshake and the channel both do with a raw `ws` socket: turn
 * its errors and close codes into ProtocolErrors that name the peer, and
 * close it with a reason the peer can read.
 */
import type { WebSocket } from 'ws';
import { ErrorFrame, encodeFrame } from './frame.js';
import { ProtocolError, type ProtocolErrorCode, isProtocolErrorCode } from './errors.js';

/** After our close frame, how long the peer has to answer before the TCP connection is cut. */
const CLOSE_GRACE_MS = 1000;

const CLOSE_CODES: Partial<Record<ProtocolErrorCode, number>> = {
  AUTH: 1008,
  TOO_LARGE: 1009,
  HANDLER: 1011,
  TIMEOUT: 1001,
  CLOSED: 1001,
  ABORTED: 1001,
};

/** Errors that repeat what the peer said in its error frame: it is closing already and needs no answer. */
const fromPeer = new WeakSet<ProtocolError>();

function ignore(): void {}

/** A socket being closed can still report a reset; with no 'error' listener that would crash the process. */
function quiet(ws: WebSocket): void {
  if (!ws.listeners('error').includes(ignore)) ws.on('error', ignore);
}

export const TEXT_REFUSED = 'text WebSocket messages are not part of the Ferry protocol';

/**
 * Tells the peer why (an `error` frame, then a close frame whose reason is
 * the code) and closes. A peer that stopped answering is cut at once.
 */
export function closeWithError(ws: WebSocket, error: ProtocolError): void {
  quiet(ws);
  if (fromPeer.has(error)) return closeCleanly(ws);
  if (ws.readyState === ws.OPEN && error.code !== 'TIMEOUT') {
    try {
      ws.send(encodeFrame(ErrorFrame.make({ code: error.code, message: error.message.slice(0, 4096) })));
    } catch {
      // The error frame is a courtesy; the close frame below still carries the code.
    }
    ws.close(CLOSE_CODES[error.code] ?? 1002, error.code);
    setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
  } else {
    ws.terminate();
  }
}

/** A clean close that still cuts a peer that never answers the close frame. */
export function closeCleanly(ws: WebSocket): void {
  quiet(ws);
  if (ws.readyState === ws.OPEN) {
    ws.close(1000);
    setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
  } else if (ws.readyState !== ws.CLOSED) {
    ws.terminate();
  }
}

/** An 'error' event of an open ws socket. */
export function socketError(error: Error, peer: string, maxFrameBytes: number): ProtocolError {
  const code = (error as { code?: unknown }).code;
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
    return new ProtocolError('TOO_LARGE', `${peer} sent a frame larger than the ${maxFrameBytes} bytes this end accepts`, { cause: error });
  }
  if (typeof code === 'string' && code.startsWith('WS_ERR_')) {
    return new ProtocolError('MALFORMED', `${peer} broke the WebSocket framing: ${error.message}`, { cause: error });
  }
  return new ProtocolError('CLOSED', `connection to ${peer} failed: ${error.message}`, { cause: error });
}

/** A peer's `error` frame: it is closing the connection and says why. */
export function peerError(frame: { code: string; message: string }, peer: string): ProtocolError {
  const code = isProtocolErrorCode(frame.code) ? frame.code : 'CLOSED';
  const error =
    code === 'AUTH' ? new ProtocolError('AUTH', `${peer} refused the token`) : new ProtocolError(code, `${peer} closed the connection: ${frame.message}`);
  fromPeer.add(error);
  return error;
}

/** The 'close' event of a socket that closed without an error frame before it. */
export function closeError(code: number, reason: Buffer, peer: string): ProtocolError {
  const why = reason.toString('utf8');
  if (code === 1009) return new ProtocolError('TOO_LARGE', `${peer} closed the connection: a frame was larger than it accepts`);
  if (code === 1006) return new ProtocolError('CLOSED', `connection to ${peer} lost`);
  return new ProtocolError('CLOSED', `${peer} closed the connection (code ${code}${why ? `, ${why}` : ''})`);
}

/**
 * The mask for client frames. WebSocket masks every client frame to protect
 * browser-era proxies; masking in JavaScript costs most of the loopback
 * bandwidth (DESIGN.md), these connections are authenticated (and TLS where
 * configured), and ws skips masking for an all-zero mask.
 */
export function zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}
