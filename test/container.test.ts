import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroupAt, cgroupExists, freeze, removeCgroup, thaw, type Controller } from '../src/native/cgroup.js';
import { listMounts } from '../src/native/mount.js';
import { NAMESPACE_KINDS, namespaceIds } from '../src/native/namespaces.js';
import { readStat } from '../src/native/proc.js';
import { becomeChildSubreaper, kill } from '../src/native/process.js';
import { reap } from '../src/native/wait.js';
import { initAlive, listStates, readState, type ContainerState } from '../src/container/state.js';
import type { ContainerSummary, StopReport } from '../src/container/runtime.js';
import { ExitCode } from '../src/cli/exit-codes.js';
import { jsonOf, migrate, type CliResult } from './helpers/cli.js';
import { ROOT } from './helpers/paths.js';
import { waitFor } from './helpers/wait.js';

const CONTROLLERS: Controller[] = ['memory', 'cpu'];
const CGROUP_PARENT = `ferry-test-containers-${process.pid}`;
const HOST_MARKER = path.join(os.tmpdir(), `ferry-host-marker-${process.pid}`);
const INSIDE_MARKER = `ferry-inside-marker-${process.pid}`;

interface JsonError {
  error: { message: string; code: string | null };
}

function state(name: string): ContainerState {
  const s = readState(name);
  assert.ok(s, `a state file for ${name}`);
  return s;
}

function log(name: string): string {
  return fs.readFileSync(path.join(process.env['FERRY_STATE_DIR']!, 'containers', name, 'log'), 'utf8');
}

/** The key=value lines a probe script printed. */
function probes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

function parentOf(pid: number): number {
  return Number(readStat(pid).fields[4]);
}

async function ps(): Promise<ContainerSummary[]> {
  const result = await migrate(['--json', 'ps']);
  assert.equal(result.status, 0, result.stderr);
  return jsonOf<{ containers: ContainerSummary[] }>(result).containers;
}

function assertOk(result: CliResult): void {
  assert.equal(result.status, 0, `exit ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

/** The init of a stopped container is our zombie child (we are a subreaper and the CLI that started it has exited). */
async function reapInit(s: ContainerState): Promise<void> {
  await waitFor(`pid ${s.pid} to end`, () => !initAlive(s), 10_000);
  reap(s.pid, 10_000);
}

describe('containers (migrate run, ps, logs, stop)', function () {
  const savedEnv = { state: process.env['FERRY_STATE_DIR'], cgroup: process.env['FERRY_CGROUP_PARENT'] };
  let stateDir: string;

  before(function () {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-containers-'));
    // The CLI inherits these: every container of this file lives in a temporary state directory and a cgroup parent of its own.
    process.env['FERRY_STATE_DIR'] = stateDir;
    process.env['FERRY_CGROUP_PARENT'] = CGROUP_PARENT;
    // Once `migrate run` exits, its containers' inits come to us, so we can reap them.
    becomeChildSubreaper();
    fs.writeFileSync(HOST_MARKER, 'host');
  });

  after(function () {
    // Every step runs even if one fails, so one stuck container does not leave the rest behind.
    const failures: unknown[] = [];
    const attempt = (step: () => void): void => {
      try {
        step();
      } catch (e) {
        failures.push(e);
      }
    };
    for (const s of listStates()) {
      attempt(() => {
        if (initAlive(s)) kill(s.pid, 9);
      });
      attempt(() => {
        // Ours to reap once the CLI that started it has exited; ECHILD when already reaped.
        if (fs.existsSync(`/proc/${s.pid}`)) reap(s.pid, 10_000);
      });
      attempt(() => removeCgroup(s.cgroup));
    }
    attempt(() => removeCgroup(cgroupAt(CGROUP_PARENT, CONTROLLERS)));
    attempt(() => fs.rmSync(stateDir, { recursive: true, force: true }));
    attempt(() => fs.rmSync(HOST_MARKER, { force: true }));
    attempt(() => fs.rmSync(path.join(os.tmpdir(), INSIDE_MARKER), { force: true }));
    for (const [key, value] of [['FERRY_STATE_DIR', savedEnv.state], ['FERRY_CGROUP_PARENT', savedEnv.cgroup]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    if (failures.length) throw failures[0];
  });

  describe('a running container', function () {
    const PROBE = [
      'echo "hostname=$(hostname)"',
      'echo "pid=$$"',
      'echo "catpid=$(cut -d" " -f1 /proc/self/stat)"',
      `echo "procs=$(ls /proc | grep -c '^[0-9]')"`,
      'echo "foo=$FOO"',
      'echo "cwd=$(pwd)"',
      `echo "net=$(ls /sys/class/net | tr '\\n' ' ')"`,
      'echo "loflags=$(cat /sys/class/net/lo/flags)"',
      'if touch /ferry-probe 2>/dev/null; then echo root=rw; else echo root=ro; fi',
      'echo "tmpfs=$(stat -f -c %T /tmp)"',
      `echo inside > /tmp/${INSIDE_MARKER} && echo tmpwrite=ok`,
      `if [ -e ${HOST_MARKER} ]; then echo hosttmp=visible; else echo hosttmp=hidden; fi`,
      'echo probe-done',
      "trap 'echo got-term; exit 0' TERM",
      'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05 & wait $!; done',
    ].join('\n');
    let s: ContainerState;
    let seen: Map<string, string>;

    before(async function () {
      const result = await migrate(['run', 'probe', '--hostname', 'box', '--env', 'FOO=bar baz', '--cwd', '/usr', '--', 'sh', '-c', PROBE]);
      assertOk(result);
      s = state('probe');
      await waitFor('the probe to finish', () => log('probe').includes('probe-done'));
      seen = probes(log('probe'));
    });

    it('runs its command as pid 1 of its own pid namespace', function () {
      assert.equal(s.pidInside, 1);
      assert.equal(seen.get('pid'), '1', 'echo $$ in the init');
      assert.ok(Number(seen.get('catpid')) < 10, `cat's pid inside: ${seen.get('catpid')}`);
      assert.ok(Number(seen.get('procs')) <= 5, `processes visible in its /proc: ${seen.get('procs')}`);
      assert.notEqual(s.pid, 1);
    });

    it('has its own pid, mount, uts, ipc, net, cgroup and time namespaces', function () {
      const ours = namespaceIds('self');
      for (const kind of NAMESPACE_KINDS) {
        if (kind === 'user') assert.equal(s.namespaces.user, ours.user, 'no user namespace of its own');
        else assert.notEqual(s.namespaces[kind], ours[kind], `${kind} namespace`);
      }
      assert.deepEqual(namespaceIds(s.pid), s.namespaces);
    });

    it('has the hostname, environment and working directory it was given', function () {
      assert.equal(seen.get('hostname'), 'box');
      assert.equal(seen.get('foo'), 'bar baz');
      assert.equal(seen.get('cwd'), '/usr');
    });

    it('has a network with only loopback, and loopback is up', function () {
      assert.equal(seen.get('net')?.trim(), 'lo');
      assert.equal(Number(seen.get('loflags')) & 1, 1, `IFF_UP in ${seen.get('loflags')}`);
    });

    it('sees the host root read-only and has a private tmpfs on /tmp', function () {
      assert.equal(seen.get('root'), 'ro');
      assert.equal(seen.get('tmpfs'), 'tmpfs');
      assert.equal(seen.get('tmpwrite'), 'ok');
      assert.equal(seen.get('hosttmp'), 'hidden', "the host's /tmp is not visible inside");
      assert.ok(!fs.existsSync(path.join(os.tmpdir(), INSIDE_MARKER)), "its /tmp is not the host's");
      const mounts = listMounts(s.pid);
      const mountAt = (p: string) => mounts.filter((m) => m.mountPoint === p).at(-1);
      assert.ok(mountAt('/')!.options.includes('ro'), 'its / is mounted read-only');
      assert.equal(mountAt('/tmp')!.fsType, 'tmpfs');
      assert.equal(mountAt('/proc')!.fsType, 'proc');
      assert.ok(!mounts.some((m) => m.mountPoint.startsWith('/sys/fs/cgroup')), "the host's cgroup mounts are not there");
    });

    it('runs in its cgroup, and outlives the CLI that started it', async function () {
      const cgroupLines = fs.readFileSync(`/proc/${s.pid}/cgroup`, 'utf8');
      assert.match(cgroupLines, new RegExp(`:/${CGROUP_PARENT}/probe$`, 'm'));
      assert.equal(parentOf(s.pid), process.pid, 'the init was handed up to us, the nearest subreaper, when the CLI exited');
      const ticks = (): number => (log('probe').match(/^tick /gm) ?? []).length;
      const now = ticks();
      await waitFor('it to go on ticking', () => ticks() >= now + 3);
    });

    it('is listed by ps --json as running, with its memory and uptime', async function () {
      const entry = (await ps()).find((c) => c.name === 'probe');
      assert.ok(entry, 'probe is listed');
      assert.equal(entry.state, 'running');
      assert.equal(entry.pid, s.pid);
      assert.ok(entry.memoryBytes! > 0, `memory ${entry.memoryBytes}`);
      assert.ok(entry.uptimeSeconds! >= 0);
      assert.deepEqual(entry.command.slice(0, 2), ['sh', '-c']);
    });

    it('is listed as frozen while its cgroup is frozen', async function () {
      freeze(s.cgroup);
      try {
        assert.equal((await ps()).find((c) => c.name === 'probe')?.state, 'frozen');
      } finally {
        thaw(s.cgroup);
      }
      assert.equal((await ps()).find((c) => c.name === 'probe')?.state, 'running');
    });

    it('prints a table for people', async function () {
      const result = await migrate(['ps']);
      assertOk(result);
      assert.match(result.stdout, /^NAME\s+PID\s+STATE\s+MEMORY\s+UPTIME\s+COMMAND$/m);
      assert.match(result.stdout, new RegExp(`^probe\\s+${s.pid}\\s+running\\s+\\d`, 'm'));
    });

    it('shows its output with logs', async function () {
      const result = await migrate(['logs', 'probe']);
      assertOk(result);
      assert.match(result.stdout, /^hostname=box$/m);
      assert.match(result.stdout, /^tick 1$/m);
    });

    it('refuses a second container with the same name', async function () {
      const result = await migrate(['--json', 'run', 'probe', '--', 'true']);
      assert.equal(result.status, ExitCode.Failed);
      const { error } = jsonOf<JsonError>(result);
      assert.equal(error.code, 'NAME_TAKEN');
      assert.match(error.message, /already running/);
      assert.equal(state('probe').pid, s.pid, 'the running one is untouched');
    });

    it('stops with SIGTERM, loses its cgroup and keeps its log', async function () {
      const result = await migrate(['--json', 'stop', 'probe']);
      assertOk(result);
      const report = jsonOf<StopReport>(result);
      assert.equal(report.signal, 'SIGTERM');
      assert.equal(report.wasRunning, true);
      await reapInit(s);
      assert.match(log('probe'), /^got-term$/m);
      assert.ok(!cgroupExists(s.cgroup), 'its cgroup is removed');
      const entry = (await ps()).find((c) => c.name === 'probe');
      assert.equal(entry?.state, 'exited');
      assert.equal(entry?.memoryBytes, null);
      const logs = await migrate(['logs', 'probe']);
      assertOk(logs);
      assert.match(logs.stdout, /^probe-done$/m);
    });
  });

  it('applies --memory and --cpus to its cgroup', async function () {
    assertOk(await migrate(['run', 'limited', '--memory', '64m', '--cpus', '0.5', '--', 'sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1 & wait $!; done']));
    const s = state('limited');
    assert.deepEqual(s.limits, { memoryBytes: 64 * 1024 * 1024, cpus: 0.5 });
    const read = (dir: string | undefined, file: string): string => fs.readFileSync(path.join(dir!, file), 'utf8').trim();
    if (s.cgroup.v2Controllers.includes('memory')) assert.equal(read(s.cgroup.unified!, 'memory.max'), String(64 * 1024 * 1024));
    else assert.equal(read(s.cgroup.v1.memory, 'memory.limit_in_bytes'), String(64 * 1024 * 1024));
    if (s.cgroup.v2Controllers.includes('cpu')) assert.equal(read(s.cgroup.unified!, 'cpu.max'), '50000 100000');
    else assert.equal(read(s.cgroup.v1.cpu, 'cpu.cfs_quota_us'), '50000');
    assertOk(await migrate(['stop', 'limited']));
    await reapInit(s);
  });

  it('SIGKILLs an init that handles SIGTERM but does not exit, after the timeout', async function () {
    assertOk(await migrate(['run', 'stubborn', '--', 'sh', '-c', 'trap "echo got-term" TERM; echo ready; while :; do sleep 0.05 & wait $!; done']));
    const s = state('stubborn');
    await waitFor('the trap to be set', () => log('stubborn').includes('ready'));
    const report = jsonOf<StopReport>(await migrate(['--json', 'stop', 'stubborn', '--timeout', '0.5']));
    assert.equal(report.signal, 'SIGKILL');
    assert.match(log('stubborn'), /got-term/, 'it was asked nicely first');
    await reapInit(s);
    assert.ok(!cgroupExists(s.cgroup));
  });

  it('SIGKILLs at once an init without a SIGTERM handler, which the kernel would never give SIGTERM', async function () {
    assertOk(await migrate(['run', 'deaf', '--', 'sh', '-c', 'echo ready; while :; do sleep 0.05; done']));
    const s = state('deaf');
    await waitFor('it to run', () => log('deaf').includes('ready'));
    // A wait for the timeout would outlast the test's own timeout.
    const report = jsonOf<StopReport>(await migrate(['--json', 'stop', 'deaf', '--timeout', '600']));
    assert.equal(report.signal, 'SIGKILL');
    await reapInit(s);
  });

  it('runs in a --rootfs directory, writable, instead of the host root', async function () {
    const rootfs = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-rootfs-'));
    try {
      // /bin/sh with the libraries ldd names: enough of a root for a shell.
      const shell = fs.realpathSync('/bin/sh');
      const files = [shell, ...execFileSync('ldd', [shell], { encoding: 'utf8' }).matchAll(/(\/\S+) \(0x/g)].map((f) => (typeof f === 'string' ? f : f[1]!));
      for (const file of files) {
        fs.mkdirSync(path.join(rootfs, path.dirname(file)), { recursive: true });
        fs.copyFileSync(file, path.join(rootfs, file));
        fs.chmodSync(path.join(rootfs, file), 0o755);
      }
      const script = 'for f in /*; do echo "entry=$f"; done; echo written > /written; echo done';
      assertOk(await migrate(['run', 'rooted', '--rootfs', rootfs, '--', shell, '-c', script]));
      const s = state('rooted');
      await waitFor('the shell to finish', () => log('rooted').includes('done'));
      await reapInit(s);
      const entries = [...log('rooted').matchAll(/^entry=(.*)$/gm)].map((m) => m[1]);
      const expected = new Set([...files.map((f) => `/${f.split('/')[1]}`), '/proc', '/sys', '/dev', '/tmp']);
      assert.deepEqual(new Set(entries), expected);
      assert.equal(fs.readFileSync(path.join(rootfs, 'written'), 'utf8'), 'written\n', 'the rootfs is writable');
      assert.equal((await ps()).find((c) => c.name === 'rooted')?.state, 'exited', 'it ended on its own');
      const stop = jsonOf<StopReport>(await migrate(['--json', 'stop', 'rooted']));
      assert.equal(stop.signal, null);
      assert.ok(!cgroupExists(s.cgroup), 'stopping an exited container removes its cgroup');
    } finally {
      fs.rmSync(rootfs, { recursive: true, force: true });
    }
  });

  describe('bad input', function () {
    it('refuses an invalid name as a usage error', async function () {
      for (const name of ['Upper', '_under', 'a/b', 'x'.repeat(64)]) {
        const result = await migrate(['run', name, '--', 'true']);
        assert.equal(result.status, ExitCode.Usage, name);
        assert.match(result.stderr, /invalid container name/);
      }
    });

    it('refuses a run without a command as a usage error', async function () {
      const result = await migrate(['run', 'nocmd']);
      assert.equal(result.status, ExitCode.Usage);
      assert.match(result.stderr, /missing required argument 'command'/);
    });

    it('refuses bad limits as usage errors', async function () {
      for (const args of [['--memory', '512'], ['--memory', 'lots'], ['--cpus', '0'], ['--env', 'NOEQUALS'], ['--cwd', 'relative']]) {
        const result = await migrate(['run', 'badlimit', ...args, '--', 'true']);
        assert.equal(result.status, ExitCode.Usage, args.join(' '));
      }
      assert.equal(readState('badlimit'), null);
    });

    it('says which container is unknown to stop and logs', async function () {
      for (const command of ['stop', 'logs']) {
        const result = await migrate(['--json', command, 'nosuch']);
        assert.equal(result.status, ExitCode.Failed, command);
        const { error } = jsonOf<JsonError>(result);
        assert.equal(error.code, 'UNKNOWN_CONTAINER');
        assert.match(error.message, /no container named "nosuch"/);
      }
    });

    it('fails cleanly on a program that does not exist, leaving nothing behind', async function () {
      const result = await migrate(['--json', 'run', 'ghost', '--', 'no-such-program-ferry']);
      assert.equal(result.status, ExitCode.Failed);
      const { error } = jsonOf<JsonError>(result);
      assert.equal(error.code, 'ENOENT');
      assert.match(error.message, /cannot start container "ghost".*no-such-program-ferry/);
      assert.ok(!fs.existsSync(path.join(stateDir, 'containers', 'ghost')), 'no state directory');
      assert.ok(!cgroupExists(cgroupAt(`${CGROUP_PARENT}/ghost`, CONTROLLERS)), 'no cgroup');
    });

    it('needs root to run or stop containers', function () {
      for (const args of [['run', 'x', '--', 'true'], ['stop', 'x']]) {
        const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, path.join(ROOT, 'bin/migrate'), ...args], { encoding: 'utf8' });
        assert.equal(result.status, ExitCode.Unsupported, result.stderr);
        assert.match(result.stderr, /only root can/);
      }
    });
  });
});
