import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroupAt, removeCgroup } from '../../src/native/cgroup.js';
import { becomeChildSubreaper, kill } from '../../src/native/process.js';
import { readChildren } from '../../src/native/proc.js';
import { reap } from '../../src/native/wait.js';
import { initAlive, listStates, readState } from '../../src/container/state.js';
import { ip } from '../../src/native/iproute.js';
import { lockEndpoints, lockScript, lockTableName, lockTables, unlockTable } from '../../src/native/nft.js';
import { formatIpv6, parseIpv6 } from '../../src/native/inet.js';
import { ImageReader } from '../../src/image/format.js';
import { TcpLockEntry, TcpSocketEntry } from '../../src/image/tcp.js';
import '../../src/image/all.js';
import type { CheckpointSummary } from '../../src/source/checkpoint.js';
import type { RestoreSummary } from '../../src/target/restore.js';
import type { Tracer } from '../../src/native/tracer.js';
import { Workload } from '../helpers/workload.js';
import { useEngine, checkpoint, imageDir } from '../helpers/engine.js';
import { rewriteImage } from '../helpers/image-surgery.js';
import { checkpointReaping, checkpointWithCli, finishAdopted, jsonOf, migrate } from '../helpers/cli.js';
import { workloadBin } from '../helpers/paths.js';
import { waitFor } from '../helpers/wait.js';

type Refused = Error & { refusals?: Array<{ pid: number; resource: string; reason: string }> };

const PORT = 7000;

/**
 * Every test gets a network namespace of its own (only `lo`, up), where
 * the workload and its peer talk over loopback: nothing here touches the
 * machine's network, and deleting the namespace takes every socket and
 * nftables table made in it along.
 */
class Netns {
  static count = 0;
  readonly name = `ferry-tcp-${process.pid}-${Netns.count++}`;
  readonly path = `/run/netns/${this.name}`;

  constructor() {
    ip(['netns', 'add', this.name]);
    ip(['-n', this.name, 'link', 'set', 'lo', 'up']);
  }

  locks(): string[] {
    return lockTables({ path: this.path });
  }

  remove(): void {
    if (!fs.existsSync(this.path)) return;
    for (const t of this.locks()) unlockTable(t, { path: this.path });
    ip(['netns', 'delete', this.name]);
  }
}

/** The peer's live counters (tcp_peer.c, stream mode). */
interface Progress {
  sent: number;
  echoed: number;
  maxGapMs: number;
  retrans: number;
  state: number;
  error: number;
  connected: boolean;
}

function progressOf(peer: Workload | string): Progress {
  const b = fs.readFileSync(typeof peer === 'string' ? peer : `${peer.resultFile}.progress`);
  const f = (i: number) => Number(b.readBigUInt64LE(i * 8));
  return { sent: f(0), echoed: f(1), maxGapMs: f(2) / 1000, retrans: f(3), state: f(4), error: f(5), connected: f(6) === 1 };
}

const TCP_ESTABLISHED = 1;

function restoreIn(tracer: Tracer, dir: string, netns: Netns): Promise<RestoreSummary> {
  return tracer.call<RestoreSummary>('restore', dir, { netns: netns.path });
}

async function entriesOf(dir: string): Promise<{ sockets: TcpSocketEntry[]; locks: TcpLockEntry[] }> {
  const image = await ImageReader.open(dir);
  try {
    return { sockets: image.entriesOf(TcpSocketEntry), locks: image.entriesOf(TcpLockEntry) };
  } finally {
    await image.close();
  }
}

describe('TCP sockets', function () {
  const engine = useEngine();
  let netns: Netns | null = null;

  beforeEach(() => {
    netns = new Netns();
  });
  afterEach(() => {
    // After useEngine's hook has killed and reaped every workload.
    netns?.remove();
    netns = null;
  });

  function ns(): Netns {
    if (!netns) throw new Error('no network namespace');
    return netns;
  }

  function start(name: string, args: string[]): Promise<Workload> {
    return Workload.start(engine.tracer, name, args, {}, { netns: ns().path });
  }

  /**
   * The round trip of a streaming connection: the peer streams numbered
   * records and reads back the echo; the workload is checkpointed (and
   * killed); while it is gone the peer keeps sending, and its segments
   * meet the lock: it retransmits, and its connection stays established
   * (a closed port would have answered with a RST). Then the restore, and
   * the stream goes on.
   */
  async function streamRoundTrip(workloadArgs: string[], peerArgs: string[]): Promise<{ checkpoint: CheckpointSummary; restore: RestoreSummary; stats: string; downtimeMs: number }> {
    const peer = await start('tcp_peer', peerArgs);
    const w = await start('tcp', workloadArgs);
    await waitFor('the peer to get 200 records echoed', () => progressOf(peer).echoed >= 200);
    const dir = imageDir();
    const ck = await checkpoint(engine.tracer, w.pid, dir, { tcpEstablished: true });
    const gone = performance.now();
    const before = progressOf(peer);
    await waitFor('the peer to send and retransmit into the lock while the workload is gone', () => {
      const p = progressOf(peer);
      return p.sent > before.sent && p.retrans > before.retrans;
    });
    const during = progressOf(peer);
    assert.equal(during.error, 0, `the peer's connection failed while the workload was gone (errno ${during.error})`);
    assert.equal(during.state, TCP_ESTABLISHED, 'the peer\'s connection is still established: no RST reached it');
    const rs = await restoreIn(engine.tracer, dir, ns());
    const downtimeMs = performance.now() - gone;
    assert.equal(rs.pid, w.pid);
    await waitFor('the stream to go on after the restore', () => progressOf(peer).echoed >= during.sent + 200, 20_000);
    assert.deepEqual(ns().locks(), [], 'the restore removed the lock');
    assert.equal(await peer.finish(), 'PASS', peer.stderr);
    assert.equal(await w.finish(), 'PASS', w.stderr);
    const stats = fs.readFileSync(`${peer.resultFile}.stats`, 'utf8').trim();
    return { checkpoint: ck, restore: rs, stats, downtimeMs };
  }

  it('a peer streaming to a checkpointed server sees no error and every record once, in order; the lock holds its segments meanwhile', async function () {
    const r = await streamRoundTrip(['echo', 'server', String(PORT)], ['stream', 'client', String(PORT)]);
    console.log(`      server side: ${r.stats}; workload gone for ${r.downtimeMs.toFixed(0)} ms (checkpoint frozen ${r.checkpoint.frozenMs.toFixed(1)} ms, restore ${r.restore.restoreMs.toFixed(1)} ms)`);
    assert.equal(r.checkpoint.tcp?.sockets, 1);
    assert.equal(r.checkpoint.tcp?.locks.length, 1);
    assert.deepEqual(r.restore.tcp?.locks.map((l) => l.removed), [true]);
  });

  it('the other direction over IPv6: the checkpointed process is the client of an external server', async function () {
    const r = await streamRoundTrip(['echo', 'client', String(PORT), '6'], ['stream', 'server', String(PORT), '6']);
    console.log(`      client side (IPv6): ${r.stats}; workload gone for ${r.downtimeMs.toFixed(0)} ms`);
  });

  it('queues both ways, connections half closed in every state, listeners, unconnected sockets and options come back', async function () {
    const peer = await start('tcp_peer', ['states', String(PORT)]);
    const w = await start('tcp', ['states', String(PORT)]);
    const dir = imageDir();
    const ck = await checkpoint(engine.tracer, w.pid, dir, { tcpEstablished: true });
    assert.equal(ck.tcp?.sockets, 12);
    const { sockets, locks } = await entriesOf(dir);
    const states = sockets.reduce<Record<string, number>>((n, s) => ({ ...n, [s.state]: (n[s.state] ?? 0) + 1 }), {});
    assert.deepEqual(states, { listen: 2, established: 3, 'fin-wait2': 1, 'fin-wait1': 1, 'close-wait': 1, 'last-ack': 1, closing: 1, closed: 2 });
    const c1 = sockets.find((s) => s.options.userTimeout === 123456)!;
    const sendQueue = c1.connection?.sendQueue;
    assert.ok(sendQueue && sendQueue.length < 1 << 20 && sendQueue.unsent > 0, "the part of the 1 MiB the peer's kernel has not acknowledged, most of it never transmitted");
    assert.ok((c1.connection?.recvQueue?.length ?? 0) > 0, "the peer's bytes not read yet");
    assert.ok(sockets.some((s) => s.family === 'inet6' && s.state === 'established'));
    assert.equal(locks.length, 1);
    assert.equal(ns().locks().length, 1, 'the lock stays while the workload is gone');
    await restoreIn(engine.tracer, dir, ns());
    assert.deepEqual(ns().locks(), []);
    const [pv, wv] = await Promise.all([peer.finish(30_000), w.finish(30_000)]);
    assert.equal(wv, 'PASS', w.stderr);
    assert.equal(pv, 'PASS', peer.stderr);
  });

  it('a restored process checkpointed and restored again keeps all of it (half-closed connections included)', async function () {
    const peer = await start('tcp_peer', ['states', String(PORT)]);
    const w = await start('tcp', ['states', String(PORT)]);
    for (let round = 0; round < 2; round++) {
      const dir = imageDir();
      await checkpoint(engine.tracer, w.pid, dir, { tcpEstablished: true });
      await restoreIn(engine.tracer, dir, ns());
    }
    const [pv, wv] = await Promise.all([peer.finish(30_000), w.finish(30_000)]);
    assert.equal(wv, 'PASS', w.stderr);
    assert.equal(pv, 'PASS', peer.stderr);
  });

  it('a checkpoint that leaves the process running takes its sockets out of repair mode and unlocks: nothing changes for either side', async function () {
    const peer = await start('tcp_peer', ['states', String(PORT)]);
    const w = await start('tcp', ['states', String(PORT)]);
    const ck = await checkpoint(engine.tracer, w.pid, imageDir(), { tcpEstablished: true, leaveRunning: true });
    assert.deepEqual(ck.tcp?.locks, []);
    assert.deepEqual(ns().locks(), []);
    const [pv, wv] = await Promise.all([peer.finish(30_000), w.finish(30_000)]);
    assert.equal(wv, 'PASS', w.stderr);
    assert.equal(pv, 'PASS', peer.stderr);
  });

  it('a restore that loses the receive queues makes the workload fail: its check sees missing bytes', async function () {
    const peer = await start('tcp_peer', ['states', String(PORT)]);
    const w = await start('tcp', ['states', String(PORT)]);
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir, { tcpEstablished: true });
    const damaged = imageDir();
    await rewriteImage(dir, damaged, (e) => {
      if (!TcpSocketEntry.is(e) || !e.connection?.recvQueue) return e;
      // The stream stays consistent (the same sequence numbers follow), it only lacks the queued bytes.
      const { recvQueue, ...connection } = e.connection;
      return { ...e, connection: { ...connection, rcvSeq: (connection.rcvSeq + recvQueue.length) >>> 0 } };
    });
    await restoreIn(engine.tracer, damaged, ns());
    // The peer's verdict does not matter here (its exchanges with a failed workload time out): the cleanup kills it.
    assert.ok(peer.alive());
    assert.match(await w.finish(30_000), /^FAIL C1 \(the peer's 200000 bytes\): byte 0 of 200000 differs from what was sent/);
  });

  describe('refused, naming the pid, the fd and what it is; the process runs on', () => {
    async function refused(w: Workload, opts: { tcpEstablished?: boolean }, fd: number, reason: RegExp): Promise<void> {
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir(), opts), (e: Refused) => {
        assert.equal(e.name, 'CheckpointRefused', e.message);
        const r = e.refusals?.find((x) => x.pid === w.pid && x.resource === `fd ${fd}`);
        assert.ok(r, `a refusal for fd ${fd} in: ${e.message}`);
        assert.match(r.reason, reason);
        return true;
      });
    }

    it('a UDP socket', async () => {
      const w = await start('unsupported', ['udp']);
      await refused(w, { tcpEstablished: true }, 40, /^a UDP socket bound to 0\.0\.0\.0:5353 \(socket:\[\d+\]\); UDP sockets do not migrate yet$/);
      assert.equal(await w.finish(), 'PASS', w.stderr);
    });

    it('a packet socket', async () => {
      const w = await start('unsupported', ['packet']);
      await refused(w, { tcpEstablished: true }, 40, /^a packet socket \(AF_PACKET, SOCK_RAW, ethertype 0x0003 ETH_P_ALL; socket:\[\d+\]\)/);
      assert.equal(await w.finish(), 'PASS', w.stderr);
    });

    it('TCP sockets of a bare process without --tcp-established: the message says the flag would take them', async () => {
      const peer = await start('tcp_peer', ['stream', 'client', String(PORT)]);
      const w = await start('tcp', ['echo', 'server', String(PORT)]);
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Refused) => {
        const r = e.refusals?.find((x) => x.pid === w.pid && /^fd \d+$/.test(x.resource));
        assert.ok(r, e.message);
        assert.match(r.reason, /^a TCP connection 127\.0\.0\.1:7000 -> 127\.0\.0\.1:\d+ \(ESTABLISHED\) \(socket:\[\d+\]\); --tcp-established would take it/);
        return true;
      });
      assert.deepEqual(ns().locks(), [], 'nothing was locked');
      assert.equal(await peer.finish(), 'PASS', peer.stderr);
      assert.equal(await w.finish(), 'PASS', w.stderr);
    });

    it('a listener with a connection waiting in its accept queue (checked once locked); the lock is removed again', async () => {
      const w = await start('tcp', ['pending', String(PORT)]);
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir(), { tcpEstablished: true }), (e: Refused) => {
        const r = e.refusals?.find((x) => x.pid === w.pid);
        assert.ok(r, e.message);
        assert.match(r.reason, /listening on 127\.0\.0\.1:7000 .*1 connection the kernel accepted waits in its accept queue/);
        return true;
      });
      assert.deepEqual(ns().locks(), []);
      assert.equal(await w.finish(), 'PASS', w.stderr);
    });
  });

  it('migrate checkpoint --tcp-established and migrate restore --netns', async function () {
    const peer = await start('tcp_peer', ['stream', 'client', String(PORT)]);
    const w = await start('tcp', ['echo', 'server', String(PORT)]);
    await waitFor('the peer to get 100 records echoed', () => progressOf(peer).echoed >= 100);
    const dir = imageDir();
    const ck = await checkpointWithCli(engine.tracer, w, ['-D', dir, '--tcp-established', '--json']);
    assert.equal(ck.status, 0, ck.stdout + ck.stderr);
    assert.equal(jsonOf<CheckpointSummary>(ck).tcp?.sockets, 1);
    const sent = progressOf(peer).sent;
    const rs = await migrate(['restore', '-D', dir, '--netns', ns().path, '--json']);
    assert.equal(rs.status, 0, rs.stdout + rs.stderr);
    assert.deepEqual(jsonOf<RestoreSummary>(rs).tcp?.locks.map((l) => l.removed), [true]);
    await waitFor('the stream to go on after the restore', () => progressOf(peer).echoed >= sent + 100, 20_000);
    assert.equal(await peer.finish(), 'PASS', peer.stderr);
    assert.equal(await finishAdopted(engine.tracer, w), 'PASS', w.stderr);
  });

  it('addresses are written as inet_ntop writes them (RFC 5952), and read back', () => {
    for (const [text, canonical] of [
      ['::1', '::1'],
      ['::', '::'],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
      ['fe80::1:0:0:2', 'fe80::1:0:0:2'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
      ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ]) {
      assert.equal(formatIpv6(parseIpv6(text!)), canonical, text);
    }
    assert.throws(() => parseIpv6('1::2::3'));
  });

  describe('the network lock (src/native/nft.ts)', () => {
    it('is one table of its own, scoped to the endpoints given; unlocking removes exactly it, and again is no error', () => {
      const script = lockScript('ferry-lock-test', [
        { family: 'inet', addr: '10.0.0.1', port: 80, remote: { addr: '10.0.0.2', port: 40000 } },
        { family: 'inet6', addr: '::', port: 443 },
        { family: 'inet6', addr: '::ffff:10.0.0.1', port: 8080 },
      ]);
      assert.match(script, /ip daddr 10\.0\.0\.1 ip saddr 10\.0\.0\.2 tcp dport 80 tcp sport 40000 drop/);
      assert.match(script, /ip saddr 10\.0\.0\.1 ip daddr 10\.0\.0\.2 tcp sport 80 tcp dport 40000 drop/);
      assert.match(script, /meta l4proto tcp tcp dport 443 drop/);
      assert.match(script, /ip daddr 10\.0\.0\.1 tcp dport 8080 drop/);
      const where = { path: ns().path };
      const other = lockTableName();
      lockEndpoints(other, [{ family: 'inet', addr: '127.0.0.1', port: 9 }], where);
      const table = lockTableName();
      lockEndpoints(table, [{ family: 'inet', addr: '127.0.0.1', port: 10 }], where);
      assert.deepEqual(ns().locks().sort(), [other, table].sort());
      assert.equal(unlockTable(table, where), true);
      assert.equal(unlockTable(table, where), false);
      assert.deepEqual(ns().locks(), [other]);
      assert.ok(!lockTables().includes(other), 'nothing reached our own namespace');
    });
  });
});

/**
 * A container's TCP sockets are taken without asking: its network
 * namespace is its own. Here both ends of the connection live in the
 * container (tcp_peer is a child of its init), over its loopback.
 */
describe('TCP sockets in a container', function () {
  const saved = { state: process.env['FERRY_STATE_DIR'], cgroup: process.env['FERRY_CGROUP_PARENT'] };
  const cgroupParent = `ferry-test-tcp-${process.pid}`;
  let stateDir = '';
  let imageRoot = '';
  /** Where the workloads run from: the container's private /tmp hides the host's. */
  let binDir = '';

  before(() => {
    // The containers migrate starts come back to us when it exits, so we can reap them.
    becomeChildSubreaper();
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-tcp-state-'));
    imageRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-tcp-images-'));
    binDir = fs.mkdtempSync('/var/tmp/ferry-tcp-bin-');
    for (const w of ['tcp', 'tcp_peer']) {
      fs.copyFileSync(workloadBin(w), path.join(binDir, w));
      fs.chmodSync(path.join(binDir, w), 0o755);
    }
    process.env['FERRY_STATE_DIR'] = stateDir;
    process.env['FERRY_CGROUP_PARENT'] = cgroupParent;
  });

  afterEach(() => {
    for (const c of listStates()) {
      try {
        if (initAlive(c)) kill(c.pid, 9);
        if (fs.existsSync(`/proc/${c.pid}`)) reap(c.pid, 10_000);
        removeCgroup(c.cgroup);
      } catch {
        // gone already
      }
    }
    fs.rmSync(path.join(stateDir, 'containers'), { recursive: true, force: true });
  });

  after(() => {
    try {
      removeCgroup(cgroupAt(cgroupParent, ['memory', 'cpu']));
    } catch {
      // never made
    }
    for (const d of [stateDir, imageRoot, binDir]) fs.rmSync(d, { recursive: true, force: true });
    for (const [key, value] of [['FERRY_STATE_DIR', saved.state], ['FERRY_CGROUP_PARENT', saved.cgroup]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });


  /** SIGTERM to a process of the container and its verdict, read through the container's /tmp. */
  async function verdictOf(init: number, pid: number, result: string): Promise<string> {
    const tmp = fs.openSync(`/proc/${init}/root/tmp`, 'r');
    try {
      kill(pid, 15);
      await waitFor(`the verdict in /tmp/${result}`, () => fs.existsSync(`/proc/self/fd/${tmp}/${result}`), 30_000);
      return fs.readFileSync(`/proc/self/fd/${tmp}/${result}`, 'utf8').trim();
    } finally {
      fs.closeSync(tmp);
    }
  }

  it('are taken by default and locked in its network namespace; the stream goes on after the restore', async function () {
    const script = `${binDir}/tcp_peer /tmp/peer stream client ${PORT} & exec ${binDir}/tcp /tmp/result echo server ${PORT}`;
    const run = await migrate(['run', 'tcpbox', '--', 'sh', '-c', script]);
    assert.equal(run.status, 0, run.stdout + run.stderr);
    const pid = readState('tcpbox')!.pid;
    await waitFor('tcp in the container to report READY', () => fs.existsSync(`/proc/${pid}/root/tmp/result.ready`));
    await waitFor('the peer to get 200 records echoed', () => progressOf(`/proc/${pid}/root/tmp/peer.progress`).echoed >= 200);
    const dir = path.join(imageRoot, 'tcpbox');
    const ck = await checkpointReaping(['--json', 'checkpoint', 'tcpbox', '-D', dir], pid);
    assert.equal(ck.status, 0, ck.stdout + ck.stderr);
    const summary = jsonOf<CheckpointSummary>(ck);
    assert.equal(summary.tcp?.sockets, 2, 'both ends of the connection');
    assert.equal(summary.tcp?.locks.length, 1, 'one lock, in the container\'s namespace');
    const { sockets } = await entriesOf(dir);
    assert.deepEqual(sockets.map((s) => s.state), ['established', 'established']);
    const rs = await migrate(['--json', 'restore', '-D', dir]);
    assert.equal(rs.status, 0, rs.stdout + rs.stderr);
    const restored = jsonOf<RestoreSummary>(rs);
    // The lock went with the container's old namespace; the new one never had it, and unlocking there is no error.
    assert.deepEqual(restored.tcp?.locks.map((l) => [l.removed, l.error]), [[false, undefined]]);
    const live = restored.pid;
    const progress = `/proc/${live}/root/tmp/peer.progress`;
    const at = progressOf(progress).sent;
    await waitFor('the stream to go on after the restore', () => progressOf(progress).echoed >= at + 200, 20_000);
    const [peerPid] = readChildren(live);
    assert.ok(peerPid, 'the peer came back as a child of the init');
    assert.equal(await verdictOf(live, peerPid, 'peer'), 'PASS');
    assert.equal(await verdictOf(live, live, 'result'), 'PASS');
    reap(live, 10_000);
  });
});
