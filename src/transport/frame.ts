/**
 * Framing: every WebSocket message is one binary msgpack frame.
 *
 * Control frames are maps `{ t: <type>, ...fields }` whose fields are checked
 * against a zod schema registered for the type. The layers above declare
 * their own messages once, at module load:
 *
 *     export const PsRequest = defineMessage('ps.request', z.object({ all: z.boolean() }));
 *     export type PsRequest = Message<typeof PsRequest>;
 *     channel.send(PsRequest.make({ all: true }));
 *
 * Data frames (`t: 'data'`) carry stream pages: a stream id `s`, a sequence
 * number `n`, a payload `p` and optionally `z`, a count of zero pages that
 * travel as a number instead of bytes. They skip zod (they are the page path)
 * and are checked by hand.
 *
 * decodeFrame() is the only door for bytes from the network: it returns a
 * frame whose fields passed their schema, or throws a ProtocolError, never
 * anything else.
 */
import { Packr, Unpackr } from 'msgpackr';
import { z } from 'zod';
import { ProtocolError } from './errors.js';

/** Bumped on any change a peer of the previous version would misread. The hello frame keeps `t` and `v` forever. */
export const PROTOCOL_VERSION = 1;

export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** The smallest frame limit and stream window a peer may announce: below this nothing useful fits. */
export const MIN_FRAME_BYTES = 64 * 1024;
/** Room in a data frame for everything but the payload. */
export const DATA_FRAME_OVERHEAD = 64;

/** Message type names: lower case, digits, '.', '_' and '-', at most 64 characters. */
export const MESSAGE_TYPE_PATTERN = /^[a-z][a-z0-9._-]{0,63}$/;

// Plain msgpack: msgpackr's records extension would make frames depend on
// state shared between the two ends. bigint fields round-trip as int64.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: 'bigint' });

/** A schema for a message's fields (without `t`): any zod schema whose output is an object. */
export type FieldsSchema = z.ZodType<Record<string, unknown>>;

export type MessageOf<T extends string, S extends FieldsSchema> = { t: T } & z.output<S>;

/** The TypeScript type of a message declared with defineMessage: `Message<typeof PsRequest>`. */
export type Message<D extends { readonly __message: unknown }> = D['__message'];

/** Any control message. Narrow it with `SomeMessage.is(m)`. */
export interface AnyMessage {
  t: string;
  [field: string]: unknown;
}

export class MessageDef<T extends string = string, S extends FieldsSchema = FieldsSchema> {
  /** Phantom: the message's TypeScript type. Use `Message<typeof X>`. */
  declare readonly __message: MessageOf<T, S>;

  constructor(
    readonly type: T,
    readonly fields: S,
    /** Frames of the transport itself: never inside a request or a reply, never handled by the layers above. */
    readonly internal: boolean,
  ) {}

  /** Builds a message from its fields (validated when it is sent). */
  make(fields: z.input<S>): MessageOf<T, S> {
    return { ...(fields as object), t: this.type } as MessageOf<T, S>;
  }

  is(m: { t: string }): m is MessageOf<T, S> {
    return m.t === this.type;
  }
}

export type AnyMessageDef = MessageDef<string, FieldsSchema>;

const registry = new Map<string, AnyMessageDef>();

function register<const T extends string, S extends FieldsSchema>(type: T, fields: S, internal: boolean): MessageDef<T, S> {
  if (!MESSAGE_TYPE_PATTERN.test(type)) throw new Error(`message type ${JSON.stringify(type)} must match ${MESSAGE_TYPE_PATTERN}`);
  if (registry.has(type)) throw new Error(`message type '${type}' is already defined${registry.get(type)!.internal ? ' by the transport' : ''}`);
  const def = new MessageDef(type, fields, internal);
  registry.set(type, def as unknown as AnyMessageDef);
  return def;
}

/**
 * Declares a message type of a layer above the transport. The field `t` is
 * added by the transport; the schema describes the rest. Unknown fields are
 * dropped on receipt (zod's default), so a newer peer may add optional fields.
 */
export function defineMessage<const T extends string, S extends FieldsSchema>(type: T, fields: S): MessageDef<T, S> {
  return register(type, fields, false);
}

/** The definition registered for `type`, if any. */
export function messageDef(type: string): AnyMessageDef | undefined {
  return registry.get(type);
}

// ---- the transport's own frames -------------------------------------------------

const uint = z.number().int().nonnegative();
const bytes32 = z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.byteLength === 32, 'expected 32 bytes');
const anyObject = z.custom<AnyMessage>((v) => isPlainObject(v) && typeof v.t === 'string', 'expected a message (a map with a string "t")');

export const ROLES = ['agent', 'cli'] as const;
export type Role = (typeof ROLES)[number];

/** Both ends send a hello first. `nonce` is the sender's half of the authentication challenge. */
export const Hello = register(
  'hello',
  z.object({
    v: z.number().int(),
    ferry: z.string().max(64),
    host: z.string().min(1).max(255),
    role: z.enum(ROLES),
    caps: z.array(z.string().min(1).max(64)).max(256),
    nonce: bytes32,
    /** The largest frame this end accepts. */
    maxFrame: uint.min(MIN_FRAME_BYTES),
    /** The credit each stream towards this end starts with. */
    window: uint.min(MIN_FRAME_BYTES),
  }),
  true,
);
/** HMAC proof of the token (auth.ts): first the client's, then, if that was right, the server's. */
export const Auth = register('auth', z.object({ proof: bytes32 }), true);
/** The client accepted the server's proof: the channel is open. */
export const Ready = register('ready', z.object({}), true);
/** Why the sender is about to close the connection. */
export const ErrorFrame = register('error', z.object({ code: z.string().max(64), message: z.string().max(4096) }), true);
export const Request = register('req', z.object({ id: uint, msg: anyObject }), true);
export const Reply = register(
  'res',
  z.union([
    z.object({ id: uint, msg: anyObject }),
    z.object({ id: uint, error: z.object({ code: z.string().max(64), message: z.string().max(4096) }) }),
  ]),
  true,
);
/** Writer → reader: a new stream. Ids increase on each side, starting at 1. */
export const Open = register('open', z.object({ s: uint.min(1), name: z.string().min(1).max(200), meta: z.record(z.string(), z.unknown()) }), true);
/** Reader → writer: the reader's consumer took `bytes` more. */
export const Credit = register('credit', z.object({ s: uint, bytes: uint.min(1) }), true);
/** Writer → reader: no more data; what the reader must have seen. */
export const End = register('end', z.object({ s: uint, chunks: uint, bytes: uint, zeros: uint, sha256: bytes32 }), true);
/** Writer → reader: the writer gave up. */
export const Abort = register('abort', z.object({ s: uint, reason: z.string().max(4096) }), true);
/** Reader → writer: the reader gave up (or found a bad checksum). */
export const Cancel = register('cancel', z.object({ s: uint, code: z.string().max(64), message: z.string().max(4096) }), true);
/** Reader → writer: everything arrived, matched the checksum and was consumed. */
export const Done = register('done', z.object({ s: uint }), true);

export interface DataFrame {
  t: 'data';
  /** Stream id. */
  s: number;
  /** Sequence number within the stream, from 0. */
  n: number;
  p: Uint8Array;
  /** Zero pages this chunk stands for, beyond its payload. */
  z: number;
}

export type Frame = DataFrame | AnyMessage;

export function isData(f: Frame): f is DataFrame {
  return f.t === 'data';
}

// ---- encoding ----------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function issues(err: z.ZodError): string {
  const list = err.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.map(String).join('.') : '(fields)'}: ${i.message}`);
  if (err.issues.length > 5) list.push(`and ${err.issues.length - 5} more`);
  return list.join('; ');
}

function mib(n: number): string {
  return n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n} bytes`;
}

/**
 * Checks a message against its registered schema and returns it as parsed
 * (unknown fields dropped). `nested` is set for the message inside a request
 * or reply, where only the layers' own messages may travel.
 */
function checkMessage(raw: Record<string, unknown>, nested: boolean): AnyMessage {
  const t = raw.t;
  if (typeof t !== 'string') throw new ProtocolError('MALFORMED', 'frame has no string field "t"');
  const def = registry.get(t);
  if (!def) throw new ProtocolError('UNKNOWN_TYPE', `unknown message type ${JSON.stringify(t.slice(0, 80))}`);
  if (nested && def.internal) throw new ProtocolError('BAD_FIELDS', `transport frame '${t}' cannot travel inside a request or reply`);
  const { t: _t, ...rest } = raw;
  let r: ReturnType<typeof def.fields.safeParse>;
  try {
    r = def.fields.safeParse(rest);
  } catch (e) {
    // A layer's refinement or transform that throws on odd input is still the peer's bad fields, not a crash.
    throw new ProtocolError('BAD_FIELDS', `message '${t}' has bad fields: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (!r.success) throw new ProtocolError('BAD_FIELDS', `message '${t}' has bad fields: ${issues(r.error)}`, { cause: r.error });
  const msg: AnyMessage = { ...r.data, t };
  if (t === Request.type || t === Reply.type) {
    const inner = (msg as { msg?: Record<string, unknown> }).msg;
    if (inner !== undefined) {
      try {
        msg.msg = checkMessage(inner, true);
      } catch (e) {
        const err = e as ProtocolError;
        throw new ProtocolError(err.code, `${t === Request.type ? 'request' : 'reply'} ${msg.id}: ${err.message}`, { cause: err });
      }
    }
  }
  return msg;
}

export interface FrameLimits {
  /** Frames larger than this are refused (default 16 MiB). */
  maxBytes?: number;
}

/** Validates a control message and encodes it. Throws ProtocolError (UNKNOWN_TYPE, BAD_FIELDS, TOO_LARGE). */
export function encodeFrame(msg: AnyMessage, limits: FrameLimits = {}): Uint8Array {
  if (msg.t === 'data') throw new ProtocolError('BAD_FIELDS', 'data frames are encoded with encodeData()');
  checkMessage(msg as Record<string, unknown>, false);
  return sized(packr.pack(msg), limits, `message '${msg.t}'`);
}

/** Encodes a stream data frame (checked by its caller, the stream writer). */
export function encodeData(s: number, n: number, payload: Uint8Array, zeros: number, limits: FrameLimits = {}): Uint8Array {
  const frame: Record<string, unknown> = { t: 'data', s, n, p: payload };
  if (zeros) frame.z = zeros;
  return sized(packr.pack(frame), limits, `data frame of stream ${s}`);
}

function sized(buf: Uint8Array, limits: FrameLimits, what: string): Uint8Array {
  const max = limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (buf.byteLength > max) throw new ProtocolError('TOO_LARGE', `${what} encodes to ${buf.byteLength} bytes, more than the ${mib(max)} limit`);
  return buf;
}

// ---- decoding ----------------------------------------------------------------------

/** A hello from a peer of another protocol version: its `v` is read before anything else in it. */
export class VersionMismatch extends ProtocolError {
  constructor(readonly peerVersion: number) {
    super('VERSION', `peer speaks protocol ${peerVersion}, this Ferry speaks ${PROTOCOL_VERSION}`);
  }
}

/**
 * Decodes one frame. Returns a data frame or a control message whose fields
 * passed their schema; throws only ProtocolError: MALFORMED, UNKNOWN_TYPE,
 * BAD_FIELDS, TOO_LARGE, or VERSION (a VersionMismatch) for a hello of
 * another protocol version.
 */
export function decodeFrame(buf: unknown, limits: FrameLimits = {}): Frame {
  if (!(buf instanceof Uint8Array)) throw new ProtocolError('MALFORMED', 'a frame must be binary');
  const max = limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (buf.byteLength > max) throw new ProtocolError('TOO_LARGE', `frame of ${buf.byteLength} bytes is larger than the ${mib(max)} limit`);
  if (buf.byteLength === 0) throw new ProtocolError('MALFORMED', 'empty frame');
  let raw: unknown;
  try {
    raw = unpackr.unpack(buf);
  } catch (e) {
    throw new ProtocolError('MALFORMED', `not a msgpack frame (${e instanceof Error ? e.message : String(e)})`, { cause: e });
  }
  if (!isPlainObject(raw)) throw new ProtocolError('MALFORMED', `a frame must be a msgpack map, got ${describe(raw)}`);
  if (raw.t === 'data') return checkData(raw);
  if (raw.t === Hello.type && raw.v !== PROTOCOL_VERSION && typeof raw.v === 'number' && Number.isInteger(raw.v)) throw new VersionMismatch(raw.v);
  return checkMessage(raw, false);
}

function checkData(raw: Record<string, unknown>): DataFrame {
  const { s, n, p, z: zeros } = raw;
  if (!isUint(s) || !isUint(n) || !(p instanceof Uint8Array) || (zeros !== undefined && !isUint(zeros))) {
    throw new ProtocolError('BAD_FIELDS', 'data frame needs s and n (non-negative integers), p (bytes) and optionally z (a non-negative integer)');
  }
  return { t: 'data', s, n, p, z: zeros ?? 0 };
}

function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof Date) return 'a timestamp';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}
