import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroupAt, removeCgroup, type Controller } from '../src/native/cgroup.js';
import { becomeChildSubreaper, kill } from '../src/native/process.js';
import { listThreads, nsPids, readChildren, readStat } from '../src/native/proc.js';
import { reap } from '../src/native/wait.js';
import { Tracer } from '../src/native/tracer.js';
import { initAlive, listStates, readState } from '../src/container/state.js';
import type { ContainerSummary } from '../src/container/runtime.js';
import { ImageReader } from '../src/image/format.js';
import { ContainerEntry } from '../src/image/container.js';
import '../src/image/all.js';
import type { CheckpointSummary } from '../src/source/checkpoint.js';
import type { RestoreSummary } from '../src/target/restore.js';
import { checkpointReaping, jsonOf, migrate, type CliResult } from './helpers/cli.js';
import { workloadBin } from './helpers/paths.js';
import { waitFor } from './helpers/wait.js';

const CGROUP_PARENT = `ferry-test-migrate-${process.pid}`;
const WORKLOADS = ['counter', 'session', 'tree', 'threads', 'zombie', 'unsupported'];
const CONTROLLERS: Controller[] = ['memory', 'cpu'];

function assertOk(result: CliResult): void {
  assert.equal(result.status, 0, `exit ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

/** CLOCK_BOOTTIME as the process sees it (in its time namespace), in seconds. */
function uptimeInside(pid: number): number {
  return Number(execFileSync('nsenter', ['--time', '-t', String(pid), 'cat', '/proc/uptime']).toString().split(' ')[0]);
}

/** A container's processes and threads as /proc shows them. */
interface ContainerTasks {
  /** Host pid → pid inside, of every process and thread. */
  inside: Map<number, number>;
  /** The host pid of every process (not thread). */
  processes: number[];
  /** Every process as the container sees it, without host pids: "3 (parent 1): threads 3 4 5", sorted. */
  tree: string[];
}

function tasksOf(init: number): ContainerTasks {
  const inside = new Map<number, number>();
  const processes: number[] = [];
  const tree: string[] = [];
  const queue = [init];
  while (queue.length) {
    const pid = queue.shift()!;
    processes.push(pid);
    const tids = listThreads(pid).map((tid) => {
      const inner = nsPids(pid, tid).at(-1)!;
      inside.set(tid, inner);
      return inner;
    });
    // Parents come first, so a parent inside the container is known by now.
    const parent = pid === init ? 'outside' : inside.get(Number(readStat(pid).fields[4]));
    tree.push(`${inside.get(pid)} (parent ${parent}): threads ${tids.sort((a, b) => a - b).join(' ')}`);
    queue.push(...readChildren(pid));
  }
  return { inside, processes, tree: tree.sort() };
}

const ascending = (pairs: Iterable<[number, number]>) => [...pairs].sort((a, b) => a[0] - b[0]);

/** [host pid, pid inside] of every process and thread, as the image's container entry lists them. */
async function imagePids(dir: string): Promise<Array<[number, number]>> {
  const image = await ImageReader.open(dir);
  try {
    return image.entriesOf(ContainerEntry)[0]!.pids;
  } finally {
    await image.close();
  }
}

/**
 * A container checkpointed and restored through the CLI, on the same host:
 * its init comes back as pid 1 of a new pid namespace with every pid inside
 * identical, its hostname and the contents of its private /tmp, and the
 * workload in it checks its own state and reports PASS.
 */
describe('containers: migrate checkpoint <name> and restore', function () {
  const saved = { state: process.env['FERRY_STATE_DIR'], cgroup: process.env['FERRY_CGROUP_PARENT'] };
  let stateDir: string;
  let imageRoot: string;
  /** Where the workloads run from: a container's private /tmp hides the host's, where this checkout may live. */
  let binDir: string;
  /** Holds pids for the tests that need them taken. */
  let tracer: Tracer | undefined;

  before(async () => {
    // Containers started by the CLI come back to us when it exits, so we can reap them.
    becomeChildSubreaper();
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-migrate-state-'));
    imageRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-migrate-images-'));
    binDir = fs.mkdtempSync('/var/tmp/ferry-migrate-bin-');
    for (const w of WORKLOADS) fs.copyFileSync(workloadBin(w), path.join(binDir, w));
    for (const w of WORKLOADS) fs.chmodSync(path.join(binDir, w), 0o755);
    process.env['FERRY_STATE_DIR'] = stateDir;
    process.env['FERRY_CGROUP_PARENT'] = CGROUP_PARENT;
    tracer = await Tracer.start();
  });

  afterEach(() => {
    const failures: unknown[] = [];
    for (const s of listStates()) {
      for (const step of [
        () => initAlive(s) && kill(s.pid, 9),
        () => fs.existsSync(`/proc/${s.pid}`) && reap(s.pid, 10_000),
        () => removeCgroup(s.cgroup),
      ]) {
        try {
          step();
        } catch (e) {
          failures.push(e);
        }
      }
    }
    fs.rmSync(path.join(stateDir, 'containers'), { recursive: true, force: true });
    if (failures.length) throw failures[0];
  });

  after(async () => {
    await tracer?.close();
    try {
      removeCgroup(cgroupAt(CGROUP_PARENT, CONTROLLERS));
    } catch {
      // never created, or already gone
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.rmSync(imageRoot, { recursive: true, force: true });
    fs.rmSync(binDir, { recursive: true, force: true });
    for (const [key, value] of [['FERRY_STATE_DIR', saved.state], ['FERRY_CGROUP_PARENT', saved.cgroup]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  async function runWorkload(name: string, workload: string, args: string[] = []): Promise<number> {
    assertOk(await migrate(['run', name, '--hostname', `${name}-host`, '--', path.join(binDir, workload), '/tmp/result', ...args]));
    const pid = readState(name)!.pid;
    await waitFor(`${workload} in ${name} to report READY`, () => fs.existsSync(`/proc/${pid}/root/tmp/result.ready`));
    return pid;
  }

  /** SIGTERM to the container's workload; its verdict is read through a handle on its /tmp, which vanishes with the container. */
  async function verdict(pid: number): Promise<string> {
    const tmp = fs.openSync(`/proc/${pid}/root/tmp`, 'r');
    try {
      kill(pid, 15);
      const result = `/proc/self/fd/${tmp}/result`;
      await waitFor(`the verdict of pid ${pid}`, () => fs.existsSync(result));
      await waitFor(`pid ${pid} to end`, () => !fs.existsSync(`/proc/${pid}`) || fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'));
      reap(pid, 10_000);
      return fs.readFileSync(result, 'utf8').trim();
    } finally {
      fs.closeSync(tmp);
    }
  }


  async function ps(): Promise<ContainerSummary[]> {
    const result = await migrate(['--json', 'ps']);
    assertOk(result);
    return jsonOf<{ containers: ContainerSummary[] }>(result).containers;
  }

  it('a container comes back as itself: pid 1 inside, hostname, /tmp, state, and ps knows it', async () => {
    const pid = await runWorkload('mig1', 'counter');
    fs.writeFileSync(`/proc/${pid}/root/tmp/kept`, 'written before the checkpoint\n');
    const dir = path.join(imageRoot, 'mig1');

    const hostBoot = () => Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    const uptimeBefore = uptimeInside(pid);
    const hostBefore = hostBoot();
    const ck = await checkpointReaping(['--json', 'checkpoint', 'mig1', '-D', dir], pid);
    assertOk(ck);
    // Downtime the container must not see: the host's clocks move on by 1.5 s before it comes back.
    const downFrom = hostBoot();
    await waitFor('1.5 s of downtime to pass', () => hostBoot() - downFrom >= 1.5);
    assert.deepEqual(jsonOf<CheckpointSummary>(ck).pids, [pid]);
    assert.ok(!fs.existsSync(`/proc/${pid}`), 'the container ended with the checkpoint');
    assert.equal((await ps()).find((c) => c.name === 'mig1')?.state, 'exited');

    const rs = await migrate(['--json', 'restore', '-D', dir]);
    assertOk(rs);
    const restored = jsonOf<RestoreSummary>(rs);
    // The same host, but its host pid is whatever the kernel gave it now.
    const live = restored.pid;
    assert.equal(restored.container?.name, 'mig1');
    assert.deepEqual(nsPids(live).slice(-1), [1], 'the init is pid 1 of its namespace again');
    const uptimeAfter = uptimeInside(live);
    const hostAfter = hostBoot();
    // Everything between the freeze and the restore (at least the 1.5 s) is hidden from the container; the rest it lived through.
    assert.ok(uptimeAfter >= uptimeBefore, `CLOCK_BOOTTIME went back inside: ${uptimeBefore} -> ${uptimeAfter}`);
    assert.ok(uptimeAfter - uptimeBefore <= hostAfter - hostBefore - 1.5 + 0.05, `the container saw the downtime: inside ${uptimeBefore} -> ${uptimeAfter}, host ${hostBefore} -> ${hostAfter}`);
    assert.equal(execFileSync('nsenter', ['-u', '-t', String(live), 'hostname']).toString().trim(), 'mig1-host');
    assert.equal(fs.readFileSync(`/proc/${live}/root/tmp/kept`, 'utf8'), 'written before the checkpoint\n');
    const listed = (await ps()).find((c) => c.name === 'mig1');
    assert.equal(listed?.state, 'running');
    assert.equal(listed?.pid, live);

    assert.equal(await verdict(live), 'PASS');
  });

  it('a tree in a container, with sessions, groups and an orphan, keeps every pid inside it', async () => {
    const pid = await runWorkload('mig2', 'session');
    const before = tasksOf(pid);
    assert.equal(before.inside.get(pid), 1);
    const dir = path.join(imageRoot, 'mig2');
    assertOk(await checkpointReaping(['checkpoint', 'mig2', '-D', dir], pid));
    const rs = await migrate(['restore', '-D', dir]);
    assertOk(rs);
    const live = readState('mig2')!.pid;
    assert.equal(rs.stdout.trim().split(' from ')[0], `restored container mig2 (pid 1 inside, host pid ${live}; ${before.processes.length} processes)`);
    assert.deepEqual(tasksOf(live).tree, before.tree, 'pids inside, process by process');
    assert.equal(await verdict(live), 'PASS');
  });

  it('fds on files in the container\'s /tmp come back to the same files, their offset shared across the tree', async () => {
    const pid = await runWorkload('mig3', 'tree', ['2', '2']);
    const before = tasksOf(pid);
    const dir = path.join(imageRoot, 'mig3');
    assertOk(await checkpointReaping(['checkpoint', 'mig3', '-D', dir], pid));
    assertOk(await migrate(['restore', '-D', dir]));
    const live = readState('mig3')!.pid;
    assert.deepEqual(tasksOf(live).tree, before.tree);
    assert.equal(await verdict(live), 'PASS');
  });

  /**
   * On another host (or later on this one) the container's host pids may
   * belong to other processes. Here husks hold every host pid and tid the
   * container had while it comes back: only its pids inside are its own,
   * so it must come back with new host pids, every pid and tid inside as
   * it was, recorded and reported by the new ones.
   */
  for (const [workload, args, what] of [
    ['tree', ['2', '2'], 'a tree of seven processes'],
    ['session', [], 'sessions, groups and an orphan'],
    ['threads', ['4'], 'a process with five threads'],
    ['zombie', [], 'a zombie'],
  ] as const) {
    it(`comes back while its host pids are taken by others: ${what}`, async () => {
      const name = `taken-${workload}`;
      const pid = await runWorkload(name, workload, [...args]);
      const before = tasksOf(pid);
      const dir = path.join(imageRoot, name);
      assertOk(await checkpointReaping(['checkpoint', name, '-D', dir], pid));
      assert.deepEqual(ascending(await imagePids(dir)), ascending(before.inside), 'the image holds exactly the tasks seen in /proc');

      const taken = [...before.inside.keys()];
      const holders = tracer!;
      const holder = await holders.call<{ pid: number }>('husk.spawn');
      try {
        for (const p of taken) if (!fs.existsSync(`/proc/${p}`)) await holders.call('husk.clone', holder.pid, { setTid: [p] });
        assert.deepEqual(taken.filter((p) => !fs.existsSync(`/proc/${p}`)), [], 'every old host pid is in use');

        const rs = await migrate(['--json', 'restore', '-D', dir]);
        assertOk(rs);
        const restored = jsonOf<RestoreSummary>(rs);
        const live = restored.pid;
        assert.deepEqual(nsPids(live), [live, 1], 'the init is pid 1 inside, under a new host pid');
        assert.equal(readState(name)?.pid, live, 'recorded by its new host pid');
        const after = tasksOf(live);
        assert.deepEqual(after.tree, before.tree, 'every pid and tid inside, process by process');
        assert.deepEqual([...after.inside.keys()].filter((p) => before.inside.has(p)), [], 'no old host pid came back');
        assert.deepEqual([...restored.pids].sort((a, b) => a - b), [...after.processes].sort((a, b) => a - b), 'the summary names the new host pids');
        assert.deepEqual(ascending(restored.container!.pids), ascending(after.inside), 'the summary maps the new host pids to the pids inside');
        assert.equal(await verdict(live), 'PASS');
      } finally {
        await holders.call('husk.kill', holder.pid);
      }
    });
  }

  it('refuses a container that holds something unsupported, naming the process and the resource, and leaves it running', async () => {
    const pid = await runWorkload('mig4', 'unsupported', ['inotify']);
    const dir = path.join(imageRoot, 'mig4');
    const refused = await migrate(['--json', 'checkpoint', 'mig4', '-D', dir]);
    assert.equal(refused.status, 4, refused.stdout + refused.stderr);
    const refusals = jsonOf<{ error: { refusals: Array<{ pid: number; resource: string; reason: string }> } }>(refused).error.refusals;
    assert.ok(refusals.some((r) => r.pid === pid && r.resource === 'fd 40' && /inotify/.test(r.reason)), JSON.stringify(refusals));
    assert.ok(!fs.existsSync(dir), 'no image');
    assert.equal((await ps()).find((c) => c.name === 'mig4')?.state, 'running', 'thawed and running');
    assert.equal(await verdict(pid), 'PASS');
  });

  it('refuses a container whose IPC namespace holds System V objects, and leaves it running', async () => {
    assertOk(await migrate(['run', 'mig5', '--', '/bin/sh', '-c', 'ipcmk -M 4096 >/dev/null && echo made > /tmp/ready && exec sleep 3600']));
    const pid = readState('mig5')!.pid;
    await waitFor('the shared memory segment', () => fs.existsSync(`/proc/${pid}/root/tmp/ready`));
    const refused = await migrate(['checkpoint', 'mig5', '-D', path.join(imageRoot, 'mig5')]);
    assert.equal(refused.status, 4, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /container mig5: System V shm: its IPC namespace holds 1 System V shm object/);
    assert.equal((await ps()).find((c) => c.name === 'mig5')?.state, 'running');
  });

  it('refuses a container name it does not know', async () => {
    const unknown = await migrate(['checkpoint', 'nosuch', '-D', path.join(imageRoot, 'x')]);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /no container named "nosuch"/);
  });
});
