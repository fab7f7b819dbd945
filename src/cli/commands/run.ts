import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { effectiveUid } from '../../native/host.js';
import { CONTAINER_TRACER_MODULE, containerLogPath, runContainer } from '../../container/runtime.js';
import { parseCpus, parseEnv, parseMemory, validateCwd, validateHostname, validateName, type ContainerSpec } from '../../container/spec.js';
import { parseAddress, parseGateway, validateNetworkSpec, type NetworkSpec } from '../../container/network.js';
import { withTracer } from '../engine.js';
import { requireInventory, withHost } from '../cluster.js';
import { RunReply, RunRequest } from '../../coordinator/messages.js';
import type { ContainerState } from '../../container/state.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatFields, printResult } from '../output.js';

interface RunOptions {
  hostname?: string;
  env: Record<string, string>;
  cwd: string;
  memory?: number;
  cpus?: number;
  rootfs?: string;
  host?: string;
  ip: string[];
  gateway: string[];
}

/** Turns a validator's RangeError into commander's usage error (exit 2). */
export function usage<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

/** Namespaces, cgroups and signals to other users' processes need root; saying so beats a bare EPERM. */
export function requireRoot(what: string): void {
  if (effectiveUid() !== 0) throw new CliError(`only root can ${what}`, ExitCode.Unsupported);
}

export function register(program: Command): void {
  program
    .command('run')
    .description('start a container that runs on after this command exits')
    .argument('<name>', 'the container name: 1-63 characters of a-z, 0-9, _ . -', usage(validateName))
    .argument('<command...>', 'the program to run as its pid 1 and its arguments, after --')
    .option('--hostname <name>', 'its hostname (default: the container name)', usage(validateHostname))
    .option('--env <NAME=value>', 'set an environment variable; repeat for more', (text: string, env: Record<string, string>) => {
      const [key, value] = usage(parseEnv)(text);
      return { ...env, [key]: value };
    }, {})
    .option('--cwd <dir>', 'its working directory, inside the container', usage(validateCwd), '/')
    .option('--memory <size>', 'memory limit, e.g. 512m or 2g', usage(parseMemory))
    .option('--cpus <n>', 'CPU limit in CPUs, e.g. 0.5', usage(parseCpus))
    .option('--rootfs <dir>', 'a directory to use as its root, writable (default: the host root, read-only)')
    .option('--ip <address/prefix>', "an address for its eth0 on the host's bridge (FERRY_BRIDGE), e.g. 10.77.0.150/24; repeat for more", (text: string, all: string[]) => [...all, usage(parseAddress)(text)], [])
    .option('--gateway <ip>', 'its default route, via this address on the link of an --ip (one per family)', (text: string, all: string[]) => [...all, usage(parseGateway)(text)], [])
    .option('--host <host>', "start it on that host of the inventory, through its agent (default: here, without an agent)")
    .addHelpText(
      'after',
      '\nThe container gets its own pid, mount, uts, ipc, network, cgroup and time' +
        '\nnamespaces, a cgroup with the limits given, its own /proc, /sys, /dev and a' +
        '\nprivate /tmp (tmpfs). Its network has its loopback, and with --ip an eth0 (a veth' +
        '\nwith a MAC of its own) plugged into the bridge the host names in FERRY_BRIDGE;' +
        '\nits addresses and MAC move with it (docs/NETWORK.md). An address already used' +
        '\non the host is refused. Its stdout and stderr go to a log: `migrate logs <name>`.' +
        '\nState lives in $FERRY_STATE_DIR (default /var/lib/ferry).' +
        '\n\nExamples:\n  migrate run web --memory 256m -- python3 -m http.server 8000' +
        '\n  migrate run web --ip 10.0.0.50/24 --gateway 10.0.0.1 -- python3 -m http.server 8000',
    )
    .action(async (name: string, command: string[], options: RunOptions) => {
      requireRoot('start containers');
      const spec: ContainerSpec = {
        name,
        command,
        hostname: options.hostname ?? name,
        env: options.env,
        cwd: options.cwd,
        memoryBytes: options.memory ?? null,
        cpus: options.cpus ?? null,
        rootfs: options.rootfs === undefined ? null : checkRootfs(options.rootfs),
        ...(options.ip.length || options.gateway.length ? { network: checkNetwork({ addresses: options.ip, gateways: options.gateway }) } : {}),
      };
      const state = options.host
        ? ((await withHost(requireInventory(), options.host, (ch) => ch.request(RunRequest.make({ spec }), RunReply))).container as unknown as ContainerState)
        : await withTracer(CONTAINER_TRACER_MODULE, (tracer) => runContainer(spec, tracer));
      const report = {
        name: state.name,
        ...(options.host ? { host: options.host } : {}),
        pid: state.pid,
        hostname: state.hostname,
        command: state.command,
        executable: state.executable,
        cgroup: state.cgroup.path,
        ...(state.network ? { addresses: state.network.addresses, mac: state.network.mac } : {}),
        // On another host the log is there: `migrate lab exec` or a shell there reads it.
        log: options.host ? `${state.name}/log in that host's state directory` : containerLogPath(state.name),
      };
      printResult(report, (r) =>
        `started container ${r.name}${r.host ? ` on ${r.host}` : ''}, pid ${r.pid}\n${formatFields([
          ['command', r.command.join(' ')],
          ['hostname', r.hostname],
          ['cgroup', r.cgroup],
          ...(r.addresses ? ([['addresses', `${r.addresses.join(' ')} (mac ${r.mac})`]] as Array<[string, string]>) : []),
          ['log', `${r.log} (migrate logs ${r.name})`],
        ])}`,
      );
    });
}

function checkNetwork(spec: NetworkSpec): NetworkSpec {
  try {
    return validateNetworkSpec(spec);
  } catch (e) {
    throw new CliError((e as Error).message, ExitCode.Usage);
  }
}

function checkRootfs(dir: string): string {
  const full = path.resolve(dir);
  if (!fs.statSync(full, { throwIfNoEntry: false })?.isDirectory()) throw new CliError(`--rootfs ${dir}: not a directory`, ExitCode.Usage);
  return full;
}
