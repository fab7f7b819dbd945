import assert from 'node:assert/strict';
import { z } from 'zod';
import { ProtocolError } from '../../src/transport/errors.js';
import { Hello, VersionMismatch, decodeFrame, defineMessage, encodeData, encodeFrame, isData, type DataFrame } from '../../src/transport/frame.js';
import { Echo, EchoReply, pack } from './helpers.js';

const Picky = defineMessage(
  'test.picky',
  z.object({
    when: z.string().transform((s) => {
      if (s === 'boom') throw new Error('the transform exploded');
      return s;
    }),
  }),
);

function decodeError(buf: unknown, limit?: number): ProtocolError {
  try {
    decodeFrame(buf, limit === undefined ? {} : { maxBytes: limit });
  } catch (e) {
    assert.ok(e instanceof ProtocolError, String(e));
    return e;
  }
  assert.fail('decoded');
}

describe('transport: frames', () => {
  it('round-trips messages, requests and replies, dropping unknown fields', () => {
    assert.deepEqual(decodeFrame(encodeFrame(Echo.make({ text: 'hi' }))), { t: 'test.echo', text: 'hi' });
    assert.deepEqual(decodeFrame(pack({ t: 'test.echo', text: 'hi', added: 'in a later version' })), { t: 'test.echo', text: 'hi' });
    const req = decodeFrame(encodeFrame({ t: 'req', id: 4, msg: Echo.make({ text: 'q' }) }));
    assert.deepEqual(req, { t: 'req', id: 4, msg: { t: 'test.echo', text: 'q' } });
    const res = decodeFrame(encodeFrame({ t: 'res', id: 4, error: { code: 'E', message: 'no' } }));
    assert.deepEqual(res, { t: 'res', id: 4, error: { code: 'E', message: 'no' } });
    assert.ok(Echo.is(Echo.make({ text: '' })) && !EchoReply.is(Echo.make({ text: '' })));
  });

  it('round-trips data frames, zero pages as a count', () => {
    const frame = decodeFrame(encodeData(3, 9, new Uint8Array([1, 2, 3]), 512));
    assert.ok(isData(frame));
    const d = frame as DataFrame;
    assert.deepEqual([d.s, d.n, [...d.p], d.z], [3, 9, [1, 2, 3], 512]);
    assert.equal((decodeFrame(encodeData(1, 0, new Uint8Array(0), 0)) as DataFrame).z, 0);
  });

  it('says what is wrong with a frame', () => {
    const cases: [unknown, string, RegExp][] = [
      ['text', 'MALFORMED', /a frame must be binary/],
      [new Uint8Array(0), 'MALFORMED', /empty frame/],
      [new Uint8Array([0x92, 0x01]), 'MALFORMED', /not a msgpack frame/],
      [pack([1, 2]), 'MALFORMED', /a frame must be a msgpack map, got an array/],
      [Buffer.concat([pack({ t: 'test.echo', text: 'a' }), Buffer.from([1])]), 'MALFORMED', /not a msgpack frame/],
      [pack({ text: 'no type' }), 'MALFORMED', /frame has no string field "t"/],
      [pack({ t: 'migrate.start' }), 'UNKNOWN_TYPE', /unknown message type "migrate\.start"/],
      [pack({ t: 'test.echo', text: 7 }), 'BAD_FIELDS', /message 'test\.echo' has bad fields: text: /],
      [pack({ t: 'req', id: 1, msg: { t: 'test.echo' } }), 'BAD_FIELDS', /request 1: message 'test\.echo' has bad fields: text/],
      [pack({ t: 'req', id: 1, msg: { t: 'hello' } }), 'BAD_FIELDS', /transport frame 'hello' cannot travel inside a request/],
      [pack({ t: 'data', s: 1, n: -1, p: new Uint8Array(1) }), 'BAD_FIELDS', /data frame needs s and n/],
      [pack({ t: 'data', s: 1, n: 0, p: 'not bytes' }), 'BAD_FIELDS', /data frame needs/],
      [pack({ t: 'test.picky', when: 'boom' }), 'BAD_FIELDS', /message 'test\.picky' has bad fields: the transform exploded/],
    ];
    for (const [buf, code, message] of cases) {
      const e = decodeError(buf);
      assert.equal(e.code, code, `${e.message}`);
      assert.match(e.message, message);
    }
    assert.deepEqual(decodeFrame(encodeFrame(Picky.make({ when: 'now' }))), { t: 'test.picky', when: 'now' });
  });

  it('refuses a frame above the limit before decoding it', () => {
    const e = decodeError(encodeData(1, 0, new Uint8Array(2048), 0), 1024);
    assert.equal(e.code, 'TOO_LARGE');
    assert.match(e.message, /frame of \d+ bytes is larger than the 1024 bytes limit/);
    assert.throws(() => encodeData(1, 0, new Uint8Array(2048), 0, { maxBytes: 1024 }), { code: 'TOO_LARGE' });
  });

  it('reads the version of a hello before its other fields', () => {
    const e = decodeError(pack({ t: 'hello', v: 2, fields: 'of another era' }));
    assert.ok(e instanceof VersionMismatch);
    assert.equal(e.code, 'VERSION');
    assert.equal(e.peerVersion, 2);
    assert.equal(decodeError(pack({ t: 'hello', v: 1 })).code, 'BAD_FIELDS');
  });

  it('never lets a "__proto__" key from a peer reach a prototype', () => {
    const str = (s: string) => [0xa0 + s.length, ...Buffer.from(s)];
    const map = (entries: number[][]) => [0x80 + entries.length / 2, ...entries.flat()];
    const proto = map([str('text'), str('x')]);
    // { t: 'test.echo', __proto__: { text: 'x' } }: text must not be inherited.
    const inherited = decodeError(Buffer.from(map([str('t'), str('test.echo'), str('__proto__'), proto])));
    assert.equal(inherited.code, 'BAD_FIELDS');
    const frame = decodeFrame(Buffer.from(map([str('t'), str('test.echo'), str('text'), str('y'), str('__proto__'), proto])));
    assert.deepEqual(frame, { t: 'test.echo', text: 'y' });
    assert.equal(Object.getPrototypeOf(frame), Object.prototype);
  });

  it('validates what is sent, and refuses to define a type twice', () => {
    assert.throws(() => encodeFrame({ t: 'test.echo', text: 1 }), { code: 'BAD_FIELDS' });
    assert.throws(() => encodeFrame({ t: 'nope' }), { code: 'UNKNOWN_TYPE' });
    assert.throws(() => encodeFrame({ ...Echo.make({ text: 'x'.repeat(2000) }) }, { maxBytes: 1024 }), { code: 'TOO_LARGE' });
    assert.throws(() => defineMessage('test.echo', z.object({})), /'test\.echo' is already defined/);
    assert.throws(() => defineMessage('hello', z.object({})), /'hello' is already defined by the transport/);
    assert.throws(() => defineMessage('Bad Name', z.object({})), /must match/);
    assert.equal(Hello.internal, true);
  });
});
