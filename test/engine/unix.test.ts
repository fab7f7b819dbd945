import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { socketpair, SOCK_TYPE } from '../../src/native/unix.js';
import { close } from '../../src/native/process.js';
import { ImageReader } from '../../src/image/format.js';
import { UnixSocketEntry } from '../../src/image/unix.js';
import '../../src/image/all.js';
import { Workload } from '../helpers/workload.js';
import { useEngine, roundTrip, checkpoint, restore, imageDir } from '../helpers/engine.js';

const SOCK_CLOEXEC = 0o2000000;

type Refused = Error & { refusals?: Array<{ pid: number; resource: string; reason: string }>; problems?: string[] };

describe('UNIX domain sockets of one process', function () {
  const engine = useEngine();

  it('unix: pairs, named and abstract listeners with waiting and accepted connections, datagrams, queues both ways, options, shutdown, closed peers', async () => {
    const w = await Workload.start(engine.tracer, 'unix');
    const { verdict, checkpoint: ck } = await roundTrip(engine.tracer, w);
    assert.equal(verdict, 'PASS', w.stderr);
    assert.ok(ck.entries > 40, `socket and fd entries in the image (${ck.entries} entries)`);
  });

  it('the image says what each socket is: states, peers by inode, names, queues', async () => {
    const w = await Workload.start(engine.tracer, 'unix');
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir, { leaveRunning: true });
    assert.equal(await w.finish(), 'PASS', w.stderr);
    const image = await ImageReader.open(dir);
    try {
      const socks = image.entriesOf(UnixSocketEntry);
      assert.equal(socks.length, 29);
      const byIno = new Map(socks.map((s) => [s.ino, s]));
      const states = socks.reduce<Record<string, number>>((n, s) => ({ ...n, [s.state]: (n[s.state] ?? 0) + 1 }), {});
      assert.deepEqual(states, { connected: 17, listening: 4, pending: 1, 'peer-closed': 4, unconnected: 3 });
      for (const s of socks.filter((x) => x.state === 'connected' && x.kind !== 'dgram')) {
        assert.equal(byIno.get(s.peer!)?.peer, s.ino, `stream/seqpacket peers name each other (socket ${s.ino})`);
      }
      const listener = socks.find((s) => s.state === 'listening' && s.pending?.length);
      assert.equal(byIno.get(listener!.pending![0]!)?.state, 'pending', 'the listener names its waiting client');
      const big = socks.find((s) => s.queue?.messages.some((m) => m.length === 300000));
      assert.deepEqual(big?.queue?.messages.map((m) => m.length), [100, 1, 300000, 7], 'record boundaries');
      assert.ok(socks.some((s) => s.queue?.messages.some((m) => m.creds?.pid === w.pid)), 'credentials of queued data');
    } finally {
      await image.close();
    }
  });

  it('a checkpoint that leaves the process running takes nothing from it: queues, peek offsets, pending connections stay', async () => {
    const w = await Workload.start(engine.tracer, 'unix');
    await checkpoint(engine.tracer, w.pid, imageDir(), { leaveRunning: true });
    assert.equal(await w.finish(), 'PASS', w.stderr);
  });

  it('SCM_RIGHTS in flight: refused, naming the pid, the fd and why; the process runs on', async () => {
    const w = await Workload.start(engine.tracer, 'unix', ['', 'rights']);
    await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Refused) => {
      assert.equal(e.name, 'CheckpointRefused');
      const r = e.refusals?.find((x) => x.resource === 'fd 70');
      assert.ok(r, `a refusal for fd 70 in: ${e.message}`);
      assert.equal(r.pid, w.pid);
      assert.match(r.reason, /SCM_RIGHTS/);
      assert.match(e.message, new RegExp(`pid ${w.pid} fd 70: .*file descriptor`));
      return true;
    });
    assert.equal(await w.finish(), 'PASS', w.stderr);
  });

  it('a socket whose peer is outside the checkpoint: refused before the process is touched, naming whose it is; the process runs on', async () => {
    const [theirs, ours] = socketpair(SOCK_TYPE.stream | SOCK_CLOEXEC);
    try {
      const w = await Workload.start(engine.tracer, 'counter', [], {}, { stdin: { fd: theirs } }).finally(() => close(theirs));
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Refused) => {
        assert.equal(e.name, 'CheckpointRefused');
        const r = e.refusals?.find((x) => x.pid === w.pid && x.resource === 'fd 0');
        assert.ok(r, `a refusal for fd 0 in: ${e.message}`);
        assert.match(r.reason, new RegExp(`connected to socket:\\[\\d+\\] in pid ${process.pid} fd ${ours}, outside the checkpoint`));
        return true;
      });
      assert.equal(await w.finish(), 'PASS', w.stderr);
    } finally {
      close(ours);
    }
  });

  it('a name taken on the restoring side refuses the restore before anything is made; once free, the same image restores', async () => {
    const w = await Workload.start(engine.tracer, 'unix');
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir);
    const taken = path.join(w.dir, 's', 'listen.sock');
    fs.rmSync(taken);
    fs.writeFileSync(taken, 'not a socket');
    await assert.rejects(restore(engine.tracer, dir), (e: Refused) => {
      assert.equal(e.name, 'RestoreRefused');
      assert.ok(e.problems?.some((p) => p.includes(`the UNIX socket name ${taken} is taken here by a file`)), e.message);
      return true;
    });
    assert.equal(fs.existsSync(`/proc/${w.pid}`), false, 'nothing was made');
    fs.rmSync(taken);
    await restore(engine.tracer, dir);
    assert.equal(await w.finish(), 'PASS', w.stderr);
  });
});
