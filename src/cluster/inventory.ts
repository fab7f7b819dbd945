/**
 * The hosts inventory: which agents make up the cluster, where they listen,
 * and the token they share. One JSON file, $FERRY_CONFIG_DIR/cluster.json
 * (default /etc/ferry/cluster.json):
 *
 *   { "version": 1, "token": "<hex>", "hosts": { "<name>": { "address": "<ip>:<port>" } } }
 *
 * Several commands edit it (`lab up|down`, `host add|rm`), so every write
 * replaces the whole file in one rename: a reader sees the old file or the
 * new one, never half of either.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export const INVENTORY_VERSION = 1;

/** Same rule as container names, so a host name is safe as a path component and in a cgroup name. */
const HOST_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
/** host:port, where host is an IPv4 address, a DNS name or a bracketed IPv6 address. */
const ADDRESS = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
/** 128 bits at least: the token is the only thing that keeps strangers from an agent. */
const TOKEN = /^[0-9a-f]{32,}$/;

const HostEntry = z.strictObject({
  address: z
    .string()
    .regex(ADDRESS, 'expected "<ip>:<port>"')
    .refine((a) => {
      const port = ADDRESS.exec(a)?.[1];
      return port === undefined || (Number(port) >= 1 && Number(port) <= 65535);
    }, 'the port must be 1-65535'),
});

const InventorySchema = z.strictObject({
  version: z.literal(INVENTORY_VERSION, `expected ${INVENTORY_VERSION}, the only version this Ferry reads`),
  token: z.string().regex(TOKEN, 'expected at least 32 lowercase hex digits'),
  hosts: z.record(z.string().regex(HOST_NAME, 'a host name is 1-63 characters of a-z, 0-9, _ . -, starting with a letter or digit'), HostEntry),
});

export type Inventory = z.infer<typeof InventorySchema>;
export type HostEntry = z.infer<typeof HostEntry>;

/** A broken inventory: `file` names it, the message says what is wrong with it. */
export class InventoryError extends Error {
  readonly code = 'BAD_INVENTORY';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'InventoryError';
  }
}

/** FERRY_CONFIG_DIR, or /etc/ferry. */
export function configDir(): string {
  return path.resolve(process.env['FERRY_CONFIG_DIR'] || '/etc/ferry');
}

export function inventoryPath(): string {
  return path.join(configDir(), 'cluster.json');
}

/** A fresh shared secret: 32 random bytes as hex. */
export function newToken(): string {
  return randomBytes(32).toString('hex');
}

/** The inventory, or null when the file does not exist yet. */
export function readInventory(file = inventoryPath()): Inventory | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InventoryError(file, `not valid JSON (${(e as Error).message})`);
  }
  return validate(file, json);
}

/** Replaces the file (written to a temporary file, fsynced, renamed over it); readable by root only, since it holds the token. */
export function writeInventory(inventory: Inventory, file = inventoryPath()): void {
  const valid = validate(file, inventory);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeFileSync(fd, `${JSON.stringify(valid, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Reads the inventory (a new one with a fresh token when there is none),
 * lets `change` edit it in place, and writes it back.
 */
export function updateInventory(change: (inventory: Inventory) => void, file = inventoryPath()): Inventory {
  const inventory = readInventory(file) ?? { version: INVENTORY_VERSION, token: newToken(), hosts: {} };
  change(inventory);
  writeInventory(inventory, file);
  return inventory;
}

/** Adds a host, or moves an existing one to `address`. */
export function addHost(name: string, address: string, file = inventoryPath()): Inventory {
  return updateInventory((inventory) => {
    inventory.hosts[name] = { address };
  }, file);
}

/** Removes a host; false when the inventory has no such host (the file is then left untouched). */
export function removeHost(name: string, file = inventoryPath()): boolean {
  const inventory = readInventory(file);
  if (!inventory || !(name in inventory.hosts)) return false;
  delete inventory.hosts[name];
  writeInventory(inventory, file);
  return true;
}

function validate(file: string, json: unknown): Inventory {
  const parsed = InventorySchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.slice(0, 5).map((i) => {
    // A bad host name is reported at its own path with zod's generic words; say which name and what is wrong with it.
    if (i.code === 'invalid_key') return `hosts: "${String(i.path.at(-1))}" is not a valid host name: ${i.issues[0]?.message ?? i.message}`;
    return `${i.path.length ? i.path.map(String).join('.') : '(top level)'}: ${i.message}`;
  });
  if (parsed.error.issues.length > 5) problems.push(`and ${parsed.error.issues.length - 5} more`);
  throw new InventoryError(file, `not a valid hosts inventory: ${problems.join('; ')}`);
}
