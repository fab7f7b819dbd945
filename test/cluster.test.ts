import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readInventory, type Inventory } from '../src/cluster/inventory.js';
import { removeCgroupTree } from '../src/native/cgroup-tree.js';
import { jsonOf, migrate, type CliResult } from './helpers/cli.js';
import { ROOT } from './helpers/paths.js';
import { waitFor } from './helpers/wait.js';

const MIGRATE = path.join(ROOT, 'bin/migrate');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** An id no agent has: the commands must say so, not fail some other way. */
const UNKNOWN_ID = '0123456789ab';

interface JsonError {
  error: { message: string; code: string | null };
}

interface Listed {
  inventory: string;
  hosts: Array<{ name: string; address: string; agent: null | { up: true; ferry: string; containers: number } | { up: false; error: string } }>;
}

function ok(r: CliResult): void {
  assert.equal(r.status, 0, `exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** A failed run: its exit code, and its one line on stderr. */
function fails(r: CliResult, status: number, message: RegExp): void {
  assert.equal(r.status, status, `expected exit ${status}, got ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, message);
}

/** `migrate ...args` with another configuration directory than this suite's: a second operator's, with other keys. */
function migrateWith(configDir: string, args: string[]): Promise<CliResult> {
  return migrate(args, { FERRY_CONFIG_DIR: configDir });
}

/** A TCP port nothing listens on at the moment (the kernel picked it, and we let it go). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function listHosts(r: CliResult): Listed['hosts'] {
  ok(r);
  return jsonOf<Listed>(r).hosts;
}

/**
 * A real `migrate agent` on 127.0.0.1, a child of this process, with its
 * own state directory and cgroup parent so that it touches nothing of this
 * machine's Ferry. stop() is safe to call whatever state it is in.
 */
class Agent {
  log = '';
  private exitCode: number | null | undefined = undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    private readonly child: ChildProcess,
    readonly stateDir: string,
    readonly cgroupParent: string,
  ) {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.log += d));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.log += d));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve((this.exitCode = code ?? (signal ? 128 + os.constants.signals[signal] : null)))));
  }

  static async start(configDir: string, name: string, port: number, dir: string): Promise<Agent> {
    const stateDir = path.join(dir, `agent-${name}-state`);
    const cgroupParent = `ferry-test-cluster-${process.pid}-${path.basename(dir)}`;
    const child = spawn(process.execPath, [MIGRATE, 'agent', '--name', name, '--listen', `127.0.0.1:${port}`, '--staging-dir', path.join(stateDir, 'staging')], {
      env: { ...process.env, FERRY_CONFIG_DIR: configDir, FERRY_STATE_DIR: stateDir, FERRY_CGROUP_PARENT: cgroupParent },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const agent = new Agent(child, stateDir, cgroupParent);
    try {
      await waitFor(`agent ${name} to listen on 127.0.0.1:${port}`, () => {
        if (agent.exitCode !== undefined) throw new Error(`agent ${name} exited (${agent.exitCode}) before listening:\n${agent.log}`);
        return agent.log.includes(`agent ${name} listening on 127.0.0.1:${port}`);
      }, 30_000);
    } catch (e) {
      // The caller never gets hold of it, so it cannot stop it.
      await agent.stop();
      throw e;
    }
    return agent;
  }

  /** SIGTERM (SIGKILL if it does not go), then its state and cgroups go; resolves with how it exited. */
  async stop(): Promise<number | null> {
    if (this.exitCode === undefined) {
      this.child.kill('SIGTERM');
      const gone = await Promise.race([this.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 15_000).unref())]);
      if (!gone) this.child.kill('SIGKILL');
    }
    const code = await this.exited;
    fs.rmSync(this.stateDir, { recursive: true, force: true });
    removeCgroupTree(this.cgroupParent);
    return code;
  }
}

/**
 * The cluster configuration commands: `init`, `host add|rm|ls`, TLS between
 * the CLI and a real agent, and what `status` and `cancel` say when there
 * is nothing to find. Each suite has its own configuration directory
 * (FERRY_CONFIG_DIR, which the CLI inherits); no lab is needed.
 */
describe('cluster configuration (init, host, TLS, status, cancel)', function () {
  this.timeout(120_000);
  const saved = process.env['FERRY_CONFIG_DIR'];
  let tmp: string;

  before(function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-cluster-'));
  });

  after(function () {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (saved === undefined) delete process.env['FERRY_CONFIG_DIR'];
    else process.env['FERRY_CONFIG_DIR'] = saved;
  });

  /** Points the CLI at a fresh configuration directory for the enclosing suite; returns its path, known once the suite runs. */
  function useConfigDir(name: string): { readonly dir: string; readonly file: string } {
    before(function () {
      process.env['FERRY_CONFIG_DIR'] = path.join(tmp, name);
    });
    return {
      get dir() {
        return path.join(tmp, name);
      },
      get file() {
        return path.join(tmp, name, 'cluster.json');
      },
    };
  }

  describe('migrate init', function () {
    const config = useConfigDir('init');

    it('makes cluster.json, readable by root only, with a fresh 64-hex-digit token and no hosts', async function () {
      const r = await migrate(['init']);
      ok(r);
      assert.equal(r.stdout, `cluster configuration in ${config.file} (TLS off)\nmade ${config.file}\n`);
      assert.equal(fs.statSync(config.file).mode & 0o777, 0o600);
      const inventory = readInventory(config.file)!;
      assert.match(inventory.token, /^[0-9a-f]{64}$/);
      assert.deepEqual(inventory.hosts, {});
      assert.ok(!fs.existsSync(path.join(config.dir, 'tls')), 'no TLS without --tls');
    });

    it('a second init keeps the token and the hosts, and says it made nothing (--json)', async function () {
      const before = readInventory(config.file)!;
      ok(await migrate(['host', 'add', 'alpha', '10.0.0.1:7468']));
      const r = await migrate(['--json', 'init']);
      ok(r);
      assert.deepEqual(jsonOf(r), { inventory: config.file, made: [], tls: false, mutual: false });
      assert.deepEqual(readInventory(config.file), { ...before, hosts: { alpha: { address: '10.0.0.1:7468' } } } satisfies Inventory);
      assert.deepEqual(fs.readdirSync(config.dir), ['cluster.json'], 'no temporary file is left');
    });

    it('`init --tls` refuses an inventory with a host named "ca" or "client" before it makes anything', async function () {
      const clashing = path.join(tmp, 'init-clash');
      ok(await migrateWith(clashing, ['init']));
      const file = path.join(clashing, 'cluster.json');
      // Written by hand (or by an older Ferry): `host add` refuses these names.
      const inventory = readInventory(file)!;
      fs.writeFileSync(file, JSON.stringify({ ...inventory, hosts: { ca: { address: '10.0.0.1:7468' } } }));
      const r = await migrateWith(clashing, ['init', '--tls']);
      fails(r, 2, /has a host named "ca", a name TLS keeps for itself \(tls\/ca\.crt is the cluster CA/);
      assert.ok(!fs.existsSync(path.join(clashing, 'tls')), 'no CA was made');
    });

    it('two directories get two different tokens', async function () {
      const other = path.join(tmp, 'init-other');
      ok(await migrateWith(other, ['init']));
      assert.notEqual(readInventory(path.join(other, 'cluster.json'))!.token, readInventory(config.file)!.token);
    });
  });

  describe('migrate host add, ls, rm', function () {
    const config = useConfigDir('hosts');
    /** Where nothing listens: the check must find the agent down, and say why. */
    let deadA: string;
    let deadB: string;

    before(async function () {
      ok(await migrate(['init']));
      deadA = `127.0.0.1:${await freePort()}`;
      deadB = `127.0.0.1:${await freePort()}`;
    });

    it('adds hosts, and `ls --no-check` lists them without asking any agent', async function () {
      const a = await migrate(['--json', 'host', 'add', 'alpha', deadA]);
      ok(a);
      assert.deepEqual(jsonOf(a), { name: 'alpha', address: deadA, inventory: config.file, certificate: null });
      const b = await migrate(['host', 'add', 'beta', deadB]);
      ok(b);
      assert.equal(b.stdout, `added beta at ${deadB} to ${config.file}\n`);

      assert.deepEqual(listHosts(await migrate(['--json', 'host', 'ls', '--no-check'])), [
        { name: 'alpha', address: deadA, agent: null },
        { name: 'beta', address: deadB, agent: null },
      ]);
      const human = await migrate(['host', 'ls', '--no-check']);
      ok(human);
      assert.deepEqual(human.stdout.trim().split('\n').map((l) => l.split(/\s+/)), [
        ['NAME', 'ADDRESS', 'AGENT'],
        ['alpha', deadA, '-'],
        ['beta', deadB, '-'],
      ]);
    });

    it('`ls` asks each agent: where nothing listens, the agent is down and the reason is given', async function () {
      const hosts = listHosts(await migrate(['--json', 'host', 'ls']));
      assert.deepEqual(hosts.map((h) => [h.name, h.agent?.up]), [['alpha', false], ['beta', false]]);
      for (const h of hosts) {
        assert.equal((h.agent as { error: string }).error, `cannot connect to agent at ${h.address}: connection refused (is the agent running?)`);
      }
      const human = await migrate(['host', 'ls']);
      ok(human);
      assert.match(human.stdout, new RegExp(`^alpha +${deadA} +down: cannot connect to agent at ${deadA}: connection refused \\(is the agent running\\?\\)$`, 'm'));
    });

    it('`add` of a host it has moves the host to the new address, and keeps the token', async function () {
      const token = readInventory(config.file)!.token;
      const moved = `127.0.0.1:${await freePort()}`;
      ok(await migrate(['host', 'add', 'alpha', moved]));
      assert.deepEqual(readInventory(config.file), { version: 1, token, hosts: { alpha: { address: moved }, beta: { address: deadB } } } satisfies Inventory);
      assert.deepEqual(listHosts(await migrate(['--json', 'host', 'ls', '--no-check'])).map((h) => h.address), [moved, deadB]);
    });

    it('an IPv6 address is kept in brackets, and without a port the agent port 7468 is meant', async function () {
      const r = await migrate(['--json', 'host', 'add', 'six', 'fd00::2']);
      ok(r);
      assert.equal(jsonOf<{ address: string }>(r).address, '[fd00::2]:7468');
      assert.equal(readInventory(config.file)!.hosts['six']?.address, '[fd00::2]:7468');
      ok(await migrate(['host', 'rm', 'six']));
    });

    it('`rm` removes a host; a host it does not have is exit 1, named, and the file is left alone', async function () {
      const r = await migrate(['host', 'rm', 'beta']);
      ok(r);
      assert.equal(r.stdout, `removed beta from ${config.file}\n`);
      assert.deepEqual(Object.keys(readInventory(config.file)!.hosts), ['alpha']);

      const text = fs.readFileSync(config.file, 'utf8');
      fails(await migrate(['host', 'rm', 'beta']), 1, new RegExp(`^migrate: no host named "beta" in ${config.file}\\n$`));
      const json = await migrate(['--json', 'host', 'rm', 'gamma']);
      assert.equal(json.status, 1);
      assert.equal(jsonOf<JsonError>(json).error.message, `no host named "gamma" in ${config.file}`);
      assert.equal(fs.readFileSync(config.file, 'utf8'), text);
      assert.deepEqual(listHosts(await migrate(['--json', 'host', 'ls', '--no-check'])).map((h) => h.name), ['alpha']);
    });

    it('refuses a bad name or a bad address with exit 2, saying what is wrong, and changes nothing', async function () {
      const text = fs.readFileSync(config.file, 'utf8');
      for (const name of ['Alpha', '_alpha', '.alpha', 'al pha', 'a/b', 'a'.repeat(64), '']) {
        fails(await migrate(['host', 'add', name, '10.0.0.9:7468']), 2, new RegExp(`^migrate: invalid host name "${name.replace('/', '\\/')}": 1-63 characters of a-z, 0-9, _ \\. -, starting with a letter or digit\\n$`));
      }
      // A host's certificate is tls/<name>.crt: these two would overwrite the cluster CA and the CLI's certificate.
      fails(await migrate(['host', 'add', 'ca', '10.0.0.9:7468']), 2, /^migrate: the host name "ca" is reserved: tls\/ca\.crt is the cluster CA's certificate\n$/);
      fails(await migrate(['host', 'add', 'client', '10.0.0.9:7468']), 2, /^migrate: the host name "client" is reserved/);
      for (const address of ['10.0.0.9:99999', '10.0.0.9:0', '10.0.0.9:http', '10.0.0.9:7468:1', 'ten zero:7468', '']) {
        fails(await migrate(['host', 'add', 'delta', address]), 2, new RegExp(`^migrate: ${JSON.stringify(address)} is not an agent address \\(host:port\\)\\n$`));
      }
      const json = await migrate(['--json', 'host', 'add', 'delta', '10.0.0.9:99999']);
      assert.equal(json.status, 2);
      assert.equal(jsonOf<JsonError>(json).error.message, '"10.0.0.9:99999" is not an agent address (host:port)');
      fails(await migrate(['host', 'add', 'delta']), 2, /missing required argument 'address'/);
      assert.equal(fs.readFileSync(config.file, 'utf8'), text);
    });
  });

  describe('a broken cluster.json', function () {
    const config = useConfigDir('broken');
    const cases: Array<[string, string, RegExp]> = [
      ['not JSON', '{ "version": 1, "token": ', /not valid JSON/],
      ['a token that is not 32+ hex digits', JSON.stringify({ version: 1, token: 'not-a-token', hosts: {} }), /not a valid hosts inventory: token: expected at least 32 lowercase hex digits/],
    ];

    for (const [what, text, problem] of cases) {
      it(`${what}: \`host ls\`, \`ps\` and \`status\` name the file and the problem (exit 1), and \`host add\` does not overwrite it`, async function () {
        fs.mkdirSync(config.dir, { recursive: true });
        fs.writeFileSync(config.file, text);
        const prefix = `migrate: ${config.file}: `;
        for (const args of [['host', 'ls'], ['host', 'ls', '--no-check'], ['ps'], ['status'], ['host', 'add', 'alpha', '10.0.0.1:7468']]) {
          const r = await migrate(args);
          assert.equal(r.status, 1, `${args.join(' ')}: exit ${r.status}\n${r.stderr}`);
          assert.ok(r.stderr.startsWith(prefix), `${args.join(' ')} names the file: ${r.stderr}`);
          assert.match(r.stderr, problem);
        }
        const json = await migrate(['--json', 'ps']);
        assert.equal(json.status, 1);
        const { error } = jsonOf<JsonError>(json);
        assert.equal(error.code, 'BAD_INVENTORY');
        assert.ok(error.message.startsWith(`${config.file}: `) && problem.test(error.message), error.message);
        assert.equal(fs.readFileSync(config.file, 'utf8'), text, 'the broken file is left for its owner to fix');
      });
    }
  });

  describe('TLS between the CLI and a real agent', function () {
    const config = useConfigDir('tls');
    let agent: Agent | null = null;
    let address: string;

    before(async function () {
      ok(await migrate(['init', '--tls']));
      address = `127.0.0.1:${await freePort()}`;
      ok(await migrate(['host', 'add', 'a', address]));
      agent = await Agent.start(config.dir, 'a', Number(address.split(':')[1]), path.join(tmp, 'tls-agent'));
    });

    after(async function () {
      const code = await agent?.stop();
      if (agent) assert.equal(code, 0, `the agent exits 0 on SIGTERM:\n${agent.log}`);
    });

    it('`init --tls` makes the cluster CA, and `host add` issues the agent a certificate for its address', function () {
      const tls = path.join(config.dir, 'tls');
      assert.deepEqual(fs.readdirSync(tls).sort(), ['a.crt', 'a.key', 'ca.crt', 'ca.key']);
      for (const key of ['ca.key', 'a.key']) assert.equal(fs.statSync(path.join(tls, key)).mode & 0o777, 0o600, `${key} is readable by root only`);
      const ca = new X509Certificate(fs.readFileSync(path.join(tls, 'ca.crt')));
      const cert = new X509Certificate(fs.readFileSync(path.join(tls, 'a.crt')));
      assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), "the cluster CA signed a's certificate");
      assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
      assert.equal(cert.checkHost('a'), 'a');
    });

    it('the agent serves TLS, and `host ls` finds it up', async function () {
      assert.match(agent!.log, new RegExp(`agent a listening on ${address} \\(TLS\\)`));
      assert.deepEqual(listHosts(await migrate(['--json', 'host', 'ls'])), [{ name: 'a', address, agent: { up: true, ferry: VERSION, containers: 0 } }]);
      const human = await migrate(['host', 'ls']);
      ok(human);
      assert.match(human.stdout, new RegExp(`^a +${address} +up \\(Ferry ${VERSION}, 0 containers\\)$`, 'm'));
    });

    it('`ps`, `status` and `cancel` work through TLS', async function () {
      const ps = await migrate(['--json', 'ps']);
      ok(ps);
      assert.deepEqual(jsonOf(ps), { containers: [], unreachable: [] });
      const status = await migrate(['--json', 'status']);
      ok(status);
      assert.deepEqual(jsonOf(status), { migrations: [], unreachable: [] });
      fails(await migrate(['status', UNKNOWN_ID]), 1, new RegExp(`^migrate: no host knows migration ${UNKNOWN_ID}\\n$`));
      // The agent answered, so the id is what is wrong.
      fails(await migrate(['cancel', UNKNOWN_ID]), 1, new RegExp(`^migrate: no host runs migration ${UNKNOWN_ID} as its source\\n$`));
    });

    it('a second `init --tls` keeps the CA and every certificate', async function () {
      const tls = path.join(config.dir, 'tls');
      const read = () => fs.readdirSync(tls).sort().map((f) => [f, fs.readFileSync(path.join(tls, f), 'utf8')]);
      const before = read();
      const r = await migrate(['--json', 'init', '--tls']);
      ok(r);
      assert.deepEqual(jsonOf(r), { inventory: config.file, made: [], tls: true, mutual: false });
      assert.deepEqual(read(), before);
    });

    it('a CLI that trusts another CA refuses the agent, saying why, and the agent serves on', async function () {
      // Another operator's directory: its own CA, but the same token and hosts.
      const other = path.join(tmp, 'tls-other-ca');
      ok(await migrateWith(other, ['init', '--tls']));
      fs.copyFileSync(config.file, path.join(other, 'cluster.json'));
      const refusal = `agent at ${address} presented a certificate the cluster CA did not sign`;

      const [host] = listHosts(await migrateWith(other, ['--json', 'host', 'ls']));
      assert.equal(host!.agent?.up, false);
      assert.ok((host!.agent as { error: string }).error.startsWith(refusal), (host!.agent as { error: string }).error);
      const ps = await migrateWith(other, ['--json', 'ps']);
      ok(ps);
      const { unreachable } = jsonOf<{ unreachable: Array<{ host: string; error: string }> }>(ps);
      assert.equal(unreachable.length, 1);
      assert.ok(unreachable[0]!.host === 'a' && unreachable[0]!.error.startsWith(refusal), unreachable[0]!.error);
      fails(await migrateWith(other, ['cancel', UNKNOWN_ID]), 1, new RegExp(`no host runs migration ${UNKNOWN_ID} as its source \\(no answer from a: ${refusal}`));

      // Nor does a CLI without TLS get in.
      const plain = path.join(tmp, 'tls-none');
      fs.mkdirSync(plain);
      fs.copyFileSync(config.file, path.join(plain, 'cluster.json'));
      const [bare] = listHosts(await migrateWith(plain, ['--json', 'host', 'ls']));
      assert.match((bare!.agent as { error: string }).error, /does it require TLS\?/);

      assert.equal(listHosts(await migrate(['--json', 'host', 'ls']))[0]!.agent?.up, true, 'the agent still serves the CLI that trusts it');
      await waitFor('the agent to log the refused handshakes', () => agent!.log.includes('refused a connection: TLS handshake failed'));
    });

    it('a host added by DNS name gets a certificate for that name', async function () {
      const r = await migrate(['--json', 'host', 'add', 'named', 'localhost:7468']);
      ok(r);
      const cert = new X509Certificate(fs.readFileSync(jsonOf<{ certificate: string }>(r).certificate));
      assert.equal(cert.checkHost('localhost'), 'localhost');
      assert.equal(cert.checkHost('named'), 'named');
      ok(await migrate(['host', 'rm', 'named']));
    });
  });

  describe('mutual TLS between the CLI and a real agent', function () {
    const config = useConfigDir('mutual');
    let agent: Agent | null = null;
    let address: string;

    before(async function () {
      const init = await migrate(['--json', 'init', '--tls', '--mutual']);
      ok(init);
      assert.deepEqual(jsonOf<{ made: string[] }>(init).made, [config.file, path.join(config.dir, 'tls/ca.crt'), path.join(config.dir, 'tls/client.crt')]);
      address = `127.0.0.1:${await freePort()}`;
      ok(await migrate(['host', 'add', 'a', address]));
      agent = await Agent.start(config.dir, 'a', Number(address.split(':')[1]), path.join(tmp, 'mutual-agent'));
    });

    after(async function () {
      const code = await agent?.stop();
      if (agent) assert.equal(code, 0, `the agent exits 0 on SIGTERM:\n${agent.log}`);
    });

    it('the agent refuses a CLI without tls/client.crt, and says why', async function () {
      const without = path.join(tmp, 'mutual-no-client-cert');
      fs.mkdirSync(path.join(without, 'tls'), { recursive: true });
      fs.copyFileSync(config.file, path.join(without, 'cluster.json'));
      fs.copyFileSync(path.join(config.dir, 'tls/ca.crt'), path.join(without, 'tls/ca.crt'));
      const [host] = listHosts(await migrateWith(without, ['--json', 'host', 'ls']));
      assert.deepEqual(host!.agent, { up: false, error: `agent at ${address} requires a client certificate, and this client has none` });
      const ps = await migrateWith(without, ['--json', 'ps']);
      ok(ps);
      assert.deepEqual(jsonOf(ps), { containers: [], unreachable: [{ host: 'a', error: `agent at ${address} requires a client certificate, and this client has none` }] });
    });

    it('and serves a CLI with it', async function () {
      assert.deepEqual(listHosts(await migrate(['--json', 'host', 'ls'])), [{ name: 'a', address, agent: { up: true, ferry: VERSION, containers: 0 } }]);
      const ps = await migrate(['--json', 'ps']);
      ok(ps);
      assert.deepEqual(jsonOf(ps), { containers: [], unreachable: [] });
    });
  });

  describe('status and cancel with nothing to find', function () {
    const config = useConfigDir('status');

    it('without an inventory: exit 2, and what to run', async function () {
      const advice = `no hosts inventory at ${config.file}: run \`migrate init\` and \`migrate host add\`, or \`migrate lab up\``;
      fails(await migrate(['status']), 2, new RegExp(`^migrate: ${advice.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n$`));
      const json = await migrate(['--json', 'status']);
      assert.equal(json.status, 2);
      assert.equal(jsonOf<JsonError>(json).error.message, advice);
      fails(await migrate(['cancel', UNKNOWN_ID]), 2, /^migrate: no hosts inventory at /);
      assert.ok(!fs.existsSync(config.file), 'asking made no inventory');
    });

    it('a malformed id: exit 2, before anything is asked', async function () {
      for (const id of ['xyz', '0123456789AB', '0123456789abc', '01234567']) {
        fails(await migrate(['status', id]), 2, new RegExp(`^migrate: "${id}" is not a migration id \\(12 hex digits\\)\\n$`));
        fails(await migrate(['cancel', id]), 2, new RegExp(`^migrate: "${id}" is not a migration id \\(12 hex digits\\)\\n$`));
      }
      fails(await migrate(['cancel']), 2, /missing required argument 'id'/);
    });

    it('an id no agent answers for: exit 1, naming the hosts that did not answer', async function () {
      ok(await migrate(['init']));
      const dead = `127.0.0.1:${await freePort()}`;
      ok(await migrate(['host', 'add', 'gone', dead]));
      const why = `cannot connect to agent at ${dead}: connection refused (is the agent running?)`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      fails(await migrate(['cancel', UNKNOWN_ID]), 1, new RegExp(`^migrate: no host runs migration ${UNKNOWN_ID} as its source \\(no answer from gone: ${why}\\)\\n$`));
      fails(await migrate(['status', UNKNOWN_ID]), 1, new RegExp(`^migrate: no host knows migration ${UNKNOWN_ID} \\(no answer from gone\\)\\n$`));
      const list = await migrate(['--json', 'status']);
      ok(list);
      assert.deepEqual(jsonOf(list), { migrations: [], unreachable: [{ host: 'gone', error: `cannot connect to agent at ${dead}: connection refused (is the agent running?)` }] });
    });
  });
});
