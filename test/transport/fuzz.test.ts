/**
 * Fuzzing the decoder and a live server with seeded random input. A failure
 * prints its seed; replay it with FERRY_FUZZ_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { PROTOCOL_ERROR_CODES, ProtocolError } from '../../src/transport/errors.js';
import {
  Abort,
  Auth,
  Cancel,
  Credit,
  Done,
  End,
  ErrorFrame,
  Hello,
  Open,
  Ready,
  Reply,
  Request,
  decodeFrame,
  encodeData,
  encodeFrame,
  messageDef,
  type AnyMessage,
  type Frame,
} from '../../src/transport/frame.js';
import { Echo, EchoReply, Note, RawPeer, assertServes, pack, prng, startServer, useCleanup } from './helpers.js';

const SEED = process.env.FERRY_FUZZ_SEED ? Number(process.env.FERRY_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 32);
const MAX_BYTES = 64 * 1024;

const nonce = new Uint8Array(32).fill(1);
/** One valid frame of every kind. */
const VALID: Uint8Array[] = [
  encodeFrame(Hello.make({ v: 1, ferry: '0.1.0', host: 'h', role: 'agent', caps: ['a'], nonce, maxFrame: 1 << 20, window: 1 << 20 })),
  encodeFrame(Auth.make({ proof: nonce })),
  encodeFrame(Ready.make({})),
  encodeFrame(ErrorFrame.make({ code: 'AUTH', message: 'no' })),
  encodeFrame(Request.make({ id: 1, msg: Echo.make({ text: 'x' }) })),
  encodeFrame(Reply.make({ id: 1, msg: EchoReply.make({ text: 'y' }) })),
  encodeFrame(Reply.make({ id: 2, error: { code: 'E', message: 'm' } })),
  encodeFrame(Open.make({ s: 1, name: 'sink', meta: { a: 1 } })),
  encodeFrame(Credit.make({ s: 1, bytes: 100 })),
  encodeFrame(End.make({ s: 1, chunks: 1, bytes: 3, zeros: 0, sha256: nonce })),
  encodeFrame(Abort.make({ s: 1, reason: 'r' })),
  encodeFrame(Cancel.make({ s: 1, code: 'ABORTED', message: 'c' })),
  encodeFrame(Done.make({ s: 1 })),
  encodeFrame(Note.make({ n: 5 })),
  encodeData(1, 0, new Uint8Array([1, 2, 3]), 0),
  encodeData(1, 1, new Uint8Array(40), 7),
];
const TYPES = [...VALID.map((v) => (decodeFrame(v) as Frame).t), 'nope', ''];

class Fuzzer {
  constructor(readonly random: () => number) {}

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)]!;
  }

  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(256));
  }

  /** A random msgpack-able value, nested up to `depth`. */
  value(depth: number): unknown {
    switch (this.int(depth > 0 ? 10 : 7)) {
      case 0:
        return null;
      case 1:
        return this.random() < 0.5;
      case 2:
        return this.pick([0, 1, -1, 255, 65536, 2 ** 32, 2 ** 53, -(2 ** 40), 0.5, NaN, Infinity]);
      case 3:
        return this.pick(['', 'a', 't', 'data', 'x'.repeat(this.int(300))]);
      case 4:
        return this.bytes(this.int(64));
      case 5:
        return BigInt(this.int(2 ** 31)) * 2n ** 33n;
      case 6:
        return this.int(1000);
      case 7:
        return Array.from({ length: this.int(5) }, () => this.value(depth - 1));
      default:
        return this.object(depth - 1);
    }
  }

  object(depth: number): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    for (let i = this.int(6); i > 0; i--) {
      const key = this.pick(['t', 's', 'n', 'p', 'z', 'v', 'id', 'msg', 'error', 'code', 'name', 'meta', 'bytes', 'nonce', '__proto__']);
      // An own property, even for '__proto__': a peer can send that key, and it must not reach a prototype.
      Object.defineProperty(o, key, { value: this.value(depth), enumerable: true, writable: true, configurable: true });
    }
    return o;
  }

  /** One input for the decoder, and how it was made (for the failure message). */
  input(): { how: string; buf: Uint8Array } {
    const valid = this.pick(VALID);
    switch (this.int(6)) {
      case 0:
        return { how: 'random bytes', buf: this.bytes(this.int(200)) };
      case 1:
        return { how: 'truncated', buf: valid.subarray(0, this.int(valid.length)) };
      case 2: {
        const buf = Uint8Array.from(valid);
        for (let i = 1 + this.int(8); i > 0; i--) buf[this.int(buf.length)]! ^= 1 << this.int(8);
        return { how: 'bit flips', buf };
      }
      case 3: {
        const at = this.int(valid.length);
        const extra = this.bytes(1 + this.int(8));
        return { how: 'bytes inserted', buf: Uint8Array.from([...valid.subarray(0, at), ...extra, ...valid.subarray(at)]) };
      }
      case 4: {
        const o = this.object(3);
        o.t = this.pick(TYPES);
        return { how: 'random fields for a known type', buf: pack(o) };
      }
      default:
        return { how: 'random value', buf: pack(this.value(4)) };
    }
  }
}

function hex(buf: Uint8Array): string {
  return Buffer.from(buf.subarray(0, 96)).toString('hex') + (buf.length > 96 ? '…' : '');
}

/** What decodeFrame may return: a data frame with sane fields, or a message that passes its schema again. */
function assertValidFrame(frame: Frame): void {
  if (frame.t === 'data') {
    const d = frame as Frame & { s: number; n: number; p: Uint8Array; z: number };
    assert.ok(Number.isSafeInteger(d.s) && d.s >= 0 && Number.isSafeInteger(d.n) && d.n >= 0 && Number.isSafeInteger(d.z) && d.z >= 0);
    assert.ok(d.p instanceof Uint8Array);
    return;
  }
  assert.ok(messageDef(frame.t), `decoded an unregistered type ${frame.t}`);
  encodeFrame(frame as AnyMessage, { maxBytes: 1 << 24 });
}

describe('transport: fuzzing', () => {
  useCleanup();

  it(`decodeFrame returns a valid frame or throws ProtocolError, for 20000 random inputs (seed ${SEED})`, () => {
    const fuzz = new Fuzzer(prng(SEED));
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const { how, buf } = fuzz.input();
      try {
        let frame: Frame;
        try {
          frame = decodeFrame(buf, { maxBytes: MAX_BYTES });
        } catch (e) {
          assert.ok(e instanceof ProtocolError, `threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
          assert.ok(PROTOCOL_ERROR_CODES.includes(e.code), `unknown code ${e.code}`);
          assert.ok(e.message.length > 0);
          outcomes.set(e.code, (outcomes.get(e.code) ?? 0) + 1);
          continue;
        }
        assertValidFrame(frame);
        assert.equal(Object.getPrototypeOf(frame), Object.prototype);
        outcomes.set('valid', (outcomes.get('valid') ?? 0) + 1);
      } catch (e) {
        throw new Error(`fuzz seed ${SEED}, input #${i} (${how}: ${hex(buf)}): ${(e as Error).message}`, { cause: e });
      }
    }
    // The inputs reach past the msgpack layer into the schemas.
    for (const code of ['valid', 'MALFORMED', 'BAD_FIELDS', 'UNKNOWN_TYPE']) assert.ok((outcomes.get(code) ?? 0) > 0, `no ${code} outcome (seed ${SEED}): ${[...outcomes]}`);
  });

  it(`a live server closes connections fed random frames and keeps serving (seed ${SEED})`, async () => {
    const fuzz = new Fuzzer(prng(SEED ^ 0x5a5a5a5a));
    const s = await startServer({ windowBytes: MAX_BYTES });
    for (let i = 0; i < 40; i++) {
      const inputs = Array.from({ length: 1 + fuzz.int(3) }, () => fuzz.input());
      const authenticated = i % 2 === 1;
      try {
        const raw = await RawPeer.connect(s.address);
        if (authenticated) await raw.handshake();
        for (const { buf } of inputs) raw.send(buf);
        if (authenticated) {
          // Either the server closed the channel, or it still answers.
          raw.send(pack({ t: 'req', id: 1_000_000, msg: { t: 'test.echo', text: 'alive?' } }));
          const result = await Promise.race([raw.expect('res').then(() => 'answered'), raw.closed.then(() => 'closed')]);
          if (result === 'answered') raw.ws.close();
        } else {
          // Before authentication every path ends in a refusal: a zero proof is never right.
          raw.send(pack({ t: 'auth', proof: new Uint8Array(32) }));
        }
        const closed = await raw.closed;
        const error = raw.frames.find((f) => f.t === 'error') as AnyMessage | undefined;
        if (error) assert.ok(PROTOCOL_ERROR_CODES.includes(error.code as never), `error frame with code ${String(error.code)}`);
        assert.ok(closed.code !== 1006 || authenticated, 'the server dropped the connection without saying why');
      } catch (e) {
        throw new Error(`fuzz seed ${SEED}, connection #${i} (${inputs.map((x) => `${x.how}: ${hex(x.buf)}`).join('; ')}): ${(e as Error).message}`, { cause: e });
      }
    }
    await assertServes(s.address);
    assert.ok(s.logs.length <= 20, `more than one log line per refused connection:\n${s.logs.join('\n')}`);
  });
});
