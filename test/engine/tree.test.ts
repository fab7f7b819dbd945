import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Workload } from '../helpers/workload.js';
import { useEngine, imageDir, checkpoint, restore } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/** The processes of a tree, read from /proc: pid → [ppid, pgid, sid]. */
function treeOf(root: number): Map<number, [number, number, number]> {
  const out = new Map<number, [number, number, number]>();
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift()!;
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(pid, [Number(f[1]), Number(f[2]), Number(f[3])]);
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean)) queue.push(Number(c));
    }
  }
  return out;
}

describe('process trees', function () {
  const engine = useEngine();

  async function roundTripTree(w: Workload): Promise<string> {
    const before = treeOf(w.pid);
    const dir = imageDir();
    const ck = await checkpoint(engine.tracer, w.pid, dir, { tree: true });
    assert.deepEqual(new Set(ck.pids), new Set(before.keys()), 'the image holds the whole tree');
    for (const pid of before.keys()) assert.ok(!fs.existsSync(`/proc/${pid}`), `pid ${pid} ended with the checkpoint`);
    const rs = await restore(engine.tracer, dir);
    assert.equal(rs.pid, w.pid);
    const after = treeOf(w.pid);
    // The root's own parent, group and session are the restorer's (the originals lie outside the image);
    // whoever shared them with the root still does, and everything inside the tree is as it was.
    const [, rootGroup, rootSession] = before.get(w.pid)!;
    const [, newRootGroup, newRootSession] = after.get(w.pid)!;
    for (const [pid, [ppid, pgid, sid]] of before) {
      if (pid === w.pid) continue;
      const expected = [ppid, pgid === rootGroup ? newRootGroup : pgid, sid === rootSession ? newRootSession : sid];
      assert.deepEqual(after.get(pid), expected, `pid ${pid}: ppid, pgid and sid`);
    }
    return w.finish();
  }

  it('a fork tree streaming sequence numbers over pipes, with one shared file offset, comes back whole', async () => {
    const w = await Workload.start(engine.tracer, 'tree', ['2', '2']);
    assert.equal(await roundTripTree(w), 'PASS');
  });

  it('sessions and process groups, and an orphan reparented to a subreaper, keep their places', async () => {
    const w = await Workload.start(engine.tracer, 'session');
    assert.equal(await roundTripTree(w), 'PASS');
  });

  it('a zombie child keeps its pid and exit status until its parent reaps it after the restore', async () => {
    const w = await Workload.start(engine.tracer, 'zombie');
    assert.equal(await roundTripTree(w), 'PASS');
  });

  it('eight threads with a futex queue, robust mutex, rseq and per-thread pending signals come back with their tids', async () => {
    const w = await Workload.start(engine.tracer, 'threads', ['8']);
    const tids = fs.readdirSync(`/proc/${w.pid}/task`).sort();
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir);
    await restore(engine.tracer, dir);
    assert.deepEqual(fs.readdirSync(`/proc/${w.pid}/task`).sort(), tids);
    assert.equal(await w.finish(), 'PASS');
  });

  it('without --tree, a process with children is refused and left running', async () => {
    const w = await Workload.start(engine.tracer, 'tree', ['1', '1']);
    await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir()), (e: Error & { refusals?: Array<{ resource: string; reason: string }> }) => {
      assert.equal(e.name, 'CheckpointRefused');
      assert.ok(e.refusals?.some((r) => r.resource === 'children' && /--tree/.test(r.reason)), e.message);
      return true;
    });
    await waitFor('the tree to keep running', () => fs.existsSync(`/proc/${w.pid}`));
    assert.equal(await w.finish(), 'PASS');
  });
});
