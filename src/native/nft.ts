/**
 * The network lock: nftables rules that drop every packet to and from
 * given local TCP endpoints in one network namespace, while the sockets
 * behind them are being moved. A peer whose packets are dropped only
 * retransmits; a peer whose packets reach a port with no socket gets a RST
 * and loses its connection. So a connection is locked before its socket is
 * closed (or frozen in repair mode) and unlocked once its restored socket
 * exists and the program runs.
 *
 * Each lock is one table of its own (`inet ferry-lock-...`), made with one
 * atomic `nft -f`, holding a prerouting and an output chain at raw priority
 * (before conntrack, so the dropped packets leave no trace there either).
 * Removing the table removes exactly what the lock added and nothing else;
 * removing it twice is not an error. The namespace is entered with nsenter,
 * by a process living in it or by a namespace file (/run/netns/NAME,
 * /proc/PID/ns/net).
 *
 *   const table = lockTableName();
 *   lockEndpoints(table, [{ family: 'inet', addr: '10.0.0.5', port: 8080 }], { pid });
 *   ... move the sockets ...
 *   unlockTable(table, { pid: restoredPid });
 */
import { randomBytes } from 'node:crypto';
import { nsenterArgv } from './nsenter.js';
import { ToolError, runTool } from './tool.js';
import { isWildcard, mappedIpv4, type InetFamily } from './inet.js';

/** A network namespace to act in: that of a process, or a namespace file. Absent: Ferry's own. */
export type NetnsRef = { pid: number } | { path: string };

/** A local TCP endpoint: its address (0.0.0.0 or :: for a socket bound to every address) and port. */
export interface LockEndpoint {
  family: InetFamily;
  addr: string;
  port: number;
  /** An IPv6 socket bound to :: that takes only IPv6 (IPV6_V6ONLY); without it, IPv4 too. */
  v6only?: boolean;
  /** A connection's other end: only its packets are dropped (a listener's endpoint has none: all of them are). */
  remote?: { addr: string; port: number };
}

const TABLE_PREFIX = 'ferry-lock-';
const TABLE_NAME = /^ferry-lock-[A-Za-z0-9_-]{1,64}$/;
/** NF_IP_PRI_RAW: before connection tracking. */
const PRIORITY = -300;

/** A fresh table name: Ferry's pid and random bits, so concurrent checkpoints never share one. */
export function lockTableName(): string {
  return `${TABLE_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`;
}

function nftArgv(netns: NetnsRef | undefined, args: string[]): string[] {
  const enter = !netns ? [] : 'pid' in netns ? nsenterArgv(netns.pid, ['net']) : ['nsenter', `--net=${netns.path}`, '--'];
  return [...enter, 'nft', ...args];
}

function checkTable(table: string): void {
  if (!TABLE_NAME.test(table)) throw new RangeError(`not a Ferry lock table name: ${table}`);
}

function checkAddress(addr: string): void {
  if (!/^[0-9a-fA-F:.]+$/.test(addr)) throw new RangeError(`not an address: ${addr}`);
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`not a port: ${port}`);
}

/**
 * The match of one endpoint in one direction: packets to it (`daddr`,
 * `dport`, and from its remote end: `saddr`, `sport`) or from it.
 */
function matches(e: LockEndpoint, dir: 'to' | 'from'): string {
  checkPort(e.port);
  const [here, there] = dir === 'to' ? ['d', 's'] : ['s', 'd'];
  if (isWildcard(e.addr)) {
    if (e.family === 'inet') return `meta nfproto ipv4 tcp ${here}port ${e.port}`;
    return e.v6only ? `meta nfproto ipv6 tcp ${here}port ${e.port}` : `meta l4proto tcp tcp ${here}port ${e.port}`;
  }
  checkAddress(e.addr);
  // An IPv4-mapped address is IPv4 on the wire.
  const v4 = e.family === 'inet' ? e.addr : mappedIpv4(e.addr);
  const proto = v4 ? 'ip' : 'ip6';
  const terms = [`${proto} ${here}addr ${v4 ?? e.addr}`];
  if (e.remote) {
    checkAddress(e.remote.addr);
    checkPort(e.remote.port);
    terms.push(`${proto} ${there}addr ${(v4 ? mappedIpv4(e.remote.addr) : null) ?? e.remote.addr}`);
  }
  terms.push(`tcp ${here}port ${e.port}`);
  if (e.remote) terms.push(`tcp ${there}port ${e.remote.port}`);
  return terms.join(' ');
}

/** The nft script of a lock (exported for tests and for reading: `nft -f` takes it as is). */
export function lockScript(table: string, endpoints: readonly LockEndpoint[]): string {
  checkTable(table);
  const rules = (dir: 'to' | 'from') => [...new Set(endpoints.map((e) => `${matches(e, dir)} drop`))].map((r) => `    ${r}\n`).join('');
  return (
    `table inet ${table} {\n` +
    `  chain to_sockets {\n    type filter hook prerouting priority ${PRIORITY}; policy accept;\n${rules('to')}  }\n` +
    `  chain from_sockets {\n    type filter hook output priority ${PRIORITY}; policy accept;\n${rules('from')}  }\n` +
    `}\n`
  );
}

/** Locks `endpoints` in a network namespace, as one new table named `table` (from lockTableName), atomically. */
export function lockEndpoints(table: string, endpoints: readonly LockEndpoint[], netns?: NetnsRef): void {
  runTool(nftArgv(netns, ['-f', '-']), { input: lockScript(table, endpoints) });
}

/** Removes a lock; false when it was not there (removed already, or its namespace is another one). */
export function unlockTable(table: string, netns?: NetnsRef): boolean {
  checkTable(table);
  try {
    runTool(nftArgv(netns, ['delete', 'table', 'inet', table]));
    return true;
  } catch (e) {
    if (e instanceof ToolError && /No such file or directory/.test(e.stderr)) return false;
    throw e;
  }
}

/** The Ferry lock tables of a network namespace. */
export function lockTables(netns?: NetnsRef): string[] {
  const out = runTool(nftArgv(netns, ['list', 'tables', 'inet']));
  return [...out.matchAll(/^table inet (\S+)$/gm)].map((m) => m[1]!).filter((t) => t.startsWith(TABLE_PREFIX));
}
