/**
 * The lab: N simulated hosts on this machine. A host is a bash init (see
 * native/lab-init.ts) that is pid 1 of its own pid namespace and holds its
 * own mount (with its own /proc), uts (hostname = its name), ipc and net
 * namespaces; a veth from the lab's bridge is its eth0, a port of its own
 * bridge br0 that holds its address. Its containers live in its own state
 * directory and cgroup parent and plug into br0, which it gets as
 * FERRY_STATE_DIR, FERRY_CGROUP_PARENT and FERRY_BRIDGE, and its agent
 * listens on its address.
 *
 * `up` refuses while anything of an earlier lab is left (a lab is one per
 * machine: the bridge, the addresses and the cgroup have fixed names) and
 * undoes itself when it fails halfway. `down` finds what to remove by name
 * as well as by record, so it cleans up after a crash, and does nothing
 * the second time.
 */
import fs from 'node:fs';
import os from 'node:os';
import { configDir, inventoryPath, readInventory, updateInventory, writeInventory } from '../cluster/inventory.js';
import { cgroupTreeDirs, removeCgroupTree } from '../native/cgroup-tree.js';
import { findLabInits, startLabInit, stillRunning, type FoundLabInit, type ProcessId } from '../native/lab-init.js';
import { runIn } from '../native/nsenter.js';
import { kill } from '../native/process.js';
import { waitUntil } from '../common/poll.js';
import { accepts, agentAddress, agentCommand, startAgent } from './agent.js';
import { LabError } from './errors.js';
import {
  BRIDGE,
  BRIDGE_IP,
  CGROUP_ROOT,
  HOST_BRIDGE,
  HOST_NAME,
  PREFIX_LENGTH,
  hostCgroupParent,
  hostIp,
  hostMac,
  hostName,
  hostStateDir,
  labDir,
} from './layout.js';
import { createBridge, labLinks, plugHost, removeNetwork } from './network.js';
import { readRecord, recordPath, writeRecord, type HostRecord, type LabRecord } from './record.js';

/** After SIGKILL the kernel tears a pid namespace down by itself; this long means something is stuck in the kernel. */
const KILL_WAIT_MS = 10_000;

export interface UpOptions {
  hosts: number;
  /** false for the topology alone (--no-agents). */
  agents: boolean;
}

/** Makes the lab and returns its record. */
export async function labUp(options: UpOptions): Promise<LabRecord> {
  const leftovers = findLeftovers();
  if (leftovers.length > 0) {
    throw new LabError('LAB_EXISTS', `a lab is already up, or an earlier one left pieces behind (${leftovers.join('; ')}); \`migrate lab down\` removes it`);
  }
  // A broken inventory is found before anything is made, not after.
  readInventory();
  createBridge();
  const record: LabRecord = {
    version: 1,
    created: new Date().toISOString(),
    bridge: { name: BRIDGE, address: `${BRIDGE_IP}/${PREFIX_LENGTH}` },
    agents: options.agents,
    inventory: inventoryPath(),
    hosts: [],
  };
  try {
    for (let i = 1; i <= options.hosts; i++) record.hosts.push(await makeHost(i));
    writeRecord(record);
    updateInventory((inventory) => {
      for (const host of record.hosts) inventory.hosts[host.name] = { address: agentAddress(host.ip) };
    });
    if (options.agents) await startAgents(record);
    return record;
  } catch (e) {
    try {
      await labDown();
    } catch (cleanup) {
      if (e instanceof Error) e.message += `; undoing the half-made lab failed too (${(cleanup as Error).message}), \`migrate lab down\` may finish it`;
    }
    throw e;
  }
}

async function makeHost(index: number): Promise<HostRecord> {
  const name = hostName(index);
  const env = {
    FERRY_STATE_DIR: hostStateDir(name),
    FERRY_CGROUP_PARENT: hostCgroupParent(name),
    // The inventory the lab wrote, wherever the host's environment would have looked.
    FERRY_CONFIG_DIR: configDir(),
    // Containers with addresses plug into the host's bridge, on the lab's segment.
    FERRY_BRIDGE: HOST_BRIDGE,
  };
  fs.mkdirSync(env.FERRY_STATE_DIR, { recursive: true });
  const init = await startLabInit(name, { ...process.env, ...env });
  const ip = hostIp(index);
  plugHost(name, ip, hostMac(index), init.pid);
  return { name, ip, init, agent: null, env };
}

/** Starts every host's agent at once and waits until all listen; the record learns their pids. */
async function startAgents(record: LabRecord): Promise<void> {
  const results = await Promise.allSettled(record.hosts.map((host) => startAgent(host)));
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') record.hosts[i]!.agent = r.value;
  });
  writeRecord(record);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** What of a lab exists now, found by name and by record, as short descriptions. */
function findLeftovers(): string[] {
  const found: string[] = [];
  if (fs.existsSync(recordPath())) found.push(`record ${recordPath()}`);
  const inits = findLabInits();
  if (inits.length > 0) found.push(`host inits ${inits.map((i) => `${i.host} (pid ${i.pid})`).join(', ')}`);
  const links = labLinks();
  if (links.length > 0) found.push(`links ${links.join(', ')}`);
  for (const dir of cgroupTreeDirs(CGROUP_ROOT)) found.push(`cgroup ${dir}`);
  return found;
}

export interface DownReport {
  /** Hosts whose inits were killed. */
  hosts: string[];
  /** Network links deleted. */
  links: string[];
  /** Cgroup directories removed (the ferry-lab tree on each hierarchy). */
  cgroups: string[];
  /** Hosts removed from the inventory. */
  inventory: string[];
  /** Whether the lab's state directory (record, host state, logs) was there to remove. */
  state: boolean;
  /** Things the user should know, such as a damaged record that was ignored. */
  notes: string[];
}

/**
 * Removes everything of the lab: the host inits, and with each init every
 * process of its pid namespace (agent and containers included); the veths
 * and the bridge; the cgroups under ferry-lab/; the lab hosts of the
 * inventory; the lab's state directory. Every step runs even if an earlier
 * one fails, and the first failure is reported at the end.
 */
export async function labDown(): Promise<DownReport> {
  const report: DownReport = { hosts: [], links: [], cgroups: [], inventory: [], state: false, notes: [] };
  const failures: unknown[] = [];
  const attempt = async (step: () => void | Promise<void>): Promise<void> => {
    try {
      await step();
    } catch (e) {
      failures.push(e);
    }
  };
  let record: LabRecord | null = null;
  try {
    record = readRecord();
  } catch (e) {
    report.notes.push(`ignored the record: ${(e as Error).message}`);
  }
  await attempt(async () => {
    report.hosts = await killInits(record);
  });
  await attempt(() => {
    report.links = removeNetwork();
  });
  await attempt(() => {
    report.cgroups = cgroupTreeDirs(CGROUP_ROOT);
    removeCgroupTree(CGROUP_ROOT, KILL_WAIT_MS);
  });
  await attempt(() => {
    const file = record?.inventory ?? inventoryPath();
    const inventory = readInventory(file);
    if (!inventory) return;
    report.inventory = Object.keys(inventory.hosts).filter((name) => HOST_NAME.test(name));
    if (report.inventory.length === 0) return;
    for (const name of report.inventory) delete inventory.hosts[name];
    writeInventory(inventory, file);
  });
  await attempt(() => {
    report.state = fs.existsSync(labDir());
    fs.rmSync(labDir(), { recursive: true, force: true });
  });
  if (failures.length > 0) throw failures[0];
  return report;
}

/**
 * SIGKILLs every lab init, those the record names and those found by their
 * command line, and waits until they have ended. An init ends only after
 * every other process of its pid namespace has, so this ends the hosts'
 * agents and containers too.
 */
async function killInits(record: LabRecord | null): Promise<string[]> {
  const inits = new Map<number, FoundLabInit>();
  for (const host of record?.hosts ?? []) if (stillRunning(host.init)) inits.set(host.init.pid, { ...host.init, host: host.name });
  for (const init of findLabInits()) inits.set(init.pid, init);
  for (const init of inits.values()) {
    try {
      kill(init.pid, 9);
    } catch {
      // Ended on its own meanwhile.
    }
  }
  const all = [...inits.values()];
  if (!(await waitUntil(() => all.every((init) => !stillRunning(init)), KILL_WAIT_MS))) {
    const stuck = all.filter(stillRunning).map((i) => `${i.host} (pid ${i.pid})`);
    throw new Error(`lab host inits ${stuck.join(', ')} are still there ${KILL_WAIT_MS / 1000} s after SIGKILL`);
  }
  return all.map((init) => init.host).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

export interface HostSummary {
  name: string;
  /** Where its agent listens, as in the inventory. */
  address: string;
  /** The init's pid as the machine sees it. */
  initPid: number;
  init: 'running' | 'down';
  /** 'none': made with --no-agents and nothing listens on the address. */
  agent: 'listening' | 'not listening' | 'none';
  agentPid: number | null;
  stateDir: string;
  cgroupParent: string;
}

export interface LabSummary {
  bridge: { name: string; address: string } | null;
  hosts: HostSummary[];
  /** The inventory the lab's hosts are in. */
  inventory: string;
}

/** The lab as its record says and the kernel confirms; no hosts when there is no lab. */
export async function labList(): Promise<LabSummary> {
  const record = readRecord();
  if (!record) return { bridge: null, hosts: [], inventory: inventoryPath() };
  return summarize(record);
}

export async function summarize(record: LabRecord): Promise<LabSummary> {
  const hosts = await Promise.all(
    record.hosts.map(async (host): Promise<HostSummary> => {
      const address = agentAddress(host.ip);
      const running = stillRunning(host.init);
      const listening = running && (await accepts(address, 500));
      return {
        name: host.name,
        address,
        initPid: host.init.pid,
        init: running ? 'running' : 'down',
        agent: listening ? 'listening' : record.agents ? 'not listening' : 'none',
        agentPid: host.agent && stillRunning(host.agent) ? host.agent.pid : null,
        stateDir: host.env['FERRY_STATE_DIR'] ?? hostStateDir(host.name),
        cgroupParent: host.env['FERRY_CGROUP_PARENT'] ?? hostCgroupParent(host.name),
      };
    }),
  );
  return { bridge: record.bridge, hosts, inventory: record.inventory };
}

/**
 * Runs `command` inside a host's namespaces, with the caller's environment
 * plus the host's FERRY_* variables, in `/` of the host, stdio passed
 * through; resolves to its exit code (128 + the signal number when a
 * signal ended it, as a shell reports it).
 */
export async function labExec(name: string, command: string[]): Promise<number> {
  const host = requireHost(name);
  const result = await runIn(host.init.pid, ['mount', 'uts', 'ipc', 'net', 'pid'], command, { env: { ...process.env, ...host.env }, stdio: 'inherit' });
  if (result.signal !== null) return 128 + (os.constants.signals[result.signal] ?? 0);
  return result.status ?? 1;
}

/**
 * Stops, starts or restarts a host's agent; the host and its containers
 * live on. `env` and `args` go to the started agent only (tests start
 * agents that crash at a chosen point, FERRY_CRASH_AT). Resolves with the
 * running agent's pid (null after a stop), which the record learns.
 */
export async function labAgent(name: string, action: 'stop' | 'start' | 'restart', env: Record<string, string> = {}, args: string[] = []): Promise<number | null> {
  const host = requireHost(name);
  const record = readRecord()!;
  const index = record.hosts.findIndex((h) => h.name === name);
  if (action !== 'start' && host.agent && stillRunning(host.agent)) await stopProcess(host.agent);
  record.hosts[index]!.agent = null;
  if (action !== 'stop') record.hosts[index]!.agent = await startAgent({ ...host, env: { ...host.env, ...env } }, [...agentCommand(host.ip), ...args]);
  writeRecord(record);
  return record.hosts[index]!.agent?.pid ?? null;
}

/** SIGTERM, and SIGKILL if it is still there after a while; resolves once it is gone. */
async function stopProcess(p: ProcessId): Promise<void> {
  try {
    kill(p.pid, 15);
  } catch {
    return;
  }
  if (await waitUntil(() => !stillRunning(p), 10_000)) return;
  kill(p.pid, 9);
  await waitUntil(() => !stillRunning(p), KILL_WAIT_MS);
}

/** The running host of that name, or an error that says what the lab has. */
function requireHost(name: string): HostRecord {
  const record = readRecord();
  if (!record) throw new LabError('NO_LAB', 'no lab is up (`migrate lab up` makes one)');
  const host = record.hosts.find((h) => h.name === name);
  if (!host) throw new LabError('UNKNOWN_HOST', `no lab host "${name}"; the lab's hosts are ${record.hosts.map((h) => h.name).join(', ')}`);
  if (!stillRunning(host.init)) {
    throw new LabError('HOST_DOWN', `lab host ${name} is down: its init (pid ${host.init.pid}) has ended; \`migrate lab down\` then \`migrate lab up\` makes a new lab`);
  }
  return host;
}
