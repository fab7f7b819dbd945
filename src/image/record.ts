/**
 * Record framing: the one encoding of typed records, used for entries.bin on
 * disk and, unchanged, for the live stream between agents.
 *
 * A record is a frame:
 *
 *     u32 LE  metaLength   length of the msgpack map that follows (1..16 MiB)
 *     u32 LE  dataLength   length of the raw bytes after it (0..64 MiB)
 *     metaLength bytes     msgpack: one map {type: string, v: integer, ...fields}
 *     dataLength bytes     raw payload (page data); empty for entries
 *
 * Frames follow one another with no index and no seeking back, so a writer can
 * produce them as it goes and a reader can consume them as they arrive.
 * Page data travels as a raw payload (not as a msgpack bin inside the map) so
 * that megabytes of pages are never copied through the msgpack encoder: the
 * head (prefix + meta) and the payload can go out as two buffers (writev, or
 * two WebSocket sends).
 */
import { Packr, Unpackr } from 'msgpackr';
import {
  MAX_RECORD_DATA_BYTES,
  MAX_RECORD_META_BYTES,
  RECORD_PREFIX_BYTES,
} from './constants.js';
import { ImageError } from './errors.js';

/** The decoded msgpack map of a record. */
export interface RecordMeta {
  type: string;
  v: number;
  [field: string]: unknown;
}

export interface DecodedRecord {
  meta: RecordMeta;
  /** The raw payload; a view into the input (empty when dataLength is 0). */
  data: Buffer;
  /** Offset of the frame's first byte in the input (or the stream). */
  start: number;
  /** Offset just past the frame. */
  end: number;
}

/** Where a record came from, for error messages. */
export interface RecordSource {
  /** A file name ("entries.bin") or a stream name ("stream from host2"). */
  file?: string;
  /** Offset of the input buffer's byte 0 within that file or stream. */
  base?: number;
}

/** Record type names: lower case, digits, '.', '_' and '-', at most 64 characters. */
export const RECORD_TYPE_PATTERN = /^[a-z][a-z0-9._-]{0,63}$/;
/** Record versions are integers 1..2^31-1. */
export const MAX_RECORD_VERSION = 0x7fffffff;

// Plain msgpack (no msgpackr records/structures extension) so that images can
// be read by any msgpack implementation. bigint round-trips as int64/uint64.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({
  useRecords: false,
  moreTypes: false,
  mapsAsObjects: true,
  int64AsType: 'bigint',
  copyBuffers: true,
});

function where(src: RecordSource | undefined, offset: number): string {
  const file = src?.file ?? 'record stream';
  return `${file} at byte ${(src?.base ?? 0) + offset}`;
}

function fail(reason: 'truncated' | 'bad-entry', src: RecordSource | undefined, offset: number, what: string, cause?: unknown): never {
  throw new ImageError(reason, `${where(src, offset)}: ${what}`, {
    file: src?.file ?? 'record stream',
    offset: (src?.base ?? 0) + offset,
    cause,
  });
}

/** Checks the shape every record meta has; throws ImageError('bad-entry'). */
export function checkRecordMeta(meta: unknown, src?: RecordSource, offset = 0): asserts meta is RecordMeta {
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || Object.getPrototypeOf(meta) !== Object.prototype) {
    fail('bad-entry', src, offset, `record is not a map (got ${describe(meta)})`);
  }
  const m = meta as Record<string, unknown>;
  if (typeof m.type !== 'string' || !RECORD_TYPE_PATTERN.test(m.type)) {
    fail('bad-entry', src, offset, `record has no valid "type" (got ${describe(m.type)})`);
  }
  if (typeof m.v !== 'number' || !Number.isInteger(m.v) || m.v < 1 || m.v > MAX_RECORD_VERSION) {
    fail('bad-entry', src, offset, `record "${m.type}" has no valid version "v" (got ${describe(m.v)})`);
  }
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (typeof x === 'string') return JSON.stringify(x.length > 40 ? x.slice(0, 40) + '…' : x);
  if (typeof x === 'number' || typeof x === 'bigint' || typeof x === 'boolean') return String(x);
  if (typeof x === 'object') return x.constructor?.name ?? 'an object';
  return typeof x;
}

/**
 * Encodes the head of a record: the 8-byte prefix and the msgpack meta.
 * Send `dataLength` bytes of payload right after it.
 */
export function encodeRecordHead(meta: RecordMeta, dataLength = 0): Buffer {
  checkRecordMeta(meta);
  if (!Number.isInteger(dataLength) || dataLength < 0 || dataLength > MAX_RECORD_DATA_BYTES) {
    throw new RangeError(`record payload of ${dataLength} bytes (the limit is ${MAX_RECORD_DATA_BYTES})`);
  }
  const body = packr.pack(meta);
  if (body.length > MAX_RECORD_META_BYTES) {
    throw new RangeError(`record "${meta.type}" encodes to ${body.length} bytes (the limit is ${MAX_RECORD_META_BYTES})`);
  }
  const head = Buffer.allocUnsafe(RECORD_PREFIX_BYTES + body.length);
  head.writeUInt32LE(body.length, 0);
  head.writeUInt32LE(dataLength, 4);
  body.copy(head, RECORD_PREFIX_BYTES);
  return head;
}

/** Encodes a whole record into one buffer (copies `data`; use encodeRecordHead for large payloads). */
export function encodeRecord(meta: RecordMeta, data?: Uint8Array): Buffer {
  const head = encodeRecordHead(meta, data?.length ?? 0);
  return data && data.length > 0 ? Buffer.concat([head, data]) : head;
}

/**
 * Reads a frame prefix at `offset`. Returns the total frame length, or null if
 * fewer than 8 bytes are available. Throws ImageError('bad-entry') on lengths
 * out of bounds.
 */
export function recordFrameLength(buf: Uint8Array, offset = 0, src?: RecordSource): number | null {
  if (buf.length - offset < RECORD_PREFIX_BYTES) return null;
  const dv = new DataView(buf.buffer, buf.byteOffset + offset, RECORD_PREFIX_BYTES);
  const metaLength = dv.getUint32(0, true);
  const dataLength = dv.getUint32(4, true);
  if (metaLength < 1 || metaLength > MAX_RECORD_META_BYTES) {
    fail('bad-entry', src, offset, `record header gives a meta length of ${metaLength} bytes (1..${MAX_RECORD_META_BYTES} allowed)`);
  }
  if (dataLength > MAX_RECORD_DATA_BYTES) {
    fail('bad-entry', src, offset, `record header gives a payload of ${dataLength} bytes (at most ${MAX_RECORD_DATA_BYTES} allowed)`);
  }
  return RECORD_PREFIX_BYTES + metaLength + dataLength;
}

function decodeFrame(buf: Uint8Array, offset: number, total: number, src?: RecordSource): DecodedRecord {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const metaLength = b.readUInt32LE(offset);
  const metaStart = offset + RECORD_PREFIX_BYTES;
  let meta: unknown;
  try {
    meta = unpackr.unpack(b.subarray(metaStart, metaStart + metaLength));
  } catch (e) {
    fail('bad-entry', src, offset, `record meta is not valid msgpack (${(e as Error)?.message ?? String(e)})`, e);
  }
  checkRecordMeta(meta, src, offset);
  return { meta, data: b.subarray(metaStart + metaLength, offset + total), start: offset, end: offset + total };
}

/**
 * Decodes the record at `offset` of a complete buffer (a whole file, or a
 * message known to hold whole records). Throws ImageError: 'truncated' when the
 * buffer ends inside the frame, 'bad-entry' when the frame is malformed.
 */
export function decodeRecord(buf: Uint8Array, offset = 0, src?: RecordSource): DecodedRecord {
  const total = recordFrameLength(buf, offset, src);
  if (total === null) {
    fail('truncated', src, offset, `ends inside a record header (${buf.length - offset} of ${RECORD_PREFIX_BYTES} bytes)`);
  }
  if (buf.length - offset < total) {
    fail('truncated', src, offset, `ends inside a record (${buf.length - offset} of ${total} bytes present)`);
  }
  return decodeFrame(buf, offset, total, src);
}

/** Decodes every record of a complete buffer, in order. */
export function* decodeRecords(buf: Uint8Array, src?: RecordSource): Generator<DecodedRecord> {
  let offset = 0;
  while (offset < buf.length) {
    const r = decodeRecord(buf, offset, src);
    offset = r.end;
    yield r;
  }
}

/**
 * Incremental decoder for a byte stream cut into arbitrary chunks (a socket,
 * a file read in pieces). push() returns the records completed by the chunk;
 * end() throws ImageError('truncated') if the stream stopped inside a record.
 * After an error the decoder stays failed. Payloads may be views into pushed
 * chunks: do not reuse a chunk's memory after pushing it.
 */
export class RecordDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need: number | null = null;
  private consumed = 0;
  private failure: unknown = null;

  constructor(private readonly src: RecordSource = {}) {}

  /** Bytes of the stream fully decoded so far. */
  get position(): number {
    return this.consumed;
  }

  push(chunk: Uint8Array): DecodedRecord[] {
    if (this.failure) throw this.failure;
    try {
      return this.pushInner(chunk);
    } catch (e) {
      this.failure = e;
      throw e;
    }
  }

  end(): void {
    if (this.failure) throw this.failure;
    if (this.buffered > 0) {
      this.failure = new ImageError(
        'truncated',
        `${where(this.src, this.consumed)}: stream ended inside a record (${this.buffered} bytes of ${this.need ?? 'at least ' + RECORD_PREFIX_BYTES} received)`,
        { file: this.src.file ?? 'record stream', offset: (this.src.base ?? 0) + this.consumed },
      );
      throw this.failure;
    }
  }

  private pushInner(chunk: Uint8Array): DecodedRecord[] {
    if (chunk.length > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.length;
    }
    const out: DecodedRecord[] = [];
    const src: RecordSource = { file: this.src.file ?? 'record stream', base: (this.src.base ?? 0) + this.consumed };
    for (;;) {
      src.base = (this.src.base ?? 0) + this.consumed;
      if (this.need === null) {
        if (this.buffered < RECORD_PREFIX_BYTES) break;
        this.need = recordFrameLength(this.take(RECORD_PREFIX_BYTES, false), 0, src);
      }
      if (this.need === null || this.buffered < this.need) break;
      const frame = this.take(this.need, true);
      const r = decodeFrame(frame, 0, this.need, src);
      r.start += src.base;
      r.end += src.base;
      out.push(r);
      this.consumed += this.need;
      this.need = null;
    }
    return out;
  }

  /** Returns the first n buffered bytes as one buffer, removing them if `consume`. */
  private take(n: number, consume: boolean): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (consume) {
        if (first.length === n) this.chunks.shift();
        else this.chunks[0] = first.subarray(n);
      }
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      let i = 0;
      while (filled < n) {
        const c = this.chunks[i]!;
        const k = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, k);
        filled += k;
        if (consume) {
          if (k === c.length) {
            this.chunks.shift();
          } else {
            this.chunks[0] = c.subarray(k);
          }
        } else {
          i++;
        }
      }
    }
    if (consume) this.buffered -= n;
    return out;
  }
}
