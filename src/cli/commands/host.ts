import fs from 'node:fs';
import type { Command } from 'commander';
import { addHost, inventoryPath, readInventory, removeHost } from '../../cluster/inventory.js';
import { PsReply, PsRequest } from '../../coordinator/messages.js';
import { issueCertificate, parseAddress } from '../../transport/index.js';
import { askAll, tlsDir } from '../cluster.js';
import { CliError } from '../errors.js';
import { ExitCode } from '../exit-codes.js';
import { formatTable, printResult } from '../output.js';

const HOST_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
export const RESERVED_NAMES = ['ca', 'client'];

export function register(program: Command): void {
  const host = program.command('host').description('the hosts inventory: which agents make up the cluster and where they listen');
  host
    .command('add')
    .description('add a host (or move it to a new address); with TLS on, issue its agent certificate')
    .argument('<name>', 'the host name: 1-63 characters of a-z, 0-9, _ . -')
    .argument('<address>', "its agent's address, ip:port (e.g. 10.0.0.2:7468)")
    .action(async (name: string, address: string) => {
      if (!HOST_NAME.test(name)) throw new CliError(`invalid host name "${name}": 1-63 characters of a-z, 0-9, _ . -, starting with a letter or digit`, ExitCode.Usage);
      // A host's certificate is tls/<name>.crt: these names would overwrite the cluster CA or the CLI's own certificate.
      if (RESERVED_NAMES.includes(name)) throw new CliError(`the host name "${name}" is reserved: tls/${name}.crt is the ${name === 'ca' ? "cluster CA's" : "CLI's client"} certificate`, ExitCode.Usage);
      let parsed;
      try {
        parsed = parseAddress(address);
      } catch (e) {
        throw new CliError((e as Error).message, ExitCode.Usage);
      }
      const stored = `${parsed.host.includes(':') ? `[${parsed.host}]` : parsed.host}:${parsed.port}`;
      addHost(name, stored);
      let certificate: string | null = null;
      if (fs.existsSync(`${tlsDir()}/ca.key`)) {
        // Valid for whatever the CLI and other agents dial, a DNS name as much as an IP address (as `init --tls` issues them).
        certificate = (await issueCertificate(tlsDir(), name, [parsed.host], tlsDir())).cert;
      }
      printResult({ name, address: stored, inventory: inventoryPath(), certificate }, (r) =>
        `added ${r.name} at ${r.address} to ${r.inventory}${r.certificate ? `\nits agent certificate: ${r.certificate}` : ''}`,
      );
    });
  host
    .command('rm')
    .description('remove a host from the inventory (its agent and containers are not touched)')
    .argument('<name>', 'the host name')
    .action((name: string) => {
      if (!removeHost(name)) throw new CliError(`no host named "${name}" in ${inventoryPath()}`, ExitCode.Failed);
      printResult({ name, removed: true }, (r) => `removed ${r.name} from ${inventoryPath()}`);
    });
  host
    .command('ls')
    .description('list the hosts, and whether their agents answer')
    .option('--no-check', 'do not contact the agents')
    .action(async (options: { check: boolean }) => {
      const inventory = readInventory();
      const names = Object.keys(inventory?.hosts ?? {}).sort();
      const answers = inventory && options.check ? await askAll(inventory, (ch) => ch.request(PsRequest.make({}), PsReply).then((r) => ({ ferry: ch.peer.ferryVersion, containers: r.containers.length }))) : [];
      const hosts = names.map((name) => {
        const a = answers.find((x) => x.host === name);
        return {
          name,
          address: inventory!.hosts[name]!.address,
          agent: !a ? null : 'result' in a ? { up: true, ferry: a.result.ferry, containers: a.result.containers } : { up: false, error: a.error },
        };
      });
      printResult({ inventory: inventoryPath(), hosts }, (r) => {
        if (!r.hosts.length) return `no hosts in ${r.inventory}`;
        return formatTable(
          ['NAME', 'ADDRESS', 'AGENT'],
          r.hosts.map((h) => [h.name, h.address, h.agent === null ? '-' : h.agent.up ? `up (Ferry ${h.agent.ferry}, ${h.agent.containers} containers)` : `down: ${h.agent.error}`]),
        );
      });
    });
}
