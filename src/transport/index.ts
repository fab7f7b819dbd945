/**
 * Ferry's transport: authenticated WebSocket channels between agents, and
 * between the CLI and agents. The agent, the coordinator and the CLI build
 * on this API only.
 *
 * Messages (frame.ts). Each layer declares its messages once, at load:
 *
 *     const PsRequest = defineMessage('ps.request', z.object({ all: z.boolean() }));
 *     const PsReply = defineMessage('ps.reply', z.object({ names: z.array(z.string()) }));
 *     type PsReply = Message<typeof PsReply>;
 *
 *   decodeFrame(buf, { maxBytes? }): Frame          throws only ProtocolError
 *   encodeFrame(msg, { maxBytes? }): Uint8Array     validates against the schema
 *
 * Listening (an agent):
 *
 *   listen({ host?, port, token, hostName, tls?, capabilities?, maxFrameBytes?, windowBytes?,
 *            heartbeatIntervalMs?, heartbeatTimeoutMs?, requestTimeoutMs?, handshakeTimeoutMs?,
 *            onChannel(channel), log? }): Promise<Server>
 *   Server: { host, port, address ("host:port"), close(): Promise<void> }
 *
 * Dialling (the CLI, or a source agent):
 *
 *   connect(address ("host:port"), { token, hostName, role: 'agent' | 'cli', tls?, timeoutMs?,
 *           capabilities?, maxFrameBytes?, windowBytes?, heartbeat…, requestTimeoutMs? }): Promise<Channel>
 *
 * Channel (channel.ts):
 *
 *   channel.peer: PeerInfo        host, role, ferryVersion, protocol, capabilities, address
 *   channel.name                  "agent host2 (10.0.0.2:7468)", for messages
 *   channel.send(msg): void
 *   channel.on(Def, (msg, channel) => void | Promise<void>)
 *   channel.request(msg, ExpectedReplyDef, timeoutMs?): Promise<Message<ExpectedReplyDef>>
 *   channel.handle(Def, (msg, channel) => reply | Promise<reply>)
 *   channel.openStream(name, meta?): StreamWriter
 *   channel.onStream(name, (reader, meta, channel) => void | Promise<void>, metaSchema?)
 *   channel.stats: ChannelStats, channel.isOpen
 *   channel.closed: Promise<ProtocolError | null>   (never rejects)
 *   channel.close(): Promise<void>
 *
 * Streams (stream.ts), credit-based back-pressure end to end:
 *
 *   writer.write(payload: Uint8Array, { zeros? }): Promise<void>   resolves once sent against credit
 *   writer.end(): Promise<void>      sends the sha256; resolves when the reader verified and processed it
 *   writer.abort(reason): void
 *   writer.maxChunkBytes, writer.stats: WriterStats (inFlight, maxInFlight, window, …)
 *   for await (const { payload, zeros } of reader) …    taking a chunk gives credit back;
 *                                                       a corrupt stream throws ProtocolError('CHECKSUM')
 *   reader.cancel(reason, code?), reader.stats, reader.name, reader.meta
 *
 * TLS (tls.ts): generateClusterCa(dir), issueCertificate(caDir, name, addresses, outDir),
 * serverTlsFromFiles(files, { requireClientCert }), clientTlsFromFiles(caCert, own?).
 *
 * Errors: ProtocolError with `code` (errors.ts) for everything the transport
 * detects; RemoteError with the peer's own `code` for a failed request.
 * Authentication: auth.ts (HMAC challenge-response; the token never travels).
 */
export {
  Channel,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type ChannelOptions,
  type ChannelStats,
  type MessageHandler,
  type RequestHandler,
  type StreamHandler,
} from './channel.js';
export { connect, parseAddress, type ConnectOptions } from './client.js';
export { PROTOCOL_ERROR_CODES, ProtocolError, RemoteError, type ProtocolErrorCode } from './errors.js';
export {
  DEFAULT_MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  decodeFrame,
  defineMessage,
  encodeFrame,
  type AnyMessage,
  type DataFrame,
  type Frame,
  type Message,
  type MessageDef,
  type Role,
} from './frame.js';
export { FERRY_VERSION, type PeerInfo } from './handshake.js';
export { DEFAULT_PORT, DEFAULT_WINDOW_BYTES, listen, type EndpointOptions, type ListenOptions, type Server } from './server.js';
export { StreamReader, StreamWriter, type ReaderStats, type StreamChunk, type WriterStats } from './stream.js';
export {
  clientTlsFromFiles,
  generateClusterCa,
  issueCertificate,
  serverTlsFromFiles,
  type CaFiles,
  type CertificateFiles,
  type ClientTlsOptions,
  type ServerTlsOptions,
} from './tls.js';
