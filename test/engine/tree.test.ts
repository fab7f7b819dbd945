import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Workload, killTree } from '../helpers/workload.js';
import { useEngine, imageDir, checkpoint, restore } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';
import { socketpair, AF_UNIX, SOCK_TYPE } from '../../src/native/unix.js';
import { close, socket } from '../../src/native/process.js';
import { ImageReader } from '../../src/image/format.js';
import { FdEntry } from '../../src/image/files.js';
import { UnixSocketEntry } from '../../src/image/unix.js';
import '../../src/image/all.js';

const SOCK_CLOEXEC = 0o2000000;

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

  it('mixed: parents and children talking over pipes, stream and seqpacket socketpairs split between processes come back connected, gap-free', async () => {
    const w = await Workload.start(engine.tracer, 'tree', ['2', '2', 'mixed']);
    assert.equal(await roundTripTree(w), 'PASS');
  });

  it('a socket description every process of the tree inherited travels once and comes back as one socket in all of them', async () => {
    const sock = socket(AF_UNIX, SOCK_TYPE.dgram | SOCK_CLOEXEC);
    const w = await Workload.start(engine.tracer, 'tree', ['1', '2', 'mixed'], {}, { stdin: { fd: sock } }).finally(() => close(sock));
    const pids = [...treeOf(w.pid).keys()];
    const dir = imageDir();
    await checkpoint(engine.tracer, w.pid, dir, { tree: true });
    const image = await ImageReader.open(dir);
    try {
      const files = new Set(image.entriesOf(FdEntry).filter((e) => e.fd === 0).map((e) => e.file));
      assert.equal(files.size, 1, 'fd 0 of every process is one description');
      assert.equal(image.entriesOf(UnixSocketEntry).filter((s) => files.has(s.file)).length, 1, 'dumped once');
    } finally {
      await image.close();
    }
    await restore(engine.tracer, dir);
    const links = new Set(pids.map((pid) => fs.readlinkSync(`/proc/${pid}/fd/0`)));
    assert.equal(links.size, 1, `fd 0 is one socket again: ${[...links].join(' ')}`);
    assert.match([...links][0]!, /^socket:/);
    assert.equal(await w.finish(), 'PASS');
  });

  it('a socket every process of the tree holds, connected to one outside it: refused naming the pid and fd; the tree runs on', async () => {
    const [theirs, ours] = socketpair(SOCK_TYPE.stream | SOCK_CLOEXEC);
    try {
      const w = await Workload.start(engine.tracer, 'tree', ['1', '2', 'mixed'], {}, { stdin: { fd: theirs } }).finally(() => close(theirs));
      await assert.rejects(checkpoint(engine.tracer, w.pid, imageDir(), { tree: true }), (e: Error & { refusals?: Array<{ pid: number; resource: string; reason: string }> }) => {
        assert.equal(e.name, 'CheckpointRefused');
        const r = e.refusals?.find((x) => x.pid === w.pid && x.resource === 'fd 0');
        assert.ok(r, `a refusal for fd 0 of pid ${w.pid} in: ${e.message}`);
        assert.match(r.reason, new RegExp(`connected to socket:\\[\\d+\\] in pid ${process.pid} fd ${ours}, outside the checkpoint`));
        // Sharing it inside the tree is fine; only the peer outside is the problem.
        assert.ok(!e.refusals?.some((x) => /also open in/.test(x.reason)), e.message);
        return true;
      });
      await waitFor('the tree to keep running', () => fs.existsSync(`/proc/${w.pid}`));
      assert.equal(await w.finish(), 'PASS');
    } finally {
      close(ours);
    }
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

  it('a parent blocked in wait4 goes on waiting after the restore and collects its child\'s status', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-wait4-'));
    const program = [
      'import os, time',
      'child = os.fork()',
      'if child == 0:',
      '    while not os.path.exists("go"): time.sleep(0.01)',
      '    os._exit(7)',
      'open("ready.tmp", "w").write(str(child)); os.rename("ready.tmp", "ready")',
      'got, status = os.waitpid(child, 0)',
      'ok = got == child and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7',
      'open("result.tmp", "w").write("PASS" if ok else f"FAIL waitpid gave {got} {status}"); os.rename("result.tmp", "result")',
    ].join('\n');
    const pid = await engine.tracer.call<number>('spawn', '/usr/bin/python3', { argv: ['python3', '-c', program], cwd: dir });
    try {
      await waitFor('the child to be forked', () => fs.existsSync(path.join(dir, 'ready')));
      // 61 is wait4: the parent is inside it when it is checkpointed.
      await waitFor('the parent to block in wait4', () => fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').startsWith('61 '));
      const image = imageDir();
      await checkpoint(engine.tracer, pid, image, { tree: true });
      await restore(engine.tracer, image);
      assert.ok(fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').startsWith('61 ') || !fs.existsSync(path.join(dir, 'result')), 'still waiting');
      fs.writeFileSync(path.join(dir, 'go'), '');
      await waitFor('the parent to collect its child', () => fs.existsSync(path.join(dir, 'result')));
      assert.equal(fs.readFileSync(path.join(dir, 'result'), 'utf8'), 'PASS');
    } finally {
      await killTree(engine.tracer, pid);
      fs.rmSync(dir, { recursive: true, force: true });
    }
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
