/**
 * The agent of a lab host: `migrate agent --listen <host ip>:7468`, run
 * inside the host with the host's FERRY_* environment, its output in the
 * host's agent.log. startAgent is the one place that knows how; the lab
 * calls it for every host, and it can be called again to restart an agent
 * that died (the host itself lives on without it).
 */
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { runIn } from '../native/nsenter.js';
import { nsPids, readChildren, readStat } from '../native/proc.js';
import { stillRunning, type ProcessId } from '../native/lab-init.js';
import { kill } from '../native/process.js';
import { LabError } from './errors.js';
import { AGENT_PORT, agentLogPath } from './layout.js';

const MIGRATE = fileURLToPath(new URL('../../../bin/migrate', import.meta.url));

/** How long an agent has from its start to accept connections. */
const LISTEN_TIMEOUT_MS = 20_000;

export function agentAddress(ip: string): string {
  return `${ip}:${AGENT_PORT}`;
}

/** What the lab needs to know of a host to start its agent. */
export interface AgentHost {
  name: string;
  ip: string;
  init: ProcessId;
  /** The host's FERRY_* variables. */
  env: Record<string, string>;
}

/**
 * Runs in the host: starts the agent in its own session (no terminal's
 * hangup reaches it), appending to its log, and prints its pid as the host
 * sees it. Once this shell exits, the agent is the host init's child.
 */
const START = 'log=$1; shift; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!';

/** `migrate agent` listening on the host's address. */
export function agentCommand(ip: string): string[] {
  return [process.execPath, MIGRATE, 'agent', '--listen', agentAddress(ip)];
}

/**
 * Starts the host's agent (`command`, `migrate agent` unless told
 * otherwise) and resolves once something accepts TCP connections on the
 * host's agent address.
 */
export async function startAgent(host: AgentHost, command = agentCommand(host.ip)): Promise<ProcessId> {
  const log = agentLogPath(host.name);
  const address = agentAddress(host.ip);
  const argv = ['bash', '-c', START, 'ferry-lab-agent', log, ...command];
  const started = await runIn(host.init.pid, ['mount', 'uts', 'ipc', 'net', 'pid'], argv, { env: { ...process.env, ...host.env }, stdio: 'capture' });
  const pidInside = Number.parseInt(started.stdout, 10);
  if (started.status !== 0 || !Number.isInteger(pidInside)) {
    throw new LabError('AGENT_FAILED', `cannot start the agent of lab host ${host.name}: ${started.stderr.trim() || `exit ${started.status}`}`);
  }
  const agent = findChild(host.init.pid, pidInside);
  const deadline = Date.now() + LISTEN_TIMEOUT_MS;
  let pause = 10;
  for (;;) {
    if (agent === null || !stillRunning(agent)) throw agentFailed(host.name, `exited before listening on ${address}`, log);
    if (await accepts(address, 500)) return agent;
    if (Date.now() > deadline) {
      killQuietly(agent.pid);
      throw agentFailed(host.name, `did not listen on ${address} within ${LISTEN_TIMEOUT_MS / 1000} s (it was killed)`, log);
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 100);
  }
}

/** Whether something accepts a TCP connection at `address` (ip:port) within `timeoutMs`. */
export function accepts(address: string, timeoutMs: number): Promise<boolean> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The child of `parent` whose pid inside its pid namespace is `pidInside`, with its pid as the machine sees it. */
function findChild(parent: number, pidInside: number): ProcessId | null {
  for (const pid of readChildren(parent)) {
    try {
      if (nsPids(pid).at(-1) === pidInside) return { pid, startTime: Number(readStat(pid).fields[22]) };
    } catch {
      // Gone meanwhile.
    }
  }
  return null;
}

function agentFailed(host: string, what: string, log: string): LabError {
  let tail = '';
  try {
    tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-10).join('\n');
  } catch {
    // No log yet: the agent never got to write one.
  }
  return new LabError('AGENT_FAILED', `the agent of lab host ${host} ${what}; ${tail ? `the end of ${log}:\n${tail}` : `${log} is empty`}`);
}

function killQuietly(pid: number): void {
  try {
    kill(pid, 9);
  } catch {
    // Already gone.
  }
}
