import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Tracer } from '../../src/native/tracer.js';
import { startEngine, imageDir, checkpoint, restore, cleanupImages } from '../helpers/engine.js';
import { waitFor } from '../helpers/wait.js';
import { killTree } from '../helpers/workload.js';

/**
 * Programs nobody wrote for Ferry, holding their state only in memory: each
 * counts in a loop and appends its counter to a log every 20000 steps. A
 * restore that lost or reset memory shows up as a log that does not climb
 * by the same step from line to line.
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

/** Three Python threads count independently; after the restore each must still be counting. */
const PYTHON_THREADS = `
import threading, time, os
counts = [0, 0, 0]
stop = False
def work(i):
    while not stop:
        counts[i] += 1
        time.sleep(0.001)
threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
for t in threads: t.start()
n = 0
while not os.path.exists("stop"):
    n += 1
    time.sleep(0.005)
    if n % 20 == 0:
        with open("log", "a") as f: f.write(f"{n}\\n")
before = list(counts)
time.sleep(0.2)
after = list(counts)
stop = True
for t in threads: t.join()
ok = all(b > a for a, b in zip(before, after))
with open("log", "a") as f: f.write(f"final {n} {'PASS' if ok else f'FAIL threads stopped counting: {before} -> {after}'}\\n")
`;

/** A bash pipeline of three processes: every tenth number reaches the log, so the log climbs by 10. */
const PIPELINE = 'i=0; while [ ! -e stop ]; do i=$((i+1)); echo $i; done | grep --line-buffered "0$" | while read n; do echo $n >> log; done; echo "final done" >> log';

/** Python multiprocessing: two workers feed a queue (pipes, /dev/shm semaphores); the parent checks every sequence. */
const PYTHON_MP = `
import multiprocessing as mp, os, time
def work(q, i):
    n = 0
    while True:
        n += 1
        q.put((i, n))
        time.sleep(0.002)
if __name__ == "__main__":
    q = mp.Queue()
    ps = [mp.Process(target=work, args=(q, i), daemon=True) for i in range(2)]
    for p in ps: p.start()
    last, gaps, got = {}, [], 0
    while not os.path.exists("stop"):
        i, n = q.get()
        if i in last and n != last[i] + 1: gaps.append((i, last[i], n))
        last[i] = n
        got += 1
        if got % 40 == 0:
            with open("log", "a") as f: f.write(f"{got}\\n")
    with open("log", "a") as f: f.write(f"final {got} {'PASS' if not gaps and len(last) == 2 else f'FAIL gaps {gaps[:3]} workers {sorted(last)}'}\\n")
`;

/** Node.js (a multi-threaded runtime: libuv and V8 threads) keeping its state in a Map. */
const NODE = `
const fs = require('fs');
const state = new Map();
let n = 0;
const timer = setInterval(() => {
  n++;
  state.set(n, n * 7);
  if (n % 20 === 0) fs.appendFileSync('log', n + '\\n');
  if (fs.existsSync('stop')) {
    clearInterval(timer);
    let ok = state.size === n;
    for (let i = 1; i <= n; i++) if (state.get(i) !== i * 7) ok = false;
    fs.appendFileSync('log', 'final ' + n + (ok ? ' PASS' : ' FAIL state lost') + '\\n');
  }
}, 2);
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
    // The whole tree: a pipeline's or multiprocessing's children would spin on, orphaned, after a failure.
    if (pid) await killTree(tracer, pid);
    pid = 0;
    fs.rmSync(dir, { recursive: true, force: true });
    cleanupImages();
  });

  const logLines = () => (fs.existsSync(path.join(dir, 'log')) ? fs.readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n') : []);

  /** A wait that fails says what the program had logged and printed by then. */
  async function explained(wait: Promise<void>): Promise<void> {
    try {
      await wait;
    } catch (e) {
      const err = fs.existsSync(path.join(dir, 'err')) ? fs.readFileSync(path.join(dir, 'err'), 'utf8') : '';
      throw new Error(`${(e as Error).message}; pid ${pid} ${pid && fs.existsSync(`/proc/${pid}`) ? 'alive' : 'gone'}; log: ${logLines().slice(-5).join(' | ')}; stderr: ${err.slice(-500)}`);
    }
  }

  async function run(program: string, argv: string[], beforeCheckpoint?: (pid: number) => void, afterRestore?: (pid: number) => void, tree = false): Promise<string[]> {
    pid = await tracer.call<number>('spawn', program, { argv, cwd: dir, stdout: { path: path.join(dir, 'out') }, stderr: { path: path.join(dir, 'err') } });
    await explained(waitFor('the program to log twice', () => logLines().length >= 2, 30_000));
    beforeCheckpoint?.(pid);
    const image = imageDir();
    await checkpoint(tracer, pid, image, { tree });
    const atCheckpoint = logLines().length;
    const r = await restore(tracer, image);
    assert.equal(r.pid, pid);
    afterRestore?.(pid);
    await explained(waitFor('the restored program to log three more times', () => logLines().length >= atCheckpoint + 3, 30_000));
    fs.writeFileSync(path.join(dir, 'stop'), '');
    const end = await tracer.call<{ kind: string; code?: number }>('reap', pid, 10_000);
    pid = 0;
    assert.deepEqual(end, { kind: 'exited', pid: r.pid, code: 0 }, `stderr: ${fs.readFileSync(path.join(dir, 'err'), 'utf8')}`);
    const lines = logLines();
    const counts = lines.filter((l) => !l.startsWith('final')).map(Number);
    // Each program logs every `step` iterations: a lost or reset counter breaks the progression.
    const step = counts[0]!;
    counts.forEach((n, i) => assert.equal(n, (i + 1) * step, `log line ${i + 1} continues the count: ${lines.join(' ')}`));
    return lines;
  }

  it('bash keeps its loop variable', async () => {
    const lines = await run('/bin/bash', ['bash', '-c', BASH]);
    assert.match(lines.at(-1)!, /^final \d+$/);
  });

  it('python3 with three threads keeps every thread, each with its tid, counting', async () => {
    const tidsOf = (p: number) => fs.readdirSync(`/proc/${p}/task`).map(Number).sort((a, b) => a - b);
    let tids: number[] = [];
    const lines = await run('/usr/bin/python3', ['python3', '-c', PYTHON_THREADS], (p) => {
      tids = tidsOf(p);
      assert.equal(tids.length, 4, 'a main thread and three workers');
    }, (p) => assert.deepEqual(tidsOf(p), tids, 'every thread is back with its tid'));
    assert.match(lines.at(-1)!, /^final \d+ PASS$/);
  });

  it('a bash pipeline of three processes keeps streaming through its pipes', async () => {
    const lines = await run('/bin/bash', ['bash', '-c', PIPELINE], undefined, undefined, true);
    assert.equal(lines.at(-1), 'final done');
  });

  it('python3 multiprocessing workers keep feeding their queue without a gap', async () => {
    const lines = await run('/usr/bin/python3', ['python3', '-c', PYTHON_MP], undefined, undefined, true);
    assert.match(lines.at(-1)!, /^final \d+ PASS$/);
  });

  it('node keeps its event loop, timers and heap', async () => {
    const lines = await run('/usr/bin/node', ['node', '-e', NODE]);
    assert.match(lines.at(-1)!, /^final \d+ PASS$/);
  });

  it('python3 keeps its objects and finishes with an intact blob', async () => {
    const lines = await run('/usr/bin/python3', ['python3', '-c', PYTHON]);
    assert.match(lines.at(-1)!, /^final \d+ PASS$/);
  });
});
