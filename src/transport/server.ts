/**
 * The listening end (an agent): accepts WebSocket connections, runs the
 * handshake, and hands each authenticated channel to `onChannel`. A client
 * that fails the handshake (wrong token or version, garbage, TLS) is told
 * why, closed, and logged in one line; the server serves on.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { checkToken } from './auth.js';
import { Channel, type ChannelOptions } from './channel.js';
import { ProtocolError } from './errors.js';
import { DEFAULT_MAX_FRAME_BYTES, MIN_FRAME_BYTES } from './frame.js';
import { serverHandshake, type LocalInfo } from './handshake.js';
import { closeWithError } from './socket.js';
import type { ServerTlsOptions } from './tls.js';

/** The port agents listen on unless told otherwise. */
export const DEFAULT_PORT = 7468;
/** The WebSocket path of the Ferry protocol. */
export const FERRY_PATH = '/ferry';
export const DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Settings both ends have. */
export interface EndpointOptions extends ChannelOptions {
  token: string;
  /** This host's name, as peers will see it. */
  hostName: string;
  capabilities?: string[];
  /** The largest frame this end accepts (default 16 MiB). */
  maxFrameBytes?: number;
  /** The credit each stream towards this end gets: how much of it this end buffers at most (default 8 MiB). */
  windowBytes?: number;
}

export interface ListenOptions extends EndpointOptions {
  /** Address to bind (default all IPv4 addresses). */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  tls?: ServerTlsOptions;
  /** How long a client may take from connecting to the end of the handshake (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Called for each authenticated channel; register its handlers before awaiting anything. */
  onChannel: (channel: Channel) => void | Promise<void>;
  /** Where refused connections are reported, one line each (default: stderr). */
  log?: (line: string) => void;
}

export interface Server {
  host: string;
  port: number;
  /** host:port, as connect() takes it. */
  address: string;
  /** Stops listening and closes every connection, open channels included. */
  close(): Promise<void>;
}

export function localInfo(opts: EndpointOptions, role: LocalInfo['role']): LocalInfo {
  checkToken(opts.token);
  const local: LocalInfo = {
    hostName: opts.hostName,
    role,
    capabilities: opts.capabilities ?? [],
    maxFrameBytes: opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    windowBytes: opts.windowBytes ?? DEFAULT_WINDOW_BYTES,
  };
  for (const [what, n] of [['maxFrameBytes', local.maxFrameBytes], ['windowBytes', local.windowBytes]] as const) {
    if (!Number.isSafeInteger(n) || n < MIN_FRAME_BYTES) throw new RangeError(`${what} must be an integer of at least ${MIN_FRAME_BYTES} (got ${n})`);
  }
  return local;
}

export function hostPort(host: string | undefined, port: number | undefined): string {
  return host?.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function listen(opts: ListenOptions): Promise<Server> {
  const local = localInfo(opts, 'agent');
  const log = opts.log ?? ((line: string) => process.stderr.write(`ferry: ${line}\n`));
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const tls = opts.tls;
  const server = tls
    ? https.createServer({
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        requestCert: tls.requireClientCert ?? false,
        rejectUnauthorized: tls.requireClientCert ?? false,
        minVersion: 'TLSv1.2',
      })
    : http.createServer();
  const wss = new WebSocketServer({ server, path: FERRY_PATH, maxPayload: local.maxFrameBytes, perMessageDeflate: false, clientTracking: false });
  const sockets = new Set<WebSocket>();
  const channels = new Set<Channel>();
  let closing = false;

  server.on('request', (_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' }).end('This is a Ferry agent: it speaks WebSocket only.\n');
  });
  // The socket of a failed TLS handshake no longer knows its peer's address.
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => {
    const hint = error.code === 'ECONNRESET' ? ' (the client hung up: it may not trust this agent\'s certificate)' : '';
    log(`refused a connection: TLS handshake failed: ${error.message}${hint}`);
  });
  // The WebSocketServer re-emits the HTTP server's errors: a failure to listen rejects listen() below, later ones (EMFILE) are logged.
  let listening = false;
  wss.on('error', (error: Error) => listening && log(`the listener on ${hostPort(opts.host ?? '0.0.0.0', opts.port)} failed: ${error.message}`));

  wss.on('connection', (ws, req) => {
    const address = hostPort(req.socket.remoteAddress, req.socket.remotePort);
    if (closing) return ws.terminate();
    sockets.add(ws);
    ws.once('close', () => sockets.delete(ws));
    serverHandshake(ws, { token: opts.token, local, address, timeoutMs: handshakeTimeoutMs }).then(
      ({ peer, takeBacklog }) => {
        if (closing) return ws.terminate();
        const channel = new Channel(ws, peer, local, takeBacklog(), opts);
        channels.add(channel);
        void channel.closed.then(() => channels.delete(channel));
        const failed = (e: unknown): void => {
          log(`the channel from ${channel.name} failed to start: ${e instanceof Error ? e.message : String(e)}`);
          void channel.close();
        };
        try {
          const started = opts.onChannel(channel);
          if (started instanceof Promise) started.catch(failed);
        } catch (e) {
          failed(e);
        }
        channel.start();
      },
      (error: ProtocolError) => {
        log(`refused a connection: ${error.message}`);
        closeWithError(ws, error);
      },
    );
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(Object.assign(new Error(`cannot listen on ${hostPort(opts.host ?? '0.0.0.0', opts.port)}: ${error.message}`, { cause: error }), { code: error.code }));
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => {
      server.off('error', onError);
      listening = true;
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;

  let closed: Promise<void> | null = null;
  return {
    host: bound.address,
    port: bound.port,
    address: hostPort(bound.address, bound.port),
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        const done = new Promise<void>((r) => server.close(() => r()));
        await Promise.all([...channels].map((c) => c.close()));
        for (const ws of sockets) ws.terminate();
        server.closeAllConnections();
        wss.close();
        await done;
      })();
      return closed;
    },
  };
}
