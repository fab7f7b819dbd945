import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { startAgent } from '../../agent/agent.js';
import { parseMemory, validateName } from '../../container/spec.js';
import { parseAddress } from '../../transport/index.js';
import { requireInventory, serverTls, clientTls } from '../cluster.js';
import { usage, requireRoot } from './run.js';

interface AgentOptions {
  name?: string;
  listen?: string;
  memoryReserve: number;
  stagingDir?: string;
}

const DEFAULT_LISTEN_PORT = 7468;

export function register(program: Command): void {
  program
    .command('agent')
    .description('run the agent of this host: it runs containers and plays source or target in migrations')
    .option('--name <host>', "this host's name in the inventory (default: the hostname)", usage(validateName))
    .option('--listen <addr:port>', "where to listen (default: this host's address in the inventory, else 0.0.0.0:7468)")
    .option('--memory-reserve <size>', 'memory this host keeps for itself: a migration that would leave less is refused', usage(parseMemory), 256 * 1024 * 1024)
    .option('--staging-dir <dir>', 'where incoming images wait for their restore, in memory (default /dev/shm/ferry/<host>)')
    .addHelpText(
      'after',
      '\nThe token comes from the inventory ($FERRY_CONFIG_DIR/cluster.json, default' +
        '\n/etc/ferry/cluster.json; `migrate init` makes it). With $FERRY_CONFIG_DIR/tls/ca.crt' +
        '\nthe agent serves TLS with tls/<host>.crt and .key (`migrate host add` issues them),' +
        '\nand with tls/client.crt it demands client certificates too.' +
        '\nState lives in $FERRY_STATE_DIR (default /var/lib/ferry): containers keep running' +
        '\nwhen the agent stops, and a restarted agent finds them and resolves unfinished' +
        '\nmigrations from its journal. SIGTERM or SIGINT stop it.',
    )
    .action(async (options: AgentOptions) => {
      requireRoot('run the agent');
      const inventory = requireInventory();
      const name = options.name ?? validateName(os.hostname().toLowerCase());
      const listenAt = parseAddress(options.listen ?? inventory.hosts[name]?.address ?? `0.0.0.0:${DEFAULT_LISTEN_PORT}`);
      const server = serverTls(name);
      const client = clientTls();
      const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
      const agent = await startAgent({
        name,
        host: listenAt.host,
        port: listenAt.port,
        token: inventory.token,
        ...(server && client ? { tls: { server, client } } : {}),
        memoryReserveBytes: options.memoryReserve,
        stagingDir: path.resolve(options.stagingDir ?? path.join('/dev/shm/ferry', name)),
        log,
      });
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          log(`${signal}: stopping; containers keep running`);
          resolve();
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await agent.close();
    });
}
