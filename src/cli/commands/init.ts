import fs from 'node:fs';
import type { Command } from 'commander';
import { INVENTORY_VERSION, inventoryPath, newToken, readInventory, writeInventory } from '../../cluster/inventory.js';
import { generateClusterCa, issueCertificate } from '../../transport/index.js';
import { tlsDir } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { printResult } from '../output.js';
import { RESERVED_NAMES } from './host.js';
import { requireRoot } from './run.js';

interface InitOptions {
  tls?: boolean;
  mutual?: boolean;
}

export function register(program: Command): void {
  program
    .command('init')
    .description('make the cluster configuration: the inventory with a fresh token, and with --tls a cluster CA')
    .option('--tls', 'agents talk TLS, with certificates from a cluster CA made here')
    .option('--mutual', 'with --tls: agents also demand a client certificate (one is issued for the CLI and the agents)')
    .addHelpText(
      'after',
      '\nEverything goes to $FERRY_CONFIG_DIR (default /etc/ferry): cluster.json (the token and' +
        '\nthe hosts; readable by root only) and tls/ (the CA, its key, certificates). Copy the' +
        '\ndirectory to every host. An existing inventory keeps its token and hosts; an existing' +
        '\nCA is kept (every certificate it signed would stop working).',
    )
    .action(async (options: InitOptions) => {
      requireRoot('write the cluster configuration');
      const existing = readInventory();
      const inventory = existing ?? { version: INVENTORY_VERSION, token: newToken(), hosts: {} };
      if (!existing) writeInventory(inventory);
      const made: string[] = existing ? [] : [inventoryPath()];
      if (options.tls || options.mutual) {
        const clash = Object.keys(inventory.hosts).filter((h) => RESERVED_NAMES.includes(h));
        if (clash.length) {
          // A host's certificate is tls/<host>.crt: it would overwrite the cluster CA's or the CLI's own.
          throw new CliError(`${inventoryPath()} has a host named ${clash.map((h) => `"${h}"`).join(' and ')}, a name TLS keeps for itself (tls/ca.crt is the cluster CA, tls/client.crt the CLI's certificate): remove it with \`migrate host rm\` and add it under another name first`, ExitCode.Usage);
        }
        const dir = tlsDir();
        if (!fs.existsSync(`${dir}/ca.crt`)) made.push((await generateClusterCa(dir)).cert);
        for (const host of Object.keys(inventory.hosts)) {
          if (!fs.existsSync(`${dir}/${host}.crt`)) made.push((await issueCertificate(dir, host, [inventory.hosts[host]!.address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')], dir)).cert);
        }
        if (options.mutual && !fs.existsSync(`${dir}/client.crt`)) made.push((await issueCertificate(dir, 'client', [], dir)).cert);
      }
      printResult({ inventory: inventoryPath(), made, tls: fs.existsSync(`${tlsDir()}/ca.crt`), mutual: fs.existsSync(`${tlsDir()}/client.crt`) }, (r) =>
        [`cluster configuration in ${r.inventory} (TLS ${r.tls ? (r.mutual ? 'on, mutual' : 'on') : 'off'})`, ...r.made.map((m) => `made ${m}`)].join('\n'),
      );
    });
}
