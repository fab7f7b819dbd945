import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { addHost, inventoryPath, newToken, readInventory, removeHost, writeInventory, type Inventory } from '../src/cluster/inventory.js';
import type { ContainerSummary } from '../src/container/runtime.js';
import { startAgent } from '../src/lab/agent.js';
import { labDown, type HostSummary, type LabSummary } from '../src/lab/lab.js';
import { BRIDGE, CGROUP_ROOT } from '../src/lab/layout.js';
import { labLinks } from '../src/lab/network.js';
import { readRecord, recordPath, type LabRecord } from '../src/lab/record.js';
import { cgroupTreeDirs } from '../src/native/cgroup-tree.js';
import { findLabInits, stillRunning, type ProcessId } from '../src/native/lab-init.js';
import { namespaceIds } from '../src/native/namespaces.js';
import { nsPids, readStat } from '../src/native/proc.js';
import { kill } from '../src/native/process.js';
import { waitpid, WAIT } from '../src/native/wait.js';
import { jsonOf, migrate, type CliResult } from './helpers/cli.js';
import { ROOT } from './helpers/paths.js';
import { waitFor } from './helpers/wait.js';

const MIGRATE = path.join(ROOT, 'bin/migrate');
const HOSTS = ['lab-1', 'lab-2', 'lab-3'];
/** A host of the inventory that is not the lab's: `lab down` must keep it. */
const OTHER_HOST = { name: 'elsewhere', address: '192.0.2.7:7468' };

interface JsonError {
  error: { message: string; code: string | null };
}

function assertOk(result: CliResult): void {
  assert.equal(result.status, 0, `exit ${result.status}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

/** `migrate lab exec <host> -- <command...>`. */
function labExec(host: string, command: string[]): Promise<CliResult> {
  return migrate(['lab', 'exec', host, '--', ...command]);
}

/** What a TCP server at ip:port sends before it closes the connection. */
function readGreeting(ip: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = net.connect({ host: ip, port });
    socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text.trim()));
    socket.on('error', reject);
  });
}

/**
 * A killed init whose parent is this process (it is if this process is a
 * child subreaper, as other test files make it) stays a zombie until we
 * reap it: nothing else will.
 */
function reapIfOurs(init: ProcessId): void {
  try {
    const stat = readStat(init.pid);
    if (Number(stat.fields[22]) === init.startTime && Number(stat.fields[4]) === process.pid) waitpid(init.pid, WAIT.WNOHANG);
  } catch {
    // Gone already.
  }
}

/** Everything of a lab that exists on the machine now, by name. */
function labTraces(): string[] {
  return [
    ...labLinks().map((l) => `link ${l}`),
    ...findLabInits().map((i) => `init of ${i.host} (pid ${i.pid})`),
    ...cgroupTreeDirs(CGROUP_ROOT).map((d) => `cgroup ${d}`),
  ];
}

describe('lab (migrate lab up, exec, ls, down)', function () {
  const savedEnv = { state: process.env['FERRY_STATE_DIR'], config: process.env['FERRY_CONFIG_DIR'] };
  let tmp: string;
  /** Set once no other lab was found: only then is cleaning up ours to do. */
  let ours = false;
  /** Every init any test saw, to reap whichever come back to us as zombies. */
  const inits: ProcessId[] = [];

  before(function () {
    const traces = labTraces();
    if (traces.length > 0) throw new Error(`a lab is up on this machine (${traces.join(', ')}); these tests make their own: \`migrate lab down\` first`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-'));
    ours = true;
    // The CLI inherits these: the lab's state and the inventory live in temporary directories, not /var/lib/ferry and /etc/ferry.
    process.env['FERRY_STATE_DIR'] = path.join(tmp, 'state');
    process.env['FERRY_CONFIG_DIR'] = path.join(tmp, 'config');
  });

  after(async function () {
    if (!ours) return;
    const failures: unknown[] = [];
    try {
      await labDown();
    } catch (e) {
      failures.push(e);
    }
    inits.forEach(reapIfOurs);
    fs.rmSync(tmp, { recursive: true, force: true });
    for (const [key, value] of [['FERRY_STATE_DIR', savedEnv.state], ['FERRY_CONFIG_DIR', savedEnv.config]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    if (failures.length) throw failures[0];
  });

  describe('three hosts without agents', function () {
    let lab: LabSummary;
    let record: LabRecord;
    let token: string;

    before(async function () {
      token = newToken();
      writeInventory({ version: 1, token, hosts: { [OTHER_HOST.name]: { address: OTHER_HOST.address } } });
      const result = await migrate(['--json', 'lab', 'up', '--hosts', '3', '--no-agents']);
      record = readRecord()!;
      inits.push(...(record?.hosts.map((h) => h.init) ?? []));
      assertOk(result);
      lab = jsonOf<LabSummary>(result);
    });

    it('makes hosts lab-1..3 on the bridge, each with an init as pid 1 of its own namespaces', async function () {
      assert.deepEqual(lab.bridge, { name: BRIDGE, address: '10.77.0.1/24' });
      assert.deepEqual(lab.hosts.map((h) => [h.name, h.address, h.init]), [
        ['lab-1', '10.77.0.11:7468', 'running'],
        ['lab-2', '10.77.0.12:7468', 'running'],
        ['lab-3', '10.77.0.13:7468', 'running'],
      ]);
      const ours = namespaceIds('self');
      const seen = new Map<string, Set<number>>();
      for (const host of lab.hosts) {
        const ids = namespaceIds(host.initPid);
        for (const kind of ['pid', 'mnt', 'uts', 'ipc', 'net'] as const) {
          assert.notEqual(ids[kind], ours[kind], `${host.name} has its own ${kind} namespace`);
          if (!seen.has(kind)) seen.set(kind, new Set());
          seen.get(kind)!.add(ids[kind]);
        }
        assert.deepEqual(nsPids(host.initPid), [host.initPid, 1], `${host.name}'s init is pid 1 of its pid namespace`);
        // Inside: the hostname, the init as pid 1 in the host's own /proc, and the shell in the init's pid namespace.
        const probe = await labExec(host.name, ['bash', '-c', 'echo "$(hostname)"; tr "\\0" " " </proc/1/cmdline; echo; readlink /proc/self/ns/pid; pwd; echo "$FERRY_STATE_DIR $FERRY_CGROUP_PARENT $FERRY_BRIDGE"']);
        assertOk(probe);
        const [hostname, init, pidNs, cwd, env] = probe.stdout.split('\n');
        assert.equal(hostname, host.name);
        assert.match(init!, new RegExp(`ferry-lab-init ${host.name} $`));
        assert.equal(pidNs, `pid:[${ids.pid}]`);
        assert.equal(cwd, '/');
        assert.equal(env, `${path.join(tmp, 'state', 'lab', host.name)} ferry-lab/${host.name} br0`);
      }
      for (const [kind, ids] of seen) assert.equal(ids.size, 3, `three different ${kind} namespaces`);
    });

    it('connects the hosts to each other and to the machine (TCP)', async function () {
      // lab-2 and lab-3 each answer two connections with their hostname: one from lab-1, one from the machine.
      const server = 'const s = require("net").createServer((c) => { c.end(require("os").hostname() + "\\n"); if (++n === 2) s.close(); }); let n = 0; s.listen(8080, process.argv[1], () => console.log("listening"));';
      const servers = ['lab-2', 'lab-3'].map((host, i) => {
        const child = spawn(process.execPath, [MIGRATE, 'lab', 'exec', host, '--', process.execPath, '-e', server, `10.77.0.${12 + i}`], { stdio: ['ignore', 'pipe', 'inherit'] });
        const state = { out: '', exit: new Promise<number | null>((resolve) => child.on('close', resolve)) };
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (state.out += chunk));
        return state;
      });
      await waitFor('the servers in lab-2 and lab-3 to listen', () => servers.every((s) => s.out.includes('listening')), 20_000);
      for (const [i, host] of ['lab-2', 'lab-3'].entries()) {
        const ip = `10.77.0.${12 + i}`;
        const fromLab1 = await labExec('lab-1', ['bash', '-c', 'exec 3<>"/dev/tcp/$1/8080" && cat <&3', 'client', ip]);
        assertOk(fromLab1);
        assert.equal(fromLab1.stdout.trim(), host, `lab-1 reaches ${host}`);
        assert.equal(await readGreeting(ip, 8080), host, `the machine reaches ${host}`);
      }
      assert.deepEqual(await Promise.all(servers.map((s) => s.exit)), [0, 0], 'each server served its two connections and exited');
    });

    it("gives each host a bridge br0 for its containers, with eth0 in it and the host's address on it", async function () {
      for (const [i, host] of lab.hosts.entries()) {
        const probe = await labExec(host.name, ['bash', '-c', 'ip -json -details link show; echo; ip -json address show br0; echo; ip -json route show default']);
        assertOk(probe);
        const [links, addresses, routes] = probe.stdout.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line) as Array<Record<string, unknown>>);
        const link = (name: string) => links!.find((l) => l['ifname'] === name) as { master?: string; address: string; linkinfo?: { info_kind: string } } | undefined;
        assert.equal(link('br0')?.linkinfo?.info_kind, 'bridge', `${host.name} has br0`);
        assert.equal(link('eth0')?.master, 'br0', `${host.name}'s eth0 is a port of br0`);
        // A bridge takes the lowest MAC of its ports unless it has its own: containers' veths joining must not change the host's.
        assert.equal(link('br0')?.address, link('eth0')?.address);
        assert.equal(link('br0')?.address, `02:77:00:00:00:0${i + 1}`);
        const onBridge = (addresses![0]!['addr_info'] as Array<{ family: string; local: string; prefixlen: number }>).filter((a) => a.family === 'inet');
        assert.deepEqual(onBridge.map((a) => `${a.local}/${a.prefixlen}`), [`10.77.0.${11 + i}/24`]);
        assert.deepEqual(routes!.map((r) => [r['gateway'], r['dev']]), [['10.77.0.1', 'br0']]);
      }
    });

    it('adds the hosts to the inventory and keeps its token and other hosts', function () {
      const inventory = readInventory()!;
      assert.equal(inventory.token, token);
      assert.deepEqual(inventory.hosts, {
        [OTHER_HOST.name]: { address: OTHER_HOST.address },
        'lab-1': { address: '10.77.0.11:7468' },
        'lab-2': { address: '10.77.0.12:7468' },
        'lab-3': { address: '10.77.0.13:7468' },
      });
    });

    it('lists the hosts with `lab ls --json`', async function () {
      const result = await migrate(['--json', 'lab', 'ls']);
      assertOk(result);
      const listed = jsonOf<LabSummary>(result);
      assert.deepEqual(
        listed.hosts.map((h: HostSummary) => [h.name, h.address, h.initPid, h.init, h.agent]),
        lab.hosts.map((h) => [h.name, h.address, h.initPid, 'running', 'none']),
      );
      assert.equal(listed.inventory, path.join(tmp, 'config', 'cluster.json'));
    });

    it('passes the exit code of the command through, and 128+N for a signal', async function () {
      assert.equal((await labExec('lab-2', ['bash', '-c', 'exit 7'])).status, 7);
      assert.equal((await labExec('lab-2', ['bash', '-c', 'kill -TERM $$'])).status, 128 + 15);
      assert.equal((await labExec('lab-2', ['no-such-program-here'])).status, 127);
    });

    it('refuses an unknown host, naming the hosts there are', async function () {
      const result = await migrate(['--json', 'lab', 'exec', 'lab-9', '--', 'true']);
      assert.equal(result.status, 1);
      const { error } = jsonOf<JsonError>(result);
      assert.equal(error.code, 'UNKNOWN_HOST');
      assert.match(error.message, /"lab-9".*lab-1, lab-2, lab-3/);
    });

    it('refuses a second `lab up` while the lab is up', async function () {
      const result = await migrate(['--json', 'lab', 'up', '--no-agents']);
      assert.equal(result.status, 1);
      const { error } = jsonOf<JsonError>(result);
      assert.equal(error.code, 'LAB_EXISTS');
      assert.match(error.message, /migrate lab down/);
      assert.equal(readRecord()?.created, record.created, 'the lab is left as it was');
    });

    it("runs a container inside a host's pid namespace, seen by the host's `ps` only", async function () {
      assertOk(await labExec('lab-1', [process.execPath, MIGRATE, 'run', 'web', '--', 'sleep', '1000']));
      // --local: each side's own state directory, not the agents of the inventory.
      const inside = await labExec('lab-1', [process.execPath, MIGRATE, '--json', 'ps', '--local']);
      assertOk(inside);
      const [web] = jsonOf<{ containers: ContainerSummary[] }>(inside).containers;
      assert.equal(web?.name, 'web');
      assert.equal(web.state, 'running');
      // Seen from the machine: pid 1 of its own namespace, nested in lab-1's, with the pid lab-1's `ps` reported.
      const [unified] = cgroupTreeDirs('ferry-lab/lab-1/web');
      assert.ok(unified, 'the container has a cgroup under ferry-lab/lab-1');
      const [pid] = fs.readFileSync(path.join(unified, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      assert.deepEqual(nsPids(pid!).slice(1), [web.pid, 1]);
      const lab1 = lab.hosts.find((h) => h.name === 'lab-1')!;
      assert.equal(Number(readStat(pid!).fields[4]), lab1.initPid, "the CLI has exited, so lab-1's init is its parent");
      const outside = await migrate(['--json', 'ps', '--local']);
      assertOk(outside);
      assert.deepEqual(jsonOf<{ containers: ContainerSummary[] }>(outside).containers, [], "the machine's own `migrate ps` does not see it");
    });

    it('starts an agent with startAgent, and the host outlives it', async function () {
      const host = readRecord()!.hosts.find((h) => h.name === 'lab-3')!;
      const fake = [process.execPath, '-e', 'require("net").createServer(() => {}).listen(7468, process.argv[1]); console.log("fake agent up")', host.ip];
      const agent = await startAgent(host, fake);
      assert.equal(nsPids(agent.pid).length, 2, "the agent runs in the host's pid namespace");
      const listed = jsonOf<LabSummary>(await migrate(['--json', 'lab', 'ls'])).hosts.find((h) => h.name === 'lab-3')!;
      assert.equal(listed.agent, 'listening');
      assert.match(fs.readFileSync(path.join(host.env['FERRY_STATE_DIR']!, 'agent.log'), 'utf8'), /fake agent up/);

      kill(agent.pid, 9);
      await waitFor('the killed agent to be reaped by the host init', () => {
        try {
          return readStat(agent.pid).fields[22] !== String(agent.startTime);
        } catch {
          return true;
        }
      });
      assert.ok(stillRunning(host.init), 'the host is still up');
      assertOk(await labExec('lab-3', ['true']));

      const failing = startAgent(host, ['bash', '-c', 'echo "cannot bind: boom" >&2; exit 1']);
      await assert.rejects(failing, (e: Error & { code?: string }) => e.code === 'AGENT_FAILED' && /exited before listening.*boom/s.test(e.message));
    });

    it('`lab down` leaves no bridge, veth, cgroup, process, inventory entry or record; again, it does nothing', async function () {
      const containerPids = cgroupTreeDirs('ferry-lab/lab-1/web').flatMap((d) => fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
      const down = await migrate(['--json', 'lab', 'down']);
      assertOk(down);
      assert.deepEqual(jsonOf<{ hosts: string[] }>(down).hosts, HOSTS);
      assert.deepEqual(labTraces(), []);
      for (const host of record.hosts) assert.ok(!stillRunning(host.init), `${host.name}'s init has ended`);
      for (const pid of containerPids) assert.ok(!fs.existsSync(`/proc/${pid}`), `container process ${pid} has ended`);
      assert.ok(!fs.existsSync(recordPath()), 'the record is gone');
      assert.ok(!fs.existsSync(path.join(tmp, 'state', 'lab')), 'the lab state is gone');
      const inventory = readInventory()!;
      assert.deepEqual(inventory, { version: 1, token, hosts: { [OTHER_HOST.name]: { address: OTHER_HOST.address } } } satisfies Inventory);

      const again = await migrate(['--json', 'lab', 'down']);
      assertOk(again);
      assert.deepEqual(jsonOf(again), { hosts: [], links: [], cgroups: [], inventory: [], state: false, notes: [] });
    });
  });

  it('`lab down` cleans up after a crash: an init killed, one alive, no record', async function () {
    writeInventory({ version: 1, token: newToken(), hosts: { [OTHER_HOST.name]: { address: OTHER_HOST.address } } });
    const up = await migrate(['--json', 'lab', 'up', '--hosts', '2', '--no-agents']);
    const record = readRecord();
    inits.push(...(record?.hosts.map((h) => h.init) ?? []));
    assertOk(up);
    // Its cgroup outlives the host, which is killed below.
    assertOk(await labExec('lab-1', [process.execPath, MIGRATE, 'run', 'db', '--', 'sleep', '1000']));
    const [lab1, lab2] = record!.hosts;
    kill(lab1!.init.pid, 9);
    await waitFor("lab-1's init to end", () => !stillRunning(lab1!.init));
    fs.rmSync(recordPath());
    assert.ok(labTraces().length > 0, 'the crash left pieces behind');

    const down = await migrate(['--json', 'lab', 'down']);
    assertOk(down);
    assert.deepEqual(jsonOf<{ hosts: string[] }>(down).hosts, ['lab-2'], "lab-2's init was found by its command line");
    assert.ok(!stillRunning(lab2!.init));
    assert.deepEqual(labTraces(), []);
    assert.deepEqual(Object.keys(readInventory()!.hosts), [OTHER_HOST.name]);
    assert.ok(!fs.existsSync(path.join(tmp, 'state', 'lab')));
  });

  it('`lab up` starts an agent in every host, listening on its address, and `lab down` ends them', async function () {
    const up = await migrate(['--json', 'lab', 'up', '--hosts', '2']);
    const record = readRecord();
    inits.push(...(record?.hosts.map((h) => h.init) ?? []));
    assertOk(up);
    const hosts = jsonOf<LabSummary>(up).hosts;
    assert.deepEqual(hosts.map((h) => [h.name, h.agent]), [['lab-1', 'listening'], ['lab-2', 'listening']]);
    for (const host of hosts) {
      assert.ok(host.agentPid !== null);
      assert.equal(Number(readStat(host.agentPid).fields[4]), host.initPid, `${host.name}'s agent is its init's child`);
      assert.equal(nsPids(host.agentPid).length, 2, `${host.name}'s agent runs in the host's pid namespace`);
    }
    const agents = record!.hosts.map((h) => h.agent!);
    assertOk(await migrate(['lab', 'down']));
    for (const agent of agents) assert.ok(!stillRunning(agent), `agent ${agent.pid} has ended`);
    assert.deepEqual(labTraces(), []);
  });

  describe('the hosts inventory', function () {
    let file: string;
    beforeEach(function () {
      file = path.join(tmp, 'inventory-test', 'cluster.json');
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    });

    it('is created on the first addHost with a fresh token, readable by root only, and keeps the token after', function () {
      assert.equal(readInventory(file), null);
      const first = addHost('alpha', '10.0.0.1:7468', file);
      assert.match(first.token, /^[0-9a-f]{64}$/);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      addHost('beta', '[fd00::2]:7468', file);
      assert.equal(removeHost('alpha', file), true);
      assert.equal(removeHost('alpha', file), false);
      assert.deepEqual(readInventory(file), { version: 1, token: first.token, hosts: { beta: { address: '[fd00::2]:7468' } } });
      assert.deepEqual(fs.readdirSync(path.dirname(file)), ['cluster.json'], 'no temporary file is left');
    });

    it('lives in $FERRY_CONFIG_DIR/cluster.json', function () {
      assert.equal(inventoryPath(), path.join(tmp, 'config', 'cluster.json'));
    });

    it('refuses a broken file, naming the file and the problem', function () {
      const token = 'ab'.repeat(32);
      const cases: Array<[string, RegExp]> = [
        ['{ not json', /not valid JSON/],
        [JSON.stringify({ version: 2, token, hosts: {} }), /version: expected 1/],
        [JSON.stringify({ version: 1, token: 'xyz', hosts: {} }), /token: expected at least 32 lowercase hex digits/],
        [JSON.stringify({ version: 1, token, hosts: { 'Bad Name': { address: '10.0.0.1:1' } } }), /hosts: "Bad Name" is not a valid host name/],
        [JSON.stringify({ version: 1, token, hosts: { a: { address: '10.0.0.1' } } }), /hosts\.a\.address: expected "<ip>:<port>"$/],
        [JSON.stringify({ version: 1, token, hosts: { a: { address: '10.0.0.1:70000' } } }), /hosts\.a\.address: the port must be 1-65535/],
      ];
      fs.mkdirSync(path.dirname(file), { recursive: true });
      for (const [text, problem] of cases) {
        fs.writeFileSync(file, text);
        assert.throws(
          () => readInventory(file),
          (e: Error & { code?: string }) => e.code === 'BAD_INVENTORY' && e.message.startsWith(`${file}: `) && problem.test(e.message),
          text,
        );
      }
      assert.throws(() => addHost('alpha', '10.0.0.1:7468', file), /not a valid hosts inventory/, 'a broken file is never overwritten');
    });
  });
});
