import { InvalidArgumentError, type Command } from 'commander';
import { labAgent, labDown, labExec, labList, labUp, summarize, type DownReport, type LabSummary } from '../../lab/lab.js';
import { MAX_HOSTS } from '../../lab/layout.js';
import { formatTable, printResult } from '../output.js';
import { requireRoot } from './run.js';

function parseHosts(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_HOSTS)) throw new InvalidArgumentError(`a number of hosts from 1 to ${MAX_HOSTS}`);
  return n;
}

export function register(program: Command): void {
  const lab = program
    .command('lab')
    .description('simulated hosts on this machine (namespaces, veths, a bridge) for demos and tests')
    .addHelpText(
      'after',
      '\nEach host lab-1..lab-N has its own pid, mount (and /proc), uts, ipc and network' +
        '\nnamespaces, kept by a small init that is its pid 1, an address 10.77.0.(10+i)/24 on' +
        '\neth0, a veth into the bridge ferry-lab0 (10.77.0.1/24 on this machine), and runs' +
        '\n`migrate agent` on port 7468. Inside a host, FERRY_STATE_DIR is' +
        '\n$FERRY_STATE_DIR/lab/<host> and FERRY_CGROUP_PARENT is ferry-lab/<host>.',
    );

  lab
    .command('up')
    .description('make the lab: N hosts, their network and agents, and add them to the inventory')
    .option('--hosts <n>', 'how many hosts', parseHosts, 3)
    .option('--no-agents', 'make the hosts and their network without starting agents')
    .addHelpText(
      'after',
      '\nThe hosts go into $FERRY_CONFIG_DIR/cluster.json (default /etc/ferry) as lab-1..lab-N' +
        '\nwith the agents\' addresses; a token is generated unless the file has one. A lab that' +
        '\nis already up, or pieces an earlier one left, are refused: `migrate lab down` first.',
    )
    .action(async (options: { hosts: number; agents: boolean }) => {
      requireRoot('make a lab');
      const summary = await summarize(await labUp(options));
      printResult(summary, (s) => `lab up: ${s.hosts.length} hosts on bridge ${s.bridge!.name} (${s.bridge!.address})\n${renderHosts(s)}`);
    });

  lab
    .command('agent')
    .description("stop, start or restart a lab host's agent (the host and its containers live on)")
    .argument('<host>', 'the lab host')
    .argument('<action>', 'stop, start or restart', (a: string) => {
      if (a !== 'stop' && a !== 'start' && a !== 'restart') throw new InvalidArgumentError('stop, start or restart');
      return a;
    })
    .addHelpText('after', '\nFor trying what happens to containers and migrations when an agent goes away:\n`stop` sends SIGTERM (SIGKILL after 10 s); `start` waits until the agent listens.')
    .action(async (host: string, action: 'stop' | 'start' | 'restart') => {
      requireRoot('control lab agents');
      const pid = await labAgent(host, action);
      printResult({ host, action, agentPid: pid }, (r) => `${r.host}: agent ${r.action === 'stop' ? 'stopped' : `running, pid ${r.agentPid}`}`);
    });

  lab
    .command('down')
    .description('remove everything the lab made: hosts and all their processes, network, cgroups, inventory entries, state')
    .addHelpText('after', '\nWorks without the lab\'s record (after a crash): what is left is found by name. Running it again does nothing.')
    .action(async () => {
      requireRoot('remove a lab');
      printResult(await labDown(), renderDown);
    });

  lab
    .command('exec')
    .description("run a command inside a lab host, with the host's FERRY_* environment, in its /")
    .argument('<host>', 'the host, e.g. lab-1')
    .argument('<command...>', 'the program and its arguments, after --')
    .addHelpText('after', "\nstdin, stdout and stderr are the command's; migrate exits with its exit code.\n\nExample:\n  migrate lab exec lab-1 -- migrate run web -- sleep 1000")
    .action(async (host: string, command: string[]) => {
      requireRoot('enter lab hosts');
      // Like a shell running a foreground job: a Ctrl-C is the command's to handle, and its exit code is what we report.
      const ignore = (): void => {};
      process.on('SIGINT', ignore).on('SIGQUIT', ignore);
      try {
        process.exitCode = await labExec(host, command);
      } finally {
        process.off('SIGINT', ignore).off('SIGQUIT', ignore);
      }
    });

  lab
    .command('ls')
    .description('list the lab hosts: address, init pid, agent state')
    .action(async () => {
      printResult(await labList(), (s) => (s.hosts.length === 0 ? 'no lab is up (`migrate lab up` makes one)' : renderHosts(s)));
    });
}

function renderHosts(s: LabSummary): string {
  const rows = s.hosts.map((h) => [
    h.name,
    h.address,
    h.init === 'running' ? String(h.initPid) : `${h.initPid} (down)`,
    h.agent === 'none' ? '-' : h.agentPid === null ? h.agent : `${h.agent} (pid ${h.agentPid})`,
  ]);
  return `${formatTable(['HOST', 'ADDRESS', 'INIT PID', 'AGENT'], rows)}\ninventory: ${s.inventory}`;
}

function renderDown(r: DownReport): string {
  const lines = r.notes.map((note) => `note: ${note}`);
  const done = [
    r.hosts.length ? `ended hosts ${r.hosts.join(', ')}` : '',
    r.links.length ? `deleted links ${r.links.join(', ')}` : '',
    r.cgroups.length ? `removed cgroups ${r.cgroups.join(', ')}` : '',
    r.inventory.length ? `removed ${r.inventory.join(', ')} from the inventory` : '',
    r.state ? 'removed the lab state' : '',
  ].filter(Boolean);
  lines.push(done.length ? `lab down: ${done.join('; ')}` : 'lab down: no lab here, nothing to remove');
  return lines.join('\n');
}
