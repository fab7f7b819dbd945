/**
 * The dialling end (the CLI, or a source agent): connects to an agent, runs
 * the handshake and returns the open channel. Every failure is a
 * ProtocolError that names the address: CONNECT (refused, unresolvable,
 * not a Ferry agent), TLS, TIMEOUT, AUTH, VERSION, or what the agent said.
 */
import { isIP } from 'node:net';
import { WebSocket } from 'ws';
import { Channel } from './channel.js';
import { ProtocolError } from './errors.js';
import type { Role } from './frame.js';
import { clientHandshake } from './handshake.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_PORT, FERRY_PATH, hostPort, localInfo, type EndpointOptions } from './server.js';
import { closeWithError, zeroMask } from './socket.js';
import type { ClientTlsOptions } from './tls.js';

export interface ConnectOptions extends EndpointOptions {
  role: Role;
  tls?: ClientTlsOptions;
  /** For everything up to the open channel: TCP, TLS, the upgrade and the handshake (default 10 s). */
  timeoutMs?: number;
}

/** "host:port", "[v6]:port", or a bare host or IPv6 address (DEFAULT_PORT). */
export function parseAddress(address: string): { host: string; port: number } {
  const text = address.trim();
  if (isIP(text) === 6) return { host: text, port: DEFAULT_PORT };
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+))(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[3] === undefined ? DEFAULT_PORT : Number(m[3]);
  if (!m || port < 1 || port > 65535) throw new ProtocolError('CONNECT', `${JSON.stringify(address)} is not an agent address (host:port)`);
  return { host: m[1] ?? m[2]!, port };
}

const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

/** Why the TCP connection, TLS or the WebSocket upgrade failed. */
function connectError(error: NodeJS.ErrnoException & { reason?: string }, peer: string, tls: boolean, ownCert: boolean): ProtocolError {
  const code = error.code ?? '';
  const fail = (c: 'CONNECT' | 'TLS' | 'TIMEOUT', message: string): ProtocolError => new ProtocolError(c, message, { cause: error });
  if (code === 'ECONNREFUSED') return fail('CONNECT', `cannot connect to ${peer}: connection refused (is the agent running?)`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return fail('CONNECT', `cannot connect to ${peer}: the host name does not resolve`);
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return fail('CONNECT', `cannot connect to ${peer}: no route to the host`);
  if (code === 'ETIMEDOUT') return fail('TIMEOUT', `cannot connect to ${peer}: the connection timed out`);
  if (UNTRUSTED.has(code)) return fail('TLS', `${peer} presented a certificate the cluster CA did not sign (${code})`);
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return fail('TLS', `the certificate of ${peer} is not valid now (${code})`);
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return fail('TLS', `the certificate of ${peer} is for another host: ${error.reason ?? error.message}`);
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') return fail('TLS', `${peer} requires a client certificate, and this client has none`);
  if (/ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|HANDSHAKE_FAILURE)/.test(code)) return fail('TLS', `${peer} refused this client's certificate (${code})`);
  if (/wrong version number|packet length too long/.test(error.message)) return fail('TLS', `${peer} does not speak TLS`);
  if (code === 'ECONNRESET' && !tls) return fail('CONNECT', `${peer} cut the connection during the WebSocket upgrade (does it require TLS?)`);
  if (code === 'ECONNRESET') {
    // With TLS 1.3 the server checks the client's certificate after the client considers the handshake done: it just hangs up.
    return fail(
      'TLS',
      ownCert
        ? `${peer} hung up after the TLS handshake: it probably does not trust this client's certificate`
        : `${peer} hung up after the TLS handshake: it probably requires a client certificate, and this client has none`,
    );
  }
  return fail(tls && (code === 'EPROTO' || code.startsWith('ERR_SSL')) ? 'TLS' : 'CONNECT', `cannot connect to ${peer}: ${error.message}`);
}

/** Opens the WebSocket; resolves once it is open. */
function open(ws: WebSocket, peer: string, tls: ClientTlsOptions | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error?: ProtocolError): void => {
      ws.off('open', onOpen).off('error', onError).off('unexpected-response', onResponse).off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onOpen = (): void => done();
    const onError = (error: Error): void => done(connectError(error, peer, tls !== undefined, tls?.cert !== undefined));
    // connect() terminates the socket on any failure, which also aborts this response.
    const onResponse = (_req: unknown, res: { statusCode?: number }): void =>
      done(new ProtocolError('CONNECT', `${peer} answered HTTP ${res.statusCode}: it is not a Ferry agent`));
    const onClose = (): void => done(new ProtocolError('CONNECT', `${peer} closed the connection before the WebSocket upgrade`));
    ws.on('open', onOpen).on('error', onError).on('unexpected-response', onResponse).on('close', onClose);
  });
}

/** Connects to the agent at `address` (host:port) and returns the authenticated channel. */
export async function connect(address: string, opts: ConnectOptions): Promise<Channel> {
  const local = localInfo(opts, opts.role);
  const { host, port } = parseAddress(address);
  const where = hostPort(host, port);
  const peer = `agent at ${where}`;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const tls = opts.tls;
  const ws = new WebSocket(`${tls ? 'wss' : 'ws'}://${where}${FERRY_PATH}`, {
    maxPayload: local.maxFrameBytes,
    perMessageDeflate: false,
    generateMask: zeroMask,
    followRedirects: false,
    ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true } : {}),
  });
  let isOpen = false;
  const opened = open(ws, peer, tls).then(() => void (isOpen = true));
  const handshake = clientHandshake(ws, { token: opts.token, local, address: where }, opened);
  // When the deadline wins, the handshake fails later as the socket is cut; that failure has no one left to tell.
  handshake.catch(() => {});
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ProtocolError('TIMEOUT', isOpen ? `${peer} did not complete the handshake within ${timeoutMs} ms` : `${peer} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    const { peer: info, takeBacklog } = await Promise.race([handshake, deadline]);
    const channel = new Channel(ws, info, local, takeBacklog(), opts);
    // The caller registers its handlers when connect() resolves; frames are handled after that.
    setImmediate(() => channel.start());
    return channel;
  } catch (e) {
    const error = e instanceof ProtocolError ? e : new ProtocolError('CONNECT', `cannot connect to ${peer}: ${(e as Error).message}`, { cause: e });
    closeWithError(ws, error);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
