import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { StreamChunk, StreamReader } from '../../src/transport/index.js';
import { CHUNK_COST } from '../../src/transport/stream.js';
import { waitFor } from '../helpers/wait.js';
import { Echo, EchoReply, RawPeer, dial, pack, rejectsWith, serveBasics, startServer, useCleanup } from './helpers.js';

const MiB = 1024 * 1024;

/** Reads a whole stream; resolves with what arrived, or rejects with the reader's error. */
async function drain(reader: StreamReader): Promise<{ sha256: string; bytes: number; chunks: StreamChunk[]; zeros: number }> {
  const hash = createHash('sha256');
  const chunks: StreamChunk[] = [];
  let bytes = 0;
  let zeros = 0;
  for await (const chunk of reader) {
    hash.update(chunk.payload);
    bytes += chunk.payload.byteLength;
    zeros += chunk.zeros;
    if (chunks.length < 16) chunks.push(chunk);
  }
  return { sha256: hash.digest('hex'), bytes, chunks, zeros };
}

/** A server whose stream handler is `handler`, and a client connected to it. */
async function pair(handler: (reader: StreamReader, meta: Record<string, unknown>) => Promise<void>, windowBytes?: number) {
  const s = await startServer({
    ...(windowBytes ? { windowBytes } : {}),
    onChannel: (c) => {
      serveBasics(c);
      c.onStream('sink', handler);
    },
  });
  const client = await dial(s.address);
  return { s, client };
}

describe('transport: streams', () => {
  useCleanup();

  it('streams 256 MiB with a verified checksum and zero pages as counts', async function () {
    this.timeout(30_000);
    let result: Awaited<ReturnType<typeof drain>> | null = null;
    const { client } = await pair(async (reader) => void (result = await drain(reader)));
    const writer = client.openStream('sink', { purpose: 'test' });
    const block = new Uint8Array(MiB);
    for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
    const sent = createHash('sha256');
    const started = performance.now();
    for (let i = 0; i < 256; i++) {
      block[0] = i;
      sent.update(block);
      await writer.write(block, { zeros: i % 3 });
    }
    await writer.end();
    const seconds = (performance.now() - started) / 1000;
    assert.ok(result, 'end() resolved before the handler finished');
    const got = result as Awaited<ReturnType<typeof drain>>;
    assert.equal(got.bytes, 256 * MiB);
    assert.equal(got.sha256, sent.digest('hex'));
    assert.equal(got.zeros, 255);
    const stats = writer.stats;
    assert.ok(stats.maxInFlight <= stats.window, `in flight ${stats.maxInFlight} > window ${stats.window}`);
    assert.ok(client.stats.maxStreamInFlightBytes <= stats.window);
    console.log(`      256 MiB in ${seconds.toFixed(2)} s (${(256 / seconds).toFixed(0)} MiB/s), at most ${(stats.maxInFlight / MiB).toFixed(2)} MiB in flight`);
  });

  it('holds the writer while the consumer holds, never beyond the window, then completes', async () => {
    const window = 256 * 1024;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let reader!: StreamReader;
    let consumed = 0;
    const { s, client } = await pair(async (r) => {
      reader = r;
      for await (const chunk of r) {
        consumed += chunk.payload.byteLength;
        await held;
      }
    }, window);
    const writer = client.openStream('sink');
    assert.equal(writer.stats.window, window);
    const chunk = new Uint8Array(16 * 1024).fill(1);
    const total = 64;
    let resolved = 0;
    const writes = Array.from({ length: total }, () => writer.write(chunk).then(() => void resolved++));

    // Everything the writer could send has arrived, and the rest waits for credit.
    await waitFor('the writer to run out of credit', () => writer.stats.waitingForCredit);
    await waitFor('the reader to receive all that was sent', () => reader !== undefined && reader.stats.bytes === writer.stats.bytes);
    // One round trip more: any credit the server had sent would have arrived before this reply.
    await client.request(Echo.make({ text: 'sync' }), EchoReply);
    const perChunk = chunk.byteLength + CHUNK_COST;
    assert.equal(writer.stats.chunks, Math.floor(window / perChunk), 'the writer sent exactly what the window holds');
    assert.equal(resolved, writer.stats.chunks, 'a write resolved without credit');
    assert.ok(writer.stats.waitingForCredit);
    assert.ok(writer.stats.inFlight <= window && writer.stats.maxInFlight <= window, `in flight ${writer.stats.maxInFlight} > ${window}`);
    assert.ok(reader.stats.buffered <= window);
    assert.equal(consumed, chunk.byteLength, 'the consumer took one chunk and holds');
    assert.equal((await s.channel(0)).stats.streamsIn, 1);

    release();
    await Promise.all(writes);
    await writer.end();
    assert.equal(consumed, total * chunk.byteLength);
    assert.ok(writer.stats.maxInFlight <= window);
    assert.ok(client.stats.maxStreamInFlightBytes <= window);
    assert.equal(client.stats.streamsOut, 0);
  });

  it('keeps write boundaries, and cuts a write larger than a chunk', async () => {
    let got: Awaited<ReturnType<typeof drain>> | null = null;
    const { client } = await pair(async (reader) => void (got = await drain(reader)), 64 * 1024);
    const writer = client.openStream('sink');
    await writer.write(new Uint8Array(10).fill(1), { zeros: 2 });
    await writer.write(new Uint8Array(0), { zeros: 5 });
    const big = new Uint8Array(writer.maxChunkBytes * 2 + 7).fill(3);
    await writer.write(big, { zeros: 1 });
    await writer.end();
    const chunks = got!.chunks.map((c) => [c.payload.byteLength, c.zeros]);
    assert.deepEqual(chunks, [
      [10, 2],
      [0, 5],
      [writer.maxChunkBytes, 0],
      [writer.maxChunkBytes, 0],
      [7, 1],
    ]);
  });

  it('carries several streams at once, from the server to the client too', async () => {
    const s = await startServer({ onChannel: serveBasics });
    const client = await dial(s.address);
    const got = new Map<string, Awaited<ReturnType<typeof drain>>>();
    client.onStream('sink', async (reader, meta) => void got.set(String(meta.part), await drain(reader)));
    const server = await s.channel(0);
    const parts = ['a', 'b', 'c'];
    const expected = new Map<string, string>();
    await Promise.all(
      parts.map(async (part, i) => {
        const writer = server.openStream('sink', { part });
        const hash = createHash('sha256');
        for (let n = 0; n < 20; n++) {
          const chunk = new Uint8Array(50_000 + i).fill(n + i * 20);
          hash.update(chunk);
          await writer.write(chunk);
        }
        expected.set(part, hash.digest('hex'));
        await writer.end();
      }),
    );
    for (const part of parts) assert.equal(got.get(part)?.sha256, expected.get(part), `stream ${part}`);
  });

  it('rejects a corrupt stream with CHECKSUM on both ends', async () => {
    const outcome: unknown[] = [];
    const s = await startServer({
      onChannel: (c) => c.onStream('sink', (reader) => drain(reader).then((r) => void outcome.push(r), (e: unknown) => void outcome.push(e))),
    });
    const raw = await RawPeer.connect(s.address);
    await raw.handshake();
    raw.send(pack({ t: 'open', s: 1, name: 'sink', meta: {} }));
    const payload = new Uint8Array(1000).fill(5);
    raw.send(pack({ t: 'data', s: 1, n: 0, p: payload }));
    const sha256 = createHash('sha256').update(payload).digest();
    sha256[0]! ^= 1;
    raw.send(pack({ t: 'end', s: 1, chunks: 1, bytes: 1000, zeros: 0, sha256 }));
    const cancel = await raw.expect('cancel');
    assert.equal(cancel.code, 'CHECKSUM');
    assert.match(String(cancel.message), /stream 'sink' from agent raw \(.*\) is corrupt: the sha256 of the data differs/);
    await waitFor('the handler to finish', () => outcome.length > 0);
    await rejectsWith(Promise.reject(outcome[0]), 'CHECKSUM', /is corrupt/);

    // Counts are checked too: a chunk lost on the way.
    raw.send(pack({ t: 'open', s: 2, name: 'sink', meta: {} }));
    raw.send(pack({ t: 'end', s: 2, chunks: 1, bytes: 1000, zeros: 4, sha256 }));
    const second = await raw.expect('cancel');
    assert.match(String(second.message), /0 chunks arrived, 1 were sent; 0 bytes arrived, 1000 were sent; 0 zero pages arrived, 4 were sent/);
    assert.ok((await s.channel(0)).isOpen, 'a corrupt stream fails the stream, not the channel');
  });

  it('tells the writer end() failed when the reader found the stream corrupt', async () => {
    // A writer whose data is corrupted on the way: the test flips a bit in the frame after the writer hashed it.
    const { client } = await pair((reader) => drain(reader).then(() => undefined));
    const writer = client.openStream('sink');
    const link = (client as unknown as { link: { sendData: (s: number, n: number, p: Uint8Array, z: number) => void } }).link;
    const sendData = link.sendData;
    link.sendData = (s, n, p, z) => sendData(s, n, Uint8Array.from(p, (b, i) => (i === 3 ? b ^ 0x10 : b)), z);
    await writer.write(new Uint8Array(100));
    await rejectsWith(writer.end(), 'CHECKSUM', /refused stream 'sink': .*the sha256 of the data differs/);
  });

  it('closes the channel on stream frames that break the rules', async () => {
    const cases: [string, (raw: RawPeer) => void, RegExp][] = [
      ['data for a stream never opened', (raw) => raw.send(pack({ t: 'data', s: 7, n: 0, p: new Uint8Array(1) })), /sent 'data' for stream 7, which was never opened/],
      [
        'a sequence gap',
        (raw) => {
          raw.send(pack({ t: 'open', s: 1, name: 'sink', meta: {} }));
          raw.send(pack({ t: 'data', s: 1, n: 0, p: new Uint8Array(1) }));
          raw.send(pack({ t: 'data', s: 1, n: 2, p: new Uint8Array(1) }));
        },
        /sent chunk 2 of stream 'sink' where chunk 1 was due \(sequence gap\)/,
      ],
      [
        'data beyond the credit',
        (raw) => {
          raw.send(pack({ t: 'open', s: 1, name: 'sink', meta: {} }));
          for (let n = 0; n < 3; n++) raw.send(pack({ t: 'data', s: 1, n, p: new Uint8Array(40 * 1024) }));
        },
        /sent beyond the credit of stream 'sink'/,
      ],
      [
        'a stream id used twice',
        (raw) => {
          raw.send(pack({ t: 'open', s: 1, name: 'sink', meta: {} }));
          raw.send(pack({ t: 'open', s: 1, name: 'sink', meta: {} }));
        },
        /opened stream 1 again/,
      ],
      ['credit for a stream never opened', (raw) => raw.send(pack({ t: 'credit', s: 3, bytes: 10 })), /answered on stream 3, which was never opened/],
    ];
    const s = await startServer({ windowBytes: 64 * 1024, onChannel: (c) => c.onStream('sink', (r) => drain(r).then(() => undefined, () => undefined)) });
    for (const [what, misbehave, message] of cases) {
      const raw = await RawPeer.connect(s.address);
      await raw.handshake();
      misbehave(raw);
      const error = await raw.expect('error');
      assert.equal(error.code, 'UNEXPECTED', what);
      assert.match(String(error.message), message, what);
      await raw.closed;
    }
    assert.equal(s.channels.length, cases.length);
    for (const c of s.channels) assert.equal((await c.closed)?.code, 'UNEXPECTED');
  });

  it('aborts from the writer: the reader throws ABORTED', async () => {
    const outcome: unknown[] = [];
    const { client } = await pair((reader) => drain(reader).then(
      (r) => void outcome.push(r),
      (e: unknown) => void outcome.push(e),
    ));
    const writer = client.openStream('sink');
    await writer.write(new Uint8Array(10));
    writer.abort('the source froze');
    await waitFor('the reader to fail', () => outcome.length > 0);
    await rejectsWith(Promise.reject(outcome[0]), 'ABORTED', /aborted stream 'sink': the source froze/);
    await rejectsWith(writer.write(new Uint8Array(1)), 'ABORTED');
    await rejectsWith(writer.end(), 'ABORTED');
    assert.equal((await client.request(Echo.make({ text: 'fine' }), EchoReply)).text, 'fine');
  });

  it('cancels from the reader: a consumer that stops, a handler that fails, no handler, bad meta', async () => {
    const s = await startServer({
      windowBytes: 64 * 1024,
      onChannel: (c) => {
        c.onStream('first-only', async (reader) => {
          for await (const _ of reader) break;
        });
        c.onStream('failing', async (reader) => {
          await drain(reader);
          throw Object.assign(new Error('the disk is full'), { code: 'ENOSPC' });
        });
        c.onStream('failing-midway', async (reader) => {
          for await (const _ of reader) throw new Error('cannot map the pages');
        });
        c.onStream('typed', (reader) => drain(reader).then(() => undefined), z.strictObject({ id: z.string() }));
      },
    });
    const client = await dial(s.address);
    const chunk = new Uint8Array(8 * 1024);

    const stops = client.openStream('first-only');
    const writes = Array.from({ length: 32 }, () => stops.write(chunk));
    await rejectsWith(Promise.all(writes), 'ABORTED', /cancelled stream 'first-only': the receiver stopped reading/);

    const failing = client.openStream('failing');
    await failing.write(chunk);
    await rejectsWith(failing.end(), 'ABORTED', /cancelled stream 'failing': the handler for stream 'failing' failed: the disk is full/);

    const midway = client.openStream('failing-midway');
    await rejectsWith(Promise.all(Array.from({ length: 32 }, () => midway.write(chunk))), 'ABORTED', /the handler for stream 'failing-midway' failed: cannot map the pages/);

    await rejectsWith(client.openStream('nobody').end(), 'ABORTED', /server has no handler for stream 'nobody'/);
    await rejectsWith(client.openStream('typed', { id: 3 }).end(), 'ABORTED', /bad meta for stream 'typed'/);
    await client.openStream('typed', { id: 'x' }).end();
    assert.ok(client.isOpen);
    assert.equal(client.stats.streamsOut, 0);
  });

  it('fails the streams of a channel that closes', async () => {
    let reader!: StreamReader;
    const { s, client } = await pair(async (r) => {
      reader = r;
      await new Promise(() => {});
    }, 64 * 1024);
    const writer = client.openStream('sink');
    const writes = Promise.all(Array.from({ length: 16 }, () => writer.write(new Uint8Array(16 * 1024))));
    const failed = rejectsWith(writes, 'CLOSED', /closed the channel/);
    await waitFor('the stream to open', () => reader !== undefined);
    await (await s.channel(0)).close();
    await failed;
    await rejectsWith(reader.next(), 'CLOSED', /closed by this side/);
  });
});
