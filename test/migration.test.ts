import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import { readInventory, writeInventory } from '../src/cluster/inventory.js';
import { CONTAINER_CONTROLLERS } from '../src/container/runtime.js';
import { nsPids, readChildren } from '../src/native/proc.js';
import { cgroupAt, listPids } from '../src/native/cgroup.js';
import { labAgent } from '../src/lab/lab.js';
import { agentLogPath, hostCgroupParent } from '../src/lab/layout.js';
import { readRecord } from '../src/lab/record.js';
import { jsonOf, lastJsonOf, migrate, type CliResult } from './helpers/cli.js';
import { ROOT, workloadBin } from './helpers/paths.js';
import { initOf, ok, ps, running, useLab, verdict, waitReady } from './helpers/lab.js';
import { waitFor } from './helpers/wait.js';


interface Report {
  id: string;
  outcome: 'done' | 'rolled-back';
  error: string | null;
  frozenMs: number | null;
  bytes: number | null;
  pids: number[] | null;
  from: string;
  to: string;
}

interface JournalView {
  id: string;
  role: 'source' | 'target';
  phase: string;
  reportedBy: string;
}


/**
 * Migrations for real, between the hosts of a lab: each host has its own
 * pid, mount, net, uts and ipc namespaces and its own agent; the CLI runs
 * here, in the root namespaces, like an operator's. The workloads check
 * their own state and report PASS or FAIL when they are finally stopped.
 * The faults kill agents at the points where a migration is most fragile
 * (FERRY_CRASH_AT, coordinator/faults.ts) and check that the workload runs
 * in exactly one place, with its state, afterwards.
 */
describe('migrations between lab hosts', function () {
  this.timeout(180_000);
  // Workloads run from where every lab host and container sees them (a container's /tmp is its own).
  const lab = useLab(3, [workloadBin('counter'), workloadBin('session'), path.join(ROOT, 'test/workloads/counter.py')]);

  afterEach(async function () {
    // Every agent back to normal, every container gone, whatever the test did.
    for (const host of ['lab-1', 'lab-2', 'lab-3']) await labAgent(host, 'restart');
    for (const c of await ps()) {
      if (c.state !== 'exited') ok(await migrate(['lab', 'exec', c.host, '--', process.execPath, path.join(ROOT, 'bin/migrate'), 'stop', c.name, '--timeout', '0']));
    }
  });



  /** Starts a container on a host and waits for its workload's READY. */
  async function run(host: string, name: string, command: string[]): Promise<void> {
    ok(await migrate(['run', name, '--host', host, '--', ...command]));
    await waitReady(name, `${name} on ${host} to be READY`);
  }


  /** Every process of the container: its pid inside, with its parent's pid inside, sorted. */
  function treeInside(init: number): string[] {
    const out: string[] = [];
    const walk = (p: number, parentInside: number) => {
      const inside = nsPids(p).at(-1)!;
      out.push(`${parentInside}->${inside}`);
      for (const c of readChildren(p)) walk(c, inside);
    };
    walk(init, 0);
    return out.sort();
  }


  async function move(name: string, to: string, extra: string[] = []): Promise<{ result: CliResult; report: Report }> {
    const result = await migrate(['--json', name, '--to', to, ...extra]);
    return { result, report: lastJsonOf<Report>(result) };
  }

  async function journal(id: string): Promise<JournalView[]> {
    const r = await migrate(['--json', 'status', id]);
    ok(r);
    return jsonOf<{ records: JournalView[] }>(r).records;
  }

  it('a C process tree and a Python program move lab-1 → lab-2 → lab-3, keep every pid inside, and PASS', async () => {
    await run('lab-1', 'tree', [path.join(lab.binDir, 'session'), '/tmp/result']);
    await run('lab-1', 'py', ['python3', path.join(lab.binDir, 'counter.py'), '/tmp/result']);
    const before = treeInside((await initOf('tree'))!);
    for (const [from, to] of [['lab-1', 'lab-2'], ['lab-2', 'lab-3']] as const) {
      for (const name of ['tree', 'py']) {
        const { result, report } = await move(name, to);
        ok(result);
        assert.equal(report.outcome, 'done');
        assert.equal(report.from, from);
        assert.ok(report.frozenMs! > 0 && report.bytes! > 0);
        assert.deepEqual((await running(name)).map((c) => c.host), [to], `${name} runs on ${to} only`);
      }
      assert.deepEqual(treeInside((await initOf('tree'))!), before, 'the same pids inside, with the same parents');
    }
    const listed = await ps();
    assert.ok(listed.some((c) => c.name === 'tree' && c.host === 'lab-1' && c.state === 'exited'));
    assert.equal(await verdict('tree'), 'PASS');
    assert.equal(await verdict('py'), 'PASS');
  });

  it('a container keeps running while its agent restarts, and the new agent finds it and moves it', async () => {
    await run('lab-1', 'steady', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    const init = await initOf('steady');
    await labAgent('lab-1', 'stop');
    assert.ok(fs.existsSync(`/proc/${init}`), 'the container outlives its agent');
    await labAgent('lab-1', 'start');
    assert.deepEqual((await running('steady')).map((c) => c.host), ['lab-1']);
    ok((await move('steady', 'lab-2')).result);
    assert.equal(await verdict('steady'), 'PASS');
  });

  it('the target agent dies during the stream: rolled back, the source runs on, the restarted target keeps nothing', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    await labAgent('lab-2', 'restart', { FERRY_CRASH_AT: 'target-during-stream' });
    const { result, report } = await move('web', 'lab-2');
    assert.equal(result.status, 5, result.stderr);
    assert.equal(report.outcome, 'rolled-back');
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    await labAgent('lab-2', 'restart');
    await waitFor('lab-2 to discard what it received', async () => (await journal(report.id)).some((r) => r.role === 'target' && r.phase === 'discarded'));
    // A lab host has its own /dev/shm, seen here through its init's root.
    const staging = `/proc/${readRecord()!.hosts.find((h) => h.name === 'lab-2')!.init.pid}/root/dev/shm/ferry/lab-2`;
    assert.deepEqual(fs.readdirSync(staging), [], 'no image left in lab-2\'s staging');
    assert.equal(await verdict('web'), 'PASS');
  });

  it('the target agent dies after restoring, before the commit: the source thaws, the target kills its frozen copy', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    await labAgent('lab-2', 'restart', { FERRY_CRASH_AT: 'target-after-restore' });
    const { result, report } = await move('web', 'lab-2');
    assert.equal(result.status, 5, result.stderr);
    const copy = cgroupAt(`${hostCgroupParent('lab-2')}/web`, CONTAINER_CONTROLLERS);
    assert.ok(listPids(copy).length > 0, 'the frozen copy waits on lab-2');
    await labAgent('lab-2', 'restart');
    await waitFor('lab-2 to end its frozen copy', async () => (await journal(report.id)).some((r) => r.role === 'target' && r.phase === 'discarded'), 30_000);
    assert.deepEqual(listPids(copy), []);
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    assert.equal(await verdict('web'), 'PASS');
  });

  it('the source agent dies after the freeze: the CLI says so, and the restarted source thaws the workload', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    await labAgent('lab-1', 'restart', { FERRY_CRASH_AT: 'source-after-freeze' });
    const result = await migrate(['web', '--to', 'lab-2']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /lost the connection to lab-1 during migration ([0-9a-f]{12}).*migrate status/);
    const id = /during migration ([0-9a-f]{12})/.exec(result.stderr)![1]!;
    await labAgent('lab-1', 'restart');
    await waitFor('lab-1 to roll the migration back', async () => (await journal(id)).some((r) => r.role === 'source' && r.phase === 'rolled-back'));
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    assert.equal(await verdict('web'), 'PASS');
  });

  it('the lab link goes down mid-stream: both sides time out, the source runs on', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    await labAgent('lab-2', 'restart', { FERRY_STALL_AT: 'target-during-stream' });
    const cli = migrate(['--json', 'web', '--to', 'lab-2']);
    await waitFor('the stream to stall on lab-2', () => fs.readFileSync(agentLogPath('lab-2'), 'utf8').includes('stalling at target-during-stream'), 30_000);
    const veth = 'ferry-lab-2';
    try {
      ok(await migrate(['lab', 'exec', 'lab-1', '--', 'true'])); // the lab is alive
      await setLink(veth, 'down');
      const result = await cli;
      assert.equal(result.status, 5, result.stderr);
      assert.match(lastJsonOf<Report>(result).error!, /TIMEOUT|did not answer|lost|timed out/i);
    } finally {
      await setLink(veth, 'up');
    }
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    assert.equal(await verdict('web'), 'PASS');
  });

  it('`migrate cancel` rolls a migration in progress back; the workload runs on at the source', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    await labAgent('lab-2', 'restart', { FERRY_STALL_AT: 'target-during-stream' });
    // The log outlives restarts: only what this agent writes counts.
    const logFrom = fs.statSync(agentLogPath('lab-2')).size;
    const cli = migrate(['--json', 'web', '--to', 'lab-2']);
    await waitFor('the stream to stall on lab-2', () => fs.readFileSync(agentLogPath('lab-2')).subarray(logFrom).includes('stalling at target-during-stream'), 30_000);
    const status = await migrate(['--json', 'status']);
    ok(status);
    const streaming = jsonOf<{ migrations: JournalView[] }>(status).migrations.filter((m) => m.role === 'source' && m.phase === 'streaming');
    assert.equal(streaming.length, 1, `one migration streams: ${status.stdout}`);
    const id = streaming[0]!.id;

    const cancel = await migrate(['--json', 'cancel', id]);
    ok(cancel);
    assert.deepEqual(jsonOf(cancel), { id, host: 'lab-1', phase: 'streaming' });
    // The source is blocked inside the stream, waiting for credit the stalled target never gives: a cancel that only
    // took effect at the next step would never be heard, and the CLI would wait for good.
    let deadline: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      cli,
      new Promise<never>((_, reject) => (deadline = setTimeout(() => reject(new Error(`migration ${id} did not end within 60 s of its cancel`)), 60_000))),
    ]).finally(() => clearTimeout(deadline));
    assert.equal(result.status, 5, result.stderr);
    const report = lastJsonOf<Report>(result);
    assert.equal(report.outcome, 'rolled-back');
    assert.match(report.error!, /cancelled by the operator/);
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    await waitFor('lab-2 to discard what it received', async () => (await journal(id)).some((r) => r.role === 'target' && r.phase === 'discarded'));
    assert.equal(await verdict('web'), 'PASS');
  });

  it('the CLI dies mid-migration: the migration goes on, and `migrate status` tells how it ended', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);
    const cli = spawn(process.execPath, [path.join(ROOT, 'bin/migrate'), 'web', '--to', 'lab-3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    cli.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await waitFor('the migration to start', () => /migration [0-9a-f]{12}/.test(stderr), 30_000);
    cli.kill('SIGKILL');
    const id = /migration ([0-9a-f]{12})/.exec(stderr)![1]!;
    await waitFor('the migration to end', async () => (await journal(id)).some((r) => r.role === 'source' && (r.phase === 'done' || r.phase === 'rolled-back')), 60_000);
    const source = (await journal(id)).find((r) => r.role === 'source')!;
    assert.equal(source.phase, 'done');
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-3']);
    assert.equal(await verdict('web'), 'PASS');
  });

  it('refuses what it cannot do, clearly, and touches nothing', async () => {
    await run('lab-1', 'web', [path.join(lab.binDir, 'counter'), '/tmp/result']);

    const unknown = await migrate(['nosuch', '--to', 'lab-2']);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /no container named "nosuch" runs on any host/);

    const nowhere = await migrate(['web', '--to', 'lab-9']);
    assert.equal(nowhere.status, 2);
    assert.match(nowhere.stderr, /no host named "lab-9" in .*cluster\.json \(it has lab-1, lab-2, lab-3\)/);

    await labAgent('lab-2', 'restart', {}, ['--memory-reserve', '1000t']);
    const full = await move('web', 'lab-2');
    assert.equal(full.result.status, 5);
    assert.match(full.report.error!, /lab-2 has no room: the container needs about .* and lab-2 has 0\.0 MiB to spare/);

    // A wrong token: the agent refuses the connection, says so, and keeps serving.
    const inventory = readInventory()!;
    const wrong = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-wrong-token-'));
    try {
      writeInventory({ ...inventory, token: 'ab'.repeat(32) }, path.join(wrong, 'cluster.json'));
      const r = await migrate(['web', '--to', 'lab-2'], { FERRY_CONFIG_DIR: wrong });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /token/);
    } finally {
      fs.rmSync(wrong, { recursive: true, force: true });
    }

    // Garbage on the wire: that connection is closed, the agent serves the next one.
    const address = inventory.hosts['lab-1']!.address;
    await new Promise<void>((resolve) => {
      const ws = new WebSocket(`ws://${address}/`);
      ws.on('open', () => ws.send(Buffer.from('this is not a Ferry frame')));
      ws.on('close', () => resolve());
      ws.on('error', () => resolve());
    });
    assert.deepEqual((await running('web')).map((c) => c.host), ['lab-1']);
    assert.equal(await verdict('web'), 'PASS');
  });
});

async function setLink(name: string, state: 'up' | 'down'): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const ip = spawn('ip', ['link', 'set', name, state], { stdio: 'inherit' });
    ip.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`ip link set ${name} ${state}: exit ${code}`))));
  });
}
