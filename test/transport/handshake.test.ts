import assert from 'node:assert/strict';
import net from 'node:net';
import { FERRY_VERSION, PROTOCOL_VERSION, connect } from '../../src/transport/index.js';
import { waitFor } from '../helpers/wait.js';
import { Echo, EchoReply, RawPeer, TOKEN, assertServes, dial, pack, rejectsWith, handshakeAsServer, startRawServer, startServer, useCleanup } from './helpers.js';

describe('transport: hello and authentication', () => {
  useCleanup();

  it('exchanges hellos, authenticates both ways and opens a channel', async () => {
    const s = await startServer({ hostName: 'host2', capabilities: ['uffd-wp'] });
    const channel = await dial(s.address, { hostName: 'laptop', role: 'cli', capabilities: ['json'] });
    assert.deepEqual(
      { host: channel.peer.host, role: channel.peer.role, protocol: channel.peer.protocol, ferry: channel.peer.ferryVersion, caps: channel.peer.capabilities },
      { host: 'host2', role: 'agent', protocol: PROTOCOL_VERSION, ferry: FERRY_VERSION, caps: ['uffd-wp'] },
    );
    assert.equal(channel.name, `agent host2 (${s.address})`);
    const accepted = await s.channel(0);
    assert.equal(accepted.peer.host, 'laptop');
    assert.equal(accepted.peer.role, 'cli');
    assert.deepEqual(accepted.peer.capabilities, ['json']);
    assert.equal((await channel.request(Echo.make({ text: 'hi' }), EchoReply)).text, 'hi');
    assert.deepEqual(s.logs, []);
  });

  it('refuses a wrong token on both sides, logs one line, and serves the next client', async () => {
    const s = await startServer();
    await rejectsWith(dial(s.address, { token: 'not-the-token' }), 'AUTH', new RegExp(`^agent at ${s.address} refused the token$`));
    await waitFor('the refusal to be logged', () => s.logs.length > 0);
    assert.equal(s.logs.length, 1);
    assert.match(s.logs[0]!, /^refused a connection: cli client \(127\.0\.0\.1:\d+\) sent a wrong token proof/);
    assert.equal(s.channels.length, 0);
    await assertServes(s.address);
  });

  it('never sends the token itself', async () => {
    const s = await startServer();
    const seen: Buffer[] = [];
    // A TCP relay in front of the server records every byte the client sends.
    const relay = net.createServer((client) => {
      const upstream = net.connect(s.server.port, '127.0.0.1');
      client.on('data', (d) => seen.push(d)).pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    const closeRelay = new Promise<void>((r) => relay.once('close', r));
    try {
      const channel = await dial(`127.0.0.1:${(relay.address() as net.AddressInfo).port}`);
      await channel.close();
      assert.ok(seen.length > 0);
      assert.ok(!Buffer.concat(seen).includes(Buffer.from(TOKEN)), 'the token crossed the wire');
    } finally {
      relay.close();
      await closeRelay;
    }
  });

  it('refuses a client of another protocol version', async () => {
    const s = await startServer();
    const raw = await RawPeer.connect(s.address);
    await raw.handshake({ version: PROTOCOL_VERSION + 1 });
    const error = await raw.expect('error');
    assert.equal(error.code, 'VERSION');
    assert.match(String(error.message), new RegExp(`speaks protocol ${PROTOCOL_VERSION + 1}, this agent speaks ${PROTOCOL_VERSION}`));
    assert.equal((await raw.closed).code, 1002);
    assert.equal(s.logs.length, 1);
    assert.match(s.logs[0]!, /refused .*speaks protocol 2, this agent speaks 1/);
    await assertServes(s.address);
  });

  it('tells a client that an agent speaks another protocol version', async () => {
    const address = await startRawServer((peer) => handshakeAsServer(peer, { version: 2 }));
    await rejectsWith(dial(address), 'VERSION', new RegExp(`^agent at ${address} speaks protocol 2, this Ferry speaks 1$`));
  });

  it('refuses a garbage first frame, a text frame and an oversized frame, and serves on', async () => {
    const s = await startServer({ maxFrameBytes: 64 * 1024 });

    const garbage = await RawPeer.connect(s.address);
    garbage.send(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const bad = await garbage.expect('error');
    assert.equal(bad.code, 'MALFORMED');
    assert.match(String(bad.message), /sent a bad frame: not a msgpack frame|a frame must be a msgpack map/);
    assert.equal((await garbage.closed).code, 1002);

    const text = await RawPeer.connect(s.address);
    text.send(JSON.stringify({ t: 'hello' }));
    const refused = await text.expect('error');
    assert.equal(refused.code, 'MALFORMED');
    assert.match(String(refused.message), /text WebSocket messages are not part of the Ferry protocol/);

    const big = await RawPeer.connect(s.address);
    big.send(pack({ t: 'hello', junk: new Uint8Array(100 * 1024) }));
    assert.equal((await big.closed).code, 1009);

    await waitFor('three refusals logged', () => s.logs.length >= 3);
    assert.equal(s.logs.length, 3);
    assert.match(s.logs.join('\n'), /larger than the 65536 bytes this end accepts/);
    await assertServes(s.address);
  });

  it('refuses an unknown message type and a hello with bad fields', async () => {
    const s = await startServer();
    const unknown = await RawPeer.connect(s.address);
    unknown.send(pack({ t: 'no.such.thing' }));
    assert.equal((await unknown.expect('error')).code, 'UNKNOWN_TYPE');

    const fields = await RawPeer.connect(s.address);
    fields.send(pack({ t: 'hello', v: PROTOCOL_VERSION, host: 42 }));
    const error = await fields.expect('error');
    assert.equal(error.code, 'BAD_FIELDS');
    assert.match(String(error.message), /message 'hello' has bad fields: .*host/);
    await assertServes(s.address);
  });

  it('refuses a client that skips the authentication', async () => {
    const s = await startServer();
    const raw = await RawPeer.connect(s.address);
    await raw.expect('hello');
    raw.sendMsg(Echo.make({ text: 'let me in' }));
    const error = await raw.expect('error');
    assert.equal(error.code, 'UNEXPECTED');
    assert.match(String(error.message), /sent 'test\.echo' during the handshake, expected 'hello'/);
    await assertServes(s.address);
  });

  it('gives up on a client that never finishes the handshake', async () => {
    const s = await startServer({ handshakeTimeoutMs: 200 });
    const raw = await RawPeer.connect(s.address);
    await raw.closed;
    assert.equal(s.logs.length, 1);
    assert.match(s.logs[0]!, /did not complete the handshake within 200 ms/);
    await assertServes(s.address);
  });

  it('refuses an agent that cannot prove it knows the token', async () => {
    const address = await startRawServer(async (peer) => {
      peer.send(pack({ t: 'hello', v: PROTOCOL_VERSION, ferry: 'x', host: 'impostor', role: 'agent', caps: [], nonce: new Uint8Array(32), maxFrame: 1 << 20, window: 1 << 20 }));
      await peer.expect('auth');
      peer.send(pack({ t: 'auth', proof: new Uint8Array(32) }));
    });
    await rejectsWith(dial(address), 'AUTH', new RegExp(`^agent at ${address} does not know the cluster token`));
  });

  it('names the address when the connection is refused or times out', async () => {
    const spare = net.createServer();
    await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
    const port = (spare.address() as net.AddressInfo).port;
    await new Promise<void>((r) => spare.close(() => r()));
    await rejectsWith(dial(`127.0.0.1:${port}`), 'CONNECT', new RegExp(`^cannot connect to agent at 127\\.0\\.0\\.1:${port}: connection refused`));

    // A server that accepts TCP and then says nothing.
    const silent = net.createServer(() => {});
    const sockets = new Set<net.Socket>();
    silent.on('connection', (c) => sockets.add(c));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const address = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
      await rejectsWith(connect(address, { token: TOKEN, hostName: 'c', role: 'cli', timeoutMs: 200 }), 'TIMEOUT', new RegExp(`^agent at ${address} did not answer within 200 ms`));
    } finally {
      for (const c of sockets) c.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('says so when the address is not a Ferry agent', async () => {
    const http = await import('node:http');
    const other = http.createServer((_q, res) => res.writeHead(404).end());
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    try {
      const address = `127.0.0.1:${(other.address() as net.AddressInfo).port}`;
      await rejectsWith(dial(address), 'CONNECT', /answered HTTP 404: it is not a Ferry agent/);
    } finally {
      await new Promise<void>((r) => other.close(() => r()));
    }
    await rejectsWith(dial('not an address:x'), 'CONNECT', /is not an agent address/);
  });
});
