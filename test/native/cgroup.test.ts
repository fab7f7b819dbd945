import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  addProcess,
  cgroupAt,
  cgroupDirs,
  cgroupExists,
  createCgroup,
  freeze,
  freezerState,
  listPids,
  memoryUsage,
  removeCgroup,
  setCpuLimit,
  setMemoryLimit,
  thaw,
  type Cgroup,
  type CgroupOptions,
  type Controller,
} from '../../src/native/cgroup.js';
import { NativeError } from '../../src/native/errors.js';
import { readStat } from '../../src/native/proc.js';
import { waitFor } from '../helpers/wait.js';

const CONTROLLERS: Controller[] = ['memory', 'cpu'];
const PARENT = `ferry-test-cgroup-${process.pid}`;

/** CPU time (utime + stime, in clock ticks): it only grows while the task runs. */
function cpuTicks(pid: number): number {
  const { fields } = readStat(pid);
  return Number(fields[14]) + Number(fields[15]);
}

function taskState(pid: number): string {
  return readStat(pid).fields[3]!;
}

describe('cgroups', function () {
  const groups: Cgroup[] = [];
  const children: ChildProcess[] = [];
  let serial = 0;

  function group(options: CgroupOptions = {}): Cgroup {
    const cg = createCgroup(`${PARENT}/g${serial++}`, CONTROLLERS, options);
    groups.push(cg);
    return cg;
  }

  /** A shell spinning on a builtin: always runnable, never sleeping, so any stop is the freezer's doing. */
  function spinner(): ChildProcess {
    const child = spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
    children.push(child);
    return child;
  }

  async function end(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** Runs every cleanup step even when one fails, then reports the first failure. */
  async function cleanUp(steps: Array<() => unknown>): Promise<void> {
    const failures: unknown[] = [];
    for (const step of steps) {
      try {
        await step();
      } catch (e) {
        failures.push(e);
      }
    }
    if (failures.length) throw failures[0];
  }

  afterEach(async function () {
    await cleanUp([
      // A frozen task only dies once thawed (under v1 not even of SIGKILL).
      ...groups.map((cg) => () => cgroupExists(cg) && thaw(cg)),
      ...children.splice(0).map((child) => () => end(child)),
      ...groups.splice(0).map((cg) => () => removeCgroup(cg)),
    ]);
  });

  after(async function () {
    await cleanUp([
      () => removeCgroup(cgroupAt(PARENT, CONTROLLERS)),
      () => removeCgroup(cgroupAt(PARENT, CONTROLLERS, { v1Freezer: true })),
    ]);
  });

  it('creates a group on every hierarchy it spans, refuses to create it twice, and removes it', function () {
    const cg = group();
    assert.ok(cgroupDirs(cg).length >= 1);
    for (const dir of cgroupDirs(cg)) assert.ok(fs.existsSync(path.join(dir, 'cgroup.procs')), `${dir} is a cgroup`);
    assert.throws(() => createCgroup(cg.path, CONTROLLERS), (e: unknown) => e instanceof NativeError && e.code === 'EEXIST');
    removeCgroup(cg);
    for (const dir of cgroupDirs(cg)) assert.ok(!fs.existsSync(dir), `${dir} is gone`);
  });

  it('takes in a process on every hierarchy and lists it', async function () {
    const cg = group();
    const child = spinner();
    addProcess(cg, child.pid!);
    assert.deepEqual(listPids(cg), [child.pid]);
    const cgroupFile = fs.readFileSync(`/proc/${child.pid}/cgroup`, 'utf8');
    const inGroup = cgroupFile.split('\n').filter((line) => line.endsWith(`:/${cg.path}`));
    assert.equal(inGroup.length, cgroupDirs(cg).length, cgroupFile);
  });

  it('will not remove a group with a process in it, and says which', async function () {
    const cg = group();
    const child = spinner();
    addProcess(cg, child.pid!);
    assert.throws(() => removeCgroup(cg, 50), (e: unknown) => e instanceof NativeError && e.code === 'EBUSY' && e.message.includes(String(child.pid)));
  });

  for (const kind of ['v2', 'v1'] as const) {
    it(`freezes and thaws with the ${kind} freezer`, async function () {
      const cg = group({ v1Freezer: kind === 'v1' });
      if (kind === 'v2' && cg.freezer !== 'v2') this.skip();
      assert.equal(cg.freezer, kind);
      const subject = spinner();
      const control = spinner();
      addProcess(cg, subject.pid!);
      await waitFor('the subject to run', () => cpuTicks(subject.pid!) > 0);
      assert.equal(freezerState(cg), 'thawed');

      freeze(cg);
      assert.equal(freezerState(cg), 'frozen');
      assert.notEqual(taskState(subject.pid!), 'R', 'a frozen task is not runnable');
      const frozenAt = cpuTicks(subject.pid!);
      // While the control, an identical loop outside the group, gets 20 ticks of CPU, the subject gets none.
      const controlStart = cpuTicks(control.pid!);
      await waitFor('the control loop to run 20 ticks', () => cpuTicks(control.pid!) >= controlStart + 20, 20_000);
      assert.equal(cpuTicks(subject.pid!), frozenAt, 'the frozen loop did not run');

      thaw(cg);
      assert.equal(freezerState(cg), 'thawed');
      await waitFor('the thawed loop to run again', () => cpuTicks(subject.pid!) > frozenAt + 5, 20_000);
    });
  }

  it('freezes an empty group at once, and a group twice without harm', function () {
    const cg = group();
    freeze(cg);
    freeze(cg);
    assert.equal(freezerState(cg), 'frozen');
    thaw(cg);
    assert.equal(freezerState(cg), 'thawed');
  });

  it('applies a memory limit: a process that needs more is OOM-killed inside the group', async function () {
    const cg = group();
    setMemoryLimit(cg, 32 * 1024 * 1024);
    const limitFile = cg.v2Controllers.includes('memory') ? path.join(cg.unified!, 'memory.max') : path.join(cg.v1.memory!, 'memory.limit_in_bytes');
    assert.equal(fs.readFileSync(limitFile, 'utf8').trim(), String(32 * 1024 * 1024));
    // The shell waits for a line on stdin, so it is in the group before Python allocates anything.
    const child = spawn('sh', ['-c', 'read go; exec python3 -c "b = b\\"x\\" * (256 << 20); print(len(b))"'], { stdio: ['pipe', 'pipe', 'ignore'] });
    children.push(child);
    const exit = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    addProcess(cg, child.pid!);
    child.stdin!.end('go\n');
    assert.equal(await exit, 'SIGKILL', 'the OOM killer ended it');
    assert.ok((memoryUsage(cg) ?? -1) >= 0);
  });

  it('applies a CPU limit as a CFS quota', function () {
    const cg = group();
    setCpuLimit(cg, 0.5);
    if (cg.v2Controllers.includes('cpu')) assert.equal(fs.readFileSync(path.join(cg.unified!, 'cpu.max'), 'utf8').trim(), '50000 100000');
    else {
      assert.equal(fs.readFileSync(path.join(cg.v1.cpu!, 'cpu.cfs_period_us'), 'utf8').trim(), '100000');
      assert.equal(fs.readFileSync(path.join(cg.v1.cpu!, 'cpu.cfs_quota_us'), 'utf8').trim(), '50000');
    }
  });

  it('reports the memory charged to the group', async function () {
    const cg = group();
    // Charges follow the process that allocates, so the allocation happens after the move.
    const child = spawn('sh', ['-c', 'read go; exec python3 -c "import sys; b = b\\"x\\" * (16 << 20); print(1, flush=True); sys.stdin.read()"'], { stdio: ['pipe', 'pipe', 'ignore'] });
    children.push(child);
    addProcess(cg, child.pid!);
    const allocated = new Promise((resolve) => child.stdout!.once('data', resolve));
    child.stdin!.write('go\n');
    await allocated;
    assert.ok(memoryUsage(cg)! >= 16 * 1024 * 1024, `memory usage ${memoryUsage(cg)}`);
  });

  it('refuses a path that leaves the hierarchy', function () {
    for (const bad of ['../escape', '/abs', '.']) {
      assert.throws(() => cgroupAt(bad, CONTROLLERS), (e: unknown) => e instanceof NativeError && e.code === 'EINVAL', bad);
    }
  });
});
