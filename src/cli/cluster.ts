/**
 * What the commands that talk to agents share: the inventory, the TLS
 * material, and a channel to a host by its name.
 *
 * TLS is on for the whole cluster when $FERRY_CONFIG_DIR/tls/ca.crt exists
 * (`migrate init --tls` makes it); then each agent serves with
 * tls/<host>.crt and .key, and everyone checks peers against the CA. With
 * tls/client.crt (`migrate init --tls --mutual`), agents also demand a
 * certificate from whoever connects, and the CLI and agents show that one.
 * Files rather than inventory fields: the inventory is copied around, keys
 * should not be.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configDir, inventoryPath, readInventory, type Inventory } from '../cluster/inventory.js';
import { clientTlsFromFiles, connect, serverTlsFromFiles, type Channel, type ClientTlsOptions, type ServerTlsOptions } from '../transport/index.js';
import { CliError } from './errors.js';
import { ExitCode } from './exit-codes.js';

export function tlsDir(): string {
  return path.join(configDir(), 'tls');
}

/** The client side of the cluster's TLS, or null when the cluster runs without it. */
export function clientTls(): ClientTlsOptions | null {
  const dir = tlsDir();
  const ca = path.join(dir, 'ca.crt');
  if (!fs.existsSync(ca)) return null;
  const own = { cert: path.join(dir, 'client.crt'), key: path.join(dir, 'client.key'), ca };
  return clientTlsFromFiles(ca, fs.existsSync(own.cert) ? own : undefined);
}

/** An agent's server side of the cluster's TLS, or null when the cluster runs without it. */
export function serverTls(host: string): ServerTlsOptions | null {
  const dir = tlsDir();
  const ca = path.join(dir, 'ca.crt');
  if (!fs.existsSync(ca)) return null;
  const files = { cert: path.join(dir, `${host}.crt`), key: path.join(dir, `${host}.key`), ca };
  if (!fs.existsSync(files.cert)) {
    throw new CliError(`the cluster uses TLS (${ca}) but there is no certificate for host "${host}" (${files.cert}): add the host with \`migrate host add ${host} <address>\``, ExitCode.Usage);
  }
  return serverTlsFromFiles(files, { requireClientCert: fs.existsSync(path.join(dir, 'client.crt')) });
}

/** The inventory, or a clear error when there is none. */
export function requireInventory(): Inventory {
  const inventory = readInventory();
  if (!inventory) throw new CliError(`no hosts inventory at ${inventoryPath()}: run \`migrate init\` and \`migrate host add\`, or \`migrate lab up\``, ExitCode.Usage);
  return inventory;
}

export function hostAddress(inventory: Inventory, host: string): string {
  const entry = inventory.hosts[host];
  if (!entry) {
    const known = Object.keys(inventory.hosts);
    throw new CliError(`no host named "${host}" in ${inventoryPath()} (${known.length ? `it has ${known.join(', ')}` : 'it has no hosts'})`, ExitCode.Usage);
  }
  return entry.address;
}

/** A channel from this CLI to the agent of `host`. */
export function connectHost(inventory: Inventory, host: string): Promise<Channel> {
  const tls = clientTls();
  return connect(hostAddress(inventory, host), { token: inventory.token, role: 'cli', hostName: `cli@${os.hostname()}`, ...(tls ? { tls } : {}) });
}

/** Runs `use` on a channel to `host`, closing it afterwards. */
export async function withHost<T>(inventory: Inventory, host: string, use: (channel: Channel) => Promise<T>): Promise<T> {
  const channel = await connectHost(inventory, host);
  try {
    return await use(channel);
  } finally {
    await channel.close();
  }
}

/** Asks every host at once; a host that does not answer is reported, not fatal. */
export async function askAll<T>(inventory: Inventory, ask: (channel: Channel) => Promise<T>): Promise<Array<{ host: string; result: T } | { host: string; error: string }>> {
  return Promise.all(
    Object.keys(inventory.hosts)
      .sort()
      .map(async (host) => {
        try {
          return { host, result: await withHost(inventory, host, ask) };
        } catch (e) {
          return { host, error: e instanceof Error ? e.message : String(e) };
        }
      }),
  );
}
