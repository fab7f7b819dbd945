/**
 * What the suites that run containers in a lab share: listing them through
 * every agent, finding a container's init as this (root) pid namespace sees
 * it (agents report pids of their hosts' namespaces), and its verdict.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nsPids, readChildren } from '../../src/native/proc.js';
import { kill } from '../../src/native/process.js';
import { readRecord } from '../../src/lab/record.js';
import { jsonOf, migrate, type CliResult } from './cli.js';
import { waitFor } from './wait.js';

export interface Listed {
  host: string;
  name: string;
  pid: number;
  state: string;
}

export function ok(r: CliResult): void {
  assert.equal(r.status, 0, `exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** Every container of every lab host, from `migrate --json ps`. */
export async function ps(): Promise<Listed[]> {
  const r = await migrate(['--json', 'ps']);
  ok(r);
  return jsonOf<{ containers: Listed[] }>(r).containers;
}

export async function running(name: string): Promise<Listed[]> {
  return (await ps()).filter((c) => c.name === name && c.state === 'running');
}

/** The container's init, found below its lab host's init by the pid the agent reported. */
export async function initOf(name: string): Promise<number | null> {
  const [c] = await running(name);
  if (!c) return null;
  const queue = [readRecord()!.hosts.find((h) => h.name === c.host)!.init.pid];
  while (queue.length) {
    const p = queue.shift()!;
    const chain = nsPids(p);
    if (chain.length >= 2 && chain[1] === c.pid) return p;
    queue.push(...readChildren(p));
  }
  return null;
}

/** SIGTERM to the workload; its verdict is read through a handle on its /tmp, which vanishes with it. */
export async function verdict(name: string, timeoutMs = 30_000): Promise<string> {
  const init = await initOf(name);
  assert.ok(init, `${name} runs somewhere`);
  const tmp = fs.openSync(`/proc/${init}/root/tmp`, 'r');
  try {
    kill(init, 15);
    await waitFor(`the verdict of ${name}`, () => fs.existsSync(`/proc/self/fd/${tmp}/result`), timeoutMs);
    return fs.readFileSync(`/proc/self/fd/${tmp}/result`, 'utf8').trim();
  } finally {
    fs.closeSync(tmp);
  }
}

/** Waits until the workload in `name` wrote its READY file. */
export async function waitReady(name: string, what = `${name} to be READY`): Promise<void> {
  await waitFor(what, async () => {
    const init = await initOf(name);
    return init !== null && fs.existsSync(`/proc/${init}/root/tmp/result.ready`);
  }, 30_000);
}

/**
 * Gives the calling suite a lab of `hosts` hosts for its whole length, with
 * its own inventory (FERRY_CONFIG_DIR) and `binaries` copied to a directory
 * every lab host and container can see (a container's /tmp is its own).
 * Only a lab this suite made is taken down: another on the machine is
 * somebody else's.
 */
export function useLab(hosts: number, binaries: string[]): { binDir: string; configDir: string } {
  const place = { binDir: '', configDir: '' };
  const saved = process.env['FERRY_CONFIG_DIR'];
  let made = false;
  before(async function () {
    place.configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-config-'));
    process.env['FERRY_CONFIG_DIR'] = place.configDir;
    place.binDir = fs.mkdtempSync('/var/tmp/ferry-lab-bin-');
    for (const b of binaries) {
      fs.copyFileSync(b, path.join(place.binDir, path.basename(b)));
      fs.chmodSync(path.join(place.binDir, path.basename(b)), 0o755);
    }
    ok(await migrate(['lab', 'up', '--hosts', String(hosts)]));
    made = true;
  });
  after(async function () {
    const down = made ? await migrate(['lab', 'down']) : null;
    fs.rmSync(place.binDir, { recursive: true, force: true });
    fs.rmSync(place.configDir, { recursive: true, force: true });
    if (saved === undefined) delete process.env['FERRY_CONFIG_DIR'];
    else process.env['FERRY_CONFIG_DIR'] = saved;
    if (down) ok(down);
  });
  return place;
}
