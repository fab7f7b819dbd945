import assert from 'node:assert/strict';
import { RemoteError } from '../../src/transport/index.js';
import { waitFor } from '../helpers/wait.js';
import { Echo, EchoReply, Fail, Never, Note, RawPeer, dial, pack, rejectsWith, serveBasics, startServer, useCleanup } from './helpers.js';

describe('transport: messages and requests', () => {
  useCleanup();

  it('answers requests, in both directions', async () => {
    const s = await startServer();
    const channel = await dial(s.address);
    channel.handle(Echo, (m) => EchoReply.make({ text: m.text.toUpperCase() }));
    const replies = await Promise.all(['a', 'b', 'c'].map((text) => channel.request(Echo.make({ text }), EchoReply)));
    assert.deepEqual(
      replies.map((r) => r.text),
      ['a', 'b', 'c'],
    );
    const server = await s.channel(0);
    assert.equal((await server.request(Echo.make({ text: 'back' }), EchoReply)).text, 'BACK');
  });

  it('rejects the requester with the code and message of a failing handler', async () => {
    const s = await startServer();
    const channel = await dial(s.address);
    const error = await channel.request(Fail.make({ code: 'NO_SUCH_CONTAINER', message: 'there is no container web' }), EchoReply).then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RemoteError);
    assert.equal(error.code, 'NO_SUCH_CONTAINER');
    assert.equal(error.request, 'test.fail');
    assert.match(error.message, /^agent server \(127\.0\.0\.1:\d+\) failed 'test\.fail': there is no container web$/);
    // The channel is fine after a failed request.
    assert.equal((await channel.request(Echo.make({ text: 'ok' }), EchoReply)).text, 'ok');
  });

  it('answers a request nobody handles with UNKNOWN_REQUEST, and a reply of the wrong type with UNEXPECTED', async () => {
    const s = await startServer({ onChannel: (c) => c.handle(Echo, () => Note.make({ n: 1 })) });
    const channel = await dial(s.address);
    const unknown = await channel.request(Note.make({ n: 1 }), EchoReply).catch((e: unknown) => e);
    assert.ok(unknown instanceof RemoteError);
    assert.equal(unknown.code, 'UNKNOWN_REQUEST');
    await rejectsWith(channel.request(Echo.make({ text: 'x' }), EchoReply), 'UNEXPECTED', /answered 'test\.echo' with 'test\.note', expected 'test\.echo\.reply'/);
    assert.ok(channel.isOpen);
  });

  it('times a request out and stays usable', async () => {
    const s = await startServer();
    const channel = await dial(s.address);
    await rejectsWith(channel.request(Never.make({}), EchoReply, 100), 'TIMEOUT', /^agent server \(127\.0\.0\.1:\d+\) did not answer 'test\.never' within 100 ms$/);
    assert.equal((await channel.request(Echo.make({ text: 'after' }), EchoReply)).text, 'after');
  });

  it('refuses to send a message with bad fields or of an unknown type', async () => {
    const s = await startServer();
    const channel = await dial(s.address);
    assert.throws(() => channel.send({ t: 'test.note', n: 'one' }), { name: 'ProtocolError', code: 'BAD_FIELDS' });
    assert.throws(() => channel.send({ t: 'no.such' }), { name: 'ProtocolError', code: 'UNKNOWN_TYPE' });
    assert.throws(() => channel.send({ t: 'hello' }), { name: 'ProtocolError', code: 'BAD_FIELDS' });
    await rejectsWith(channel.request({ t: 'test.echo', text: 1 }, EchoReply), 'BAD_FIELDS');
    assert.ok(channel.isOpen);
  });

  it('refuses to send a frame larger than the peer accepts, and stays open', async () => {
    const s = await startServer({ maxFrameBytes: 64 * 1024 });
    const channel = await dial(s.address);
    assert.equal(channel.peer.maxFrameBytes, 64 * 1024);
    assert.throws(() => channel.send(Echo.make({ text: 'x'.repeat(100_000) })), {
      code: 'TOO_LARGE',
      message: /message 'test\.echo' encodes to \d+ bytes, more than the 65536 bytes limit/,
    });
    await rejectsWith(channel.request(Echo.make({ text: 'x'.repeat(100_000) }), EchoReply), 'TOO_LARGE');
    assert.equal((await channel.request(Echo.make({ text: 'small' }), EchoReply)).text, 'small');
  });

  it('delivers one-way messages in order', async () => {
    const notes: number[] = [];
    const s = await startServer({ onChannel: (c) => serveBasics(c, notes) });
    const channel = await dial(s.address);
    for (let n = 0; n < 100; n++) channel.send(Note.make({ n }));
    await waitFor('100 notes', () => notes.length === 100);
    assert.deepEqual(notes, [...Array(100).keys()]);
  });

  it('closes the channel on a message nobody handles and on a handler that throws', async () => {
    const s = await startServer({
      onChannel: (c) => {
        c.handle(Never, () => new Promise<never>(() => {}));
        c.on(Note, (m) => {
          if (m.n === 13) throw new Error('unlucky');
        });
      },
    });
    const unhandled = await dial(s.address);
    unhandled.send(Echo.make({ text: 'anyone?' }));
    const why = await unhandled.closed;
    assert.equal(why?.code, 'UNEXPECTED');
    assert.match(why!.message, /closed the connection: .*sent 'test\.echo', which nothing on this side handles/);

    const throwing = await dial(s.address);
    const pending = throwing.request(Never.make({}), EchoReply, 5000);
    throwing.send(Note.make({ n: 13 }));
    const error = await rejectsWith(pending, 'HANDLER', /the handler for 'test\.note' failed: unlucky/);
    assert.equal(await throwing.closed, error);
    assert.equal((await s.channel(1)).isOpen, false);
  });

  it('closes cleanly from either side and rejects what is pending', async () => {
    const s = await startServer();
    const channel = await dial(s.address);
    const pending = rejectsWith(channel.request(Never.make({}), EchoReply, 5000), 'CLOSED', /closed by this side/);
    await channel.close();
    await pending;
    assert.equal(await channel.closed, null);
    assert.equal(await (await s.channel(0)).closed, null);
    assert.throws(() => channel.send(Note.make({ n: 1 })), { code: 'CLOSED' });

    const other = await dial(s.address);
    const waiting = rejectsWith(other.request(Never.make({}), EchoReply, 5000), 'CLOSED', /agent server \(.*\) closed the channel/);
    await (await s.channel(1)).close();
    await waiting;
  });

  it('closes the channel on a reply to a request never made', async () => {
    const s = await startServer();
    const raw = await RawPeer.connect(s.address);
    await raw.handshake();
    raw.send(pack({ t: 'res', id: 99, msg: { t: 'test.echo.reply', text: 'surprise' } }));
    const error = await raw.expect('error');
    assert.equal(error.code, 'UNEXPECTED');
    assert.match(String(error.message), /replied to request 99, which was never sent/);
    assert.equal((await (await s.channel(0)).closed)?.code, 'UNEXPECTED');
  });
});
