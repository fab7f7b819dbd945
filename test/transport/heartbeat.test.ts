import assert from 'node:assert/strict';
import { EchoReply, Never, RawPeer, dial, rejectsWith, handshakeAsServer, startRawServer, startServer, useCleanup } from './helpers.js';

const HEARTBEAT = { heartbeatIntervalMs: 50, heartbeatTimeoutMs: 300 };

describe('transport: heartbeats', () => {
  useCleanup();

  it('closes the channel of a client that stops answering pings, and keeps live ones', async () => {
    const s = await startServer(HEARTBEAT);
    const live = await dial(s.address, HEARTBEAT);
    for (let n = 0; n < 2; n++) {
      // A client that completes the handshake and then never answers a ping.
      const silent = await RawPeer.connect(s.address, { autoPong: false });
      await silent.handshake();
      const channel = await s.channel(n + 1);
      const opened = performance.now();
      const why = await channel.closed;
      assert.equal(why?.code, 'TIMEOUT');
      const quiet = /^agent raw \(127\.0\.0\.1:\d+\) sent nothing for (\d+) ms \(heartbeat timeout 300 ms\)$/.exec(why!.message);
      assert.ok(quiet && Number(quiet[1]) >= 300, why!.message);
      assert.ok(performance.now() - opened < 3000, 'the timeout took far longer than configured');
      await silent.closed;
    }
    // The well-behaved client lived through two timeouts of the silent ones.
    assert.ok(live.isOpen);
    assert.ok((await s.channel(0)).isOpen);
  });

  it('fails a client whose agent stops answering, with every pending request', async () => {
    const address = await startRawServer((peer) => handshakeAsServer(peer), { autoPong: false });
    const channel = await dial(address, HEARTBEAT);
    const started = performance.now();
    const error = await rejectsWith(channel.request(Never.make({}), EchoReply, 10_000), 'TIMEOUT', /heartbeat timeout 300 ms/);
    assert.ok(performance.now() - started < 3000, 'the timeout took far longer than configured');
    assert.equal(await channel.closed, error);
  });
});
