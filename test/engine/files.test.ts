import assert from 'node:assert/strict';
import { Workload } from '../helpers/workload.js';
import { useEngine, roundTrip, checkpoint, imageDir } from '../helpers/engine.js';

describe('file descriptors of one process', function () {
  const engine = useEngine();

  it('fds: files, unlinked file, directory, devices, pipe and FIFO with data, eventfd, epoll, signalfd, timerfd, dup', async () => {
    const w = await Workload.start(engine.tracer, 'fds');
    const { verdict, checkpoint: ck } = await roundTrip(engine.tracer, w);
    assert.equal(verdict, 'PASS', w.stderr);
    assert.ok(ck.entries > 20, `fd and file entries in the image (${ck.entries} entries)`);
  });

  it('a checkpoint that leaves the process running takes nothing from it: pipe and FIFO data stay', async () => {
    const w = await Workload.start(engine.tracer, 'fds');
    await checkpoint(engine.tracer, w.pid, imageDir(), { leaveRunning: true });
    assert.equal(await w.finish(), 'PASS', w.stderr);
  });

  for (const mode of ['pipe', 'poll']) {
    it(`reader ${mode}: a process blocked on its own empty pipe stays blocked on it`, async () => {
      const w = await Workload.start(engine.tracer, 'reader', [mode]);
      assert.equal((await roundTrip(engine.tracer, w)).verdict, 'PASS', w.stderr);
    });
  }

  for (const [mode, fd, kind] of [
    ['inotify', 40, /inotify/],
    ['tty', 40, /a device \(/],
  ] as const) {
    it(`${mode}: refused before the process is touched, naming the pid, the fd and what it is; the process runs on`, async () => {
      const w = await Workload.start(engine.tracer, 'unsupported', [mode]);
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Error & { refusals?: Array<{ pid: number; resource: string; reason: string }> }) => {
        assert.equal(e.name, 'CheckpointRefused');
        const r = e.refusals?.find((x) => x.resource === `fd ${fd}`);
        assert.ok(r, `a refusal for fd ${fd} in: ${e.message}`);
        assert.equal(r.pid, w.pid);
        assert.match(r.reason, kind);
        assert.match(e.message, new RegExp(`pid ${w.pid} fd ${fd}: `));
        return true;
      });
      assert.equal(await w.finish(), 'PASS', w.stderr);
    });
  }
});
