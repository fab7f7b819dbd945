import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Tracer } from '../../src/native/tracer.js';
import { startEngine, imageDir, checkpoint, restore, cleanupImages } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Programs nobody wrote for Ferry, holding their state only in memory: each
 * counts in a loop and appends its counter to a log every 20000 steps. A
 * restore that lost or reset memory shows up as a log that does not climb
 * by exactly 20000 from line to line.
 */
const BASH = 'i=0; while :; do i=$((i+1)); if (( i % 20000 == 0 )); then echo $i >> log; [ -e stop ] && { echo "final $i" >> log; exit 0; }; fi; done';
const PYTHON = `
import os, hashlib
state = {"n": 0, "blob": bytes(range(256)) * 4096}
digest = hashlib.sha256(state["blob"]).hexdigest()
while True:
    state["n"] += 1
    if state["n"] % 20000 == 0:
        with open("log", "a") as f: f.write(f"{state['n']}\\n")
        if os.path.exists("stop"):
            ok = hashlib.sha256(state["blob"]).hexdigest() == digest
            with open("log", "a") as f: f.write(f"final {state['n']} {'PASS' if ok else 'FAIL blob changed'}\\n")
            break
`;

describe('real programs checkpointed and restored mid-loop', function () {
  let tracer: Tracer;
  let dir: string;
  let pid = 0;

  before(async () => {
    tracer = await startEngine();
  });
  after(async () => {
    await tracer.close();
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-real-'));
  });
  afterEach(async () => {
    if (pid && fs.existsSync(`/proc/${pid}`)) {
      await tracer.call('kill', pid, 9).catch(() => undefined);
      await tracer.call('reap', pid, 5000).catch(() => undefined);
    }
    pid = 0;
    fs.rmSync(dir, { recursive: true, force: true });
    cleanupImages();
  });

  const logLines = () => (fs.existsSync(path.join(dir, 'log')) ? fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n') : []);

  async function run(program: string, argv: string[]): Promise<string[]> {
    pid = await tracer.call<number>('spawn', program, { argv, cwd: dir, stdout: { path: path.join(dir, 'out') }, stderr: { path: path.join(dir, 'err') } });
    await waitFor('the program to log twice', () => logLines().length >= 2);
    const image = imageDir();
    await checkpoint(tracer, pid, image);
    const atCheckpoint = logLines().length;
    const r = await restore(tracer, image);
    assert.equal(r.pid, pid);
    await waitFor('the restored program to log three more times', () => logLines().length >= atCheckpoint + 3);
    fs.writeFileSync(path.join(dir, 'stop'), '');
    const end = await tracer.call<{ kind: string; code?: number }>('reap', pid, 10_000);
    pid = 0;
    assert.deepEqual(end, { kind: 'exited', pid: r.pid, code: 0 }, `stderr: ${fs.readFileSync(path.join(dir, 'err'), 'utf8')}`);
    const lines = logLines();
    const counts = lines.filter((l) => !l.startsWith('final')).map(Number);
    counts.forEach((n, i) => assert.equal(n, (i + 1) * 20000, `log line ${i + 1} continues the count: ${lines.join(' ')}`));
    return lines;
  }

  it('bash keeps its loop variable', async () => {
    const lines = await run('/bin/bash', ['bash', '-c', BASH]);
    assert.match(lines.at(-1)!, /^final \d+$/);
  });

  it('python3 keeps its objects and finishes with an intact blob', async () => {
    const lines = await run('/usr/bin/python3', ['python3', '-c', PYTHON]);
    assert.match(lines.at(-1)!, /^final \d+ PASS$/);
  });
});
