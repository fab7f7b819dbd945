import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { ExitCode } from '../src/cli/exit-codes.js';
import type { CheckpointSummary } from '../src/source/checkpoint.js';
import type { RestoreSummary } from '../src/target/restore.js';
import { checkpointWithCli, finishAdopted, jsonOf, migrate } from './helpers/cli.js';
import { imageDir, useTracer } from './helpers/engine.js';
import { ROOT, workloadBin } from './helpers/paths.js';
import { Workload } from './helpers/workload.js';

describe('migrate checkpoint, restore and inspect on a running process', function () {
  // Only spawns, signals and reaps workloads: the CLI does the checkpoints and restores in its own session.tracer.
  const session = useTracer();

  it('checkpoint --json ends the process and reports the image; restore brings it back, and it outlives the CLI', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const dir = imageDir();

    const checkpointed = await checkpointWithCli(session.tracer, w, ['-D', dir, '--json']);
    assert.equal(checkpointed.status, ExitCode.Ok, checkpointed.stdout + checkpointed.stderr);
    const summary = jsonOf<CheckpointSummary>(checkpointed);
    assert.equal(summary.pid, w.pid);
    assert.equal(summary.dir, dir);
    assert.equal(summary.leftRunning, false);
    assert.ok(summary.dataPages >= 256, `the 1 MiB pattern is in the image (${summary.dataPages} data pages)`);
    assert.equal(summary.pages, summary.dataPages + summary.zeroPages);
    assert.equal(summary.bytes, summary.dataPages * 4096);
    assert.ok(summary.entries > 0);
    assert.ok(summary.frozenMs > 0 && summary.frozenMs <= summary.totalMs, `frozen ${summary.frozenMs} ms of ${summary.totalMs} ms`);
    assert.ok(fs.existsSync(path.join(dir, 'manifest.json')));
    assert.equal(fs.existsSync(`/proc/${w.pid}`), false, 'the pid is free');

    const restored = await migrate(['restore', '-D', dir, '--json']);
    assert.equal(restored.status, ExitCode.Ok, restored.stdout + restored.stderr);
    const { pid, dir: restoredFrom, restoreMs } = jsonOf<RestoreSummary>(restored);
    assert.equal(pid, w.pid);
    assert.equal(restoredFrom, dir);
    assert.ok(restoreMs > 0);
    assert.ok(w.alive(), 'the restored process is running after `migrate restore` has exited');
    assert.equal(w.result(), '', 'no verdict before SIGTERM');
    assert.equal(await finishAdopted(session.tracer, w), 'PASS');
  });

  it('checkpoint --leave-running prints a summary and the process carries on', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const dir = imageDir();
    const result = await migrate(['checkpoint', String(w.pid), '-D', dir, '--leave-running']);
    assert.equal(result.status, ExitCode.Ok, result.stderr);
    assert.match(result.stdout, new RegExp(`^checkpointed pid ${w.pid} into ${dir}; it is still running$`, 'm'));
    for (const field of ['pages', 'bytes', 'entries', 'frozen', 'total']) assert.match(result.stdout, new RegExp(`^${field}\\s+\\d`, 'm'));
    assert.ok(w.alive());
    assert.equal(await w.finish(), 'PASS');
  });

  it('inspect says a plain process can be checkpointed, and leaves it alone', async () => {
    const w = await Workload.start(session.tracer, 'counter');
    const human = await migrate(['inspect', String(w.pid)]);
    assert.equal(human.status, ExitCode.Ok, human.stderr);
    assert.equal(human.stdout, `pid ${w.pid} can be checkpointed\n`);
    const json = await migrate(['inspect', String(w.pid), '--json']);
    assert.equal(json.status, ExitCode.Ok, json.stderr);
    assert.deepEqual(jsonOf(json), { pid: w.pid, checkpointable: true, refusals: [] });
    assert.equal(await w.finish(), 'PASS');
  });

  it('a process whose session and group leaders are outside Ferry\'s pid namespace (a CI runner, a shell in a container) comes back detached, like any process whose leaders are not in the image', async () => {
    // Inside the new pid namespace the shell is pid 1 and sees its own session and group as 0: their leaders live outside.
    const dir = imageDir();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-outer-session-'));
    const script = `
      set -e
      res=${work}/result
      "$1" "$res" </dev/null >${work}/out 2>&1 & pid=$!
      for i in $(seq 400); do [ -e "$res.ready" ] && break; sleep 0.05; done
      [ -e "$res.ready" ] || { echo "counter never got ready"; exit 1; }
      echo "before $(cut -d' ' -f5,6 /proc/$pid/stat)"
      node bin/migrate checkpoint $pid -D ${dir} >/dev/null
      node bin/migrate restore -D ${dir} >/dev/null
      echo "after $(cut -d' ' -f5,6 /proc/$pid/stat)"
      kill -TERM $pid
      for i in $(seq 400); do [ -s "$res" ] && break; sleep 0.05; done
      echo "verdict $(cat $res)"`;
    try {
      const out = await new Promise<string>((resolve, reject) =>
        execFile('unshare', ['--pid', '--fork', '--mount-proc', 'bash', '-c', script, 'outer-session', workloadBin('counter')], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stdout}${stderr}`)) : resolve(stdout),
        ),
      );
      assert.match(out, /^before 0 0$/m, `the workload saw its group and session leaders as outside:\n${out}`);
      assert.match(out, /^after ([1-9]\d*) \1$/m, `the restored copy is in the detached session restore makes:\n${out}`);
      assert.match(out, /^verdict PASS$/m, out);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
