/**
 * Container networking: addresses that move with the container.
 *
 * A container given addresses (`migrate run --ip`) gets a veth pair. Its
 * end is `eth0` inside its network namespace, with the addresses, a MAC
 * derived from the container, and a default route via the gateway; the
 * host's end is plugged into the Linux bridge the host names in
 * FERRY_BRIDGE. What moves is the container's side: a checkpoint records
 * its interfaces and routes (src/source/container.ts), a restore makes a
 * new pair on the new host with the same name, MAC, MTU, addresses and
 * routes (src/target/container.ts), and once that copy is the container of
 * record its host end comes up and it announces itself (gratuitous ARP for
 * IPv4, unsolicited neighbour advertisement for IPv6), so switches send its
 * traffic to its new port at once.
 *
 * Same L2, same MAC. The hosts share the segment the addresses live on
 * (docs/NETWORK.md says how an operator builds that). Because the MAC does
 * not change, every neighbour's ARP/NDP entry for the container stays
 * right across a move; only the switches (the bridges on the way) must
 * learn its new port, and any frame from it teaches them that. The
 * announcement is that frame, sent before the container has said anything.
 *
 * Only the host end's state is the host's business: until a restored copy
 * is the one of record (a migration's target holds it frozen until the
 * source commits), its host end stays down, so the copy neither answers
 * ARP for the addresses nor takes (and resets) connections that are still
 * the source's.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { deleteLink, ipBatch, ipJson, ipJsonEach } from '../native/iproute.js';
import { IFF, interfaceFlags, loopbackOnly, sendFrames, setInterfaceUp } from '../native/netdev.js';
import { tryLockFile } from '../native/lock.js';
import { runHook } from '../native/hook.js';
import type { ContainerNetworkImage, NetworkInterfaceImage, RouteImage } from '../image/container.js';
import { ContainerError } from './errors.js';
import { containerStatus, listStates, readState, stateDir } from './state.js';

/** The container's end of its veth, inside its network namespace. */
export const CONTAINER_INTERFACE = 'eth0';

/** The environment variable (of the agent, or of the CLI that runs containers here) naming the bridge containers plug into. */
export const BRIDGE_VARIABLE = 'FERRY_BRIDGE';

/** The environment variable naming the operator's network hook, if any (see runNetworkHook). */
export const HOOK_VARIABLE = 'FERRY_NETWORK_HOOK';

/** What `migrate run --ip/--gateway` asks for; canonical forms (see parseAddress, parseGateway). */
export interface NetworkSpec {
  /** "address/prefix", IPv4 or IPv6. */
  addresses: string[];
  /** At most one per family, each on the link of an address of its family (or IPv6 link-local). */
  gateways: string[];
}

/** A container's interface on this host, as its record keeps it. */
export interface ContainerNetwork {
  /** Its name inside the container. */
  interface: string;
  mac: string;
  /** The host's end of the veth, in the host's network namespace. */
  hostVeth: string;
  /** The bridge the host end is plugged into. */
  bridge: string;
  /** "address/prefix" of every address on the interface but the kernel's own link-local one. */
  addresses: string[];
}

// ---------------------------------------------------------------- addresses

type Family = 4 | 6;

/** The address in the form iproute2 prints it (what records and images hold), or null when it is not one. */
function canonicalIp(text: string): { address: string; family: Family } | null {
  if (text.includes('%')) return null;
  const family: Family | 0 = net.isIPv4(text) ? 4 : net.isIPv6(text) ? 6 : 0;
  if (!family) return null;
  return { address: new net.SocketAddress({ address: text, family: family === 4 ? 'ipv4' : 'ipv6' }).address, family };
}

function splitCidr(cidr: string): { address: string; prefix: number; family: Family } {
  const slash = cidr.lastIndexOf('/');
  const ip = canonicalIp(cidr.slice(0, slash))!;
  return { ...ip, prefix: Number(cidr.slice(slash + 1)) };
}

/** The address part of "address/prefix". */
export function addressOf(cidr: string): string {
  return cidr.slice(0, cidr.lastIndexOf('/'));
}

/** Ranges no container address may be in: unspecified, loopback, multicast, broadcast, and IPv6 link-local (the kernel's, made from the MAC). */
const RESERVED = new net.BlockList();
RESERVED.addSubnet('0.0.0.0', 8, 'ipv4');
RESERVED.addSubnet('127.0.0.0', 8, 'ipv4');
RESERVED.addSubnet('224.0.0.0', 4, 'ipv4');
RESERVED.addAddress('255.255.255.255', 'ipv4');
RESERVED.addAddress('::', 'ipv6');
RESERVED.addAddress('::1', 'ipv6');
RESERVED.addSubnet('ff00::', 8, 'ipv6');
RESERVED.addSubnet('fe80::', 10, 'ipv6');

const ipv = (family: Family): 'ipv4' | 'ipv6' => (family === 4 ? 'ipv4' : 'ipv6');

/** "10.77.0.150/24" or "2001:db8::5/64", checked, in canonical form. */
export function parseAddress(text: string): string {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  const ip = m ? canonicalIp(m[1]!) : null;
  if (!m || !ip) throw new RangeError(`invalid address "${text}": an IPv4 or IPv6 address with its prefix length, e.g. 10.77.0.150/24 or 2001:db8::5/64`);
  const prefix = Number(m[2]);
  const bits = ip.family === 4 ? 32 : 128;
  if (prefix < 1 || prefix > bits) throw new RangeError(`invalid address "${text}": the prefix length of an IPv${ip.family} address is 1 to ${bits}`);
  if (RESERVED.check(ip.address, ipv(ip.family))) throw new RangeError(`invalid address "${text}": ${ip.address} is not an address a container can have (unspecified, loopback, multicast, broadcast or IPv6 link-local)`);
  if (ip.family === 4 && prefix <= 30) {
    const value = ipv4Number(ip.address);
    const host = value & (2 ** (32 - prefix) - 1);
    if (host === 0 || host === 2 ** (32 - prefix) - 1) throw new RangeError(`invalid address "${text}": ${ip.address} is the ${host === 0 ? 'network' : 'broadcast'} address of its /${prefix}`);
  }
  return `${ip.address}/${prefix}`;
}

/** A gateway's address, checked, in canonical form. */
export function parseGateway(text: string): string {
  const ip = canonicalIp(text.trim());
  if (!ip) throw new RangeError(`invalid gateway "${text}": an IPv4 or IPv6 address, e.g. 10.77.0.1`);
  if (ip.family === 6 && ip.address.startsWith('fe80:')) return ip.address;
  if (RESERVED.check(ip.address, ipv(ip.family))) throw new RangeError(`invalid gateway "${text}": ${ip.address} cannot be a gateway`);
  return ip.address;
}

function ipv4Number(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

/**
 * Checks a spec as a whole: addresses are distinct, and each gateway has
 * an address of its family whose subnet holds it (so the route to it is
 * on the link), or is IPv6 link-local. Returns it, or throws RangeError.
 */
export function validateNetworkSpec(spec: NetworkSpec): NetworkSpec {
  if (!spec.addresses.length) throw new RangeError('--gateway needs --ip: a container without an address has no link to reach a gateway on');
  const addresses = spec.addresses.map(splitCidr);
  const seen = new Set<string>();
  for (const a of addresses) {
    if (seen.has(a.address)) throw new RangeError(`address ${a.address} is given twice`);
    seen.add(a.address);
  }
  const families = new Set<Family>();
  for (const gw of spec.gateways) {
    const g = canonicalIp(gw)!;
    if (families.has(g.family)) throw new RangeError(`more than one IPv${g.family} gateway: a container has one default route per family`);
    families.add(g.family);
    if (seen.has(g.address)) throw new RangeError(`gateway ${g.address} is one of the container's own addresses`);
    const own = addresses.filter((a) => a.family === g.family);
    if (!own.length) throw new RangeError(`gateway ${g.address} is IPv${g.family}, and the container has no IPv${g.family} address`);
    if (g.family === 6 && g.address.startsWith('fe80:')) continue;
    const link = new net.BlockList();
    for (const a of own) link.addSubnet(a.address, a.prefix, ipv(a.family));
    if (!link.check(g.address, ipv(g.family))) {
      throw new RangeError(`gateway ${g.address} is not on the container's link (${own.map((a) => `${a.address}/${a.prefix}`).join(', ')}): it must be in the subnet of one of its addresses`);
    }
  }
  return spec;
}

// ---------------------------------------------------------------- names

/**
 * A locally administered unicast MAC (02:…) from the container's name and
 * addresses. Derived rather than random so a container started again the
 * same way keeps its MAC; the addresses are in it because names are only
 * unique per host, while addresses must be unique on the segment.
 */
export function containerMac(name: string, addresses: readonly string[]): string {
  const hash = createHash('sha256').update(`ferry-container\0${name}\0${addresses.join(',')}`).digest();
  return ['02', ...[...hash.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/**
 * The host end's name: fixed per container name (IFNAMSIZ allows 15
 * characters), so a record need not be read to find it and a stale pair
 * of an ended container of that name, whose namespace the kernel has not
 * finished tearing down, is found and removed before a new one is made.
 */
export function hostVethName(name: string): string {
  return `fv-${createHash('sha256').update(name).digest('hex').slice(0, 11)}`;
}

// ---------------------------------------------------------------- the bridge and what is in use

/** FERRY_BRIDGE, or null when this host has none configured. */
export function configuredBridge(): string | null {
  return process.env[BRIDGE_VARIABLE] || null;
}

/** Why this host cannot plug containers in (no bridge configured, or it is not a bridge here); null when it can. */
function bridgeProblem(host: string): string | null {
  const bridge = configuredBridge();
  if (!bridge) {
    return `${host} has no bridge for container addresses: set ${BRIDGE_VARIABLE} (in the agent's environment, or the CLI's for a local run) to the Linux bridge its containers plug into; see docs/NETWORK.md`;
  }
  let links: Array<{ linkinfo?: { info_kind?: string } }>;
  try {
    links = ipJson(['-details', 'link', 'show', 'dev', bridge]);
  } catch {
    return `${BRIDGE_VARIABLE} on ${host} names "${bridge}", and ${host} has no interface of that name`;
  }
  const kind = links[0]?.linkinfo?.info_kind;
  if (kind !== 'bridge') return `${BRIDGE_VARIABLE} on ${host} names "${bridge}", which is ${kind ? `a ${kind}` : 'not a bridge'}; containers plug into a Linux bridge`;
  return null;
}

/** Every address in use on this host, with who uses it: its own interfaces, and the containers on record here that have not exited. */
function addressesInUse(host: string): Map<string, string> {
  const used = new Map<string, string>();
  for (const link of ipJson<Array<{ ifname: string; addr_info?: Array<{ local?: string }> }>>(['address', 'show'])) {
    for (const a of link.addr_info ?? []) if (a.local) used.set(a.local, `${host}'s own interface ${link.ifname}`);
  }
  for (const s of listStates()) {
    if (!s.network || containerStatus(s) === 'exited') continue;
    for (const cidr of s.network.addresses) used.set(addressOf(cidr), `container "${s.name}" on ${host}`);
  }
  return used;
}

/** What a host is asked to take: a container's name and its addresses ("address/prefix"). HostNeeds of a migration fits. */
export interface AddressNeeds {
  container: string;
  addresses?: readonly string[] | undefined;
}

/**
 * Whether this host can give a container its addresses: every problem, in
 * words an operator can act on; empty when it can (or when the container
 * has no addresses). Problems: no bridge configured (FERRY_BRIDGE) or not
 * a bridge; an address already on one of this host's interfaces; an
 * address of a container on record here that has not exited. Reads only
 * (ip and the records); runs on the host that would take the container,
 * before anything is frozen or made. `host` names it in the messages.
 */
export function addressConflicts(needs: AddressNeeds, host: string = os.hostname()): string[] {
  const wanted = needs.addresses ?? [];
  if (!wanted.length) return [];
  const problems: string[] = [];
  const bridge = bridgeProblem(host);
  if (bridge) problems.push(bridge);
  const used = addressesInUse(host);
  for (const cidr of wanted) {
    const address = canonicalIp(addressOf(cidr))?.address ?? addressOf(cidr);
    const who = used.get(address);
    if (who) problems.push(`address ${address} of container "${needs.container}" is already in use on ${host}, by ${who}`);
  }
  return problems;
}

/** The addresses of a container on record here ("address/prefix"); empty when it has none or no record. */
export function containerAddresses(name: string): string[] {
  return readState(name)?.network?.addresses ?? [];
}

const LOCK_WAIT_MS = 30_000;

/**
 * Runs `fn` holding this host's network lock, so two containers started
 * at once cannot both find an address free and both take it. It is
 * flock(2) on a file in the state directory: a holder that dies lets go.
 */
export async function withNetworkLock<T>(fn: () => Promise<T>): Promise<T> {
  fs.mkdirSync(stateDir(), { recursive: true });
  const file = path.join(stateDir(), 'network.lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  let unlock = tryLockFile(file);
  for (let pause = 5; !unlock; pause = Math.min(pause * 2, 100)) {
    if (Date.now() > deadline) throw new ContainerError('BUSY', `another migrate has held ${file} for ${LOCK_WAIT_MS / 1000} s; try again when it is done`);
    await new Promise((resolve) => setTimeout(resolve, pause));
    unlock = tryLockFile(file);
  }
  try {
    return await fn();
  } finally {
    unlock();
  }
}

/** For `run`: the bridge to plug into, or the refusal: none configured, or an address taken. */
export function requireFreeAddresses(name: string, addresses: readonly string[]): string {
  const host = os.hostname();
  const bridge = bridgeProblem(host);
  if (bridge) throw new ContainerError('NO_BRIDGE', `cannot give container "${name}" addresses: ${bridge}`);
  const taken = addressConflicts({ container: name, addresses }, host);
  if (taken.length) throw new ContainerError('ADDRESS_IN_USE', `cannot start container "${name}": ${taken.join('; ')}`);
  return configuredBridge()!;
}

// ---------------------------------------------------------------- making the pair

/** What `run` plugs a new container in with. */
export interface PlugRequest {
  name: string;
  bridge: string;
  mac: string;
  addresses: string[];
  gateways: string[];
}

/**
 * Gives a container being started its veth, from this host's network
 * namespace (where its host end stays, in the bridge, up) into the one
 * of `initPid` (eth0, with the addresses, up, and the default routes).
 * The pair lives and dies with the container's namespace: if anything
 * fails after it is made, killing the init removes it.
 */
export function plugNewContainer(initPid: number, req: PlugRequest): ContainerNetwork {
  const hostVeth = hostVethName(req.name);
  deleteLink(hostVeth);
  ipBatch([
    `link add ${hostVeth} type veth peer name ${CONTAINER_INTERFACE} address ${req.mac} netns ${initPid}`,
    `link set ${hostVeth} master ${req.bridge}`,
    `link set ${hostVeth} up`,
  ]);
  ipBatch(
    [
      ...req.addresses.map((a) => addressCommand(CONTAINER_INTERFACE, { local: addressOf(a), prefixlen: splitCidr(a).prefix })),
      `link set ${CONTAINER_INTERFACE} up`,
      ...req.gateways.map((g) => `route add ${net.isIPv4(g) ? '0.0.0.0/0' : '::/0'} via ${g} dev ${CONTAINER_INTERFACE}`),
    ],
    initPid,
  );
  return { interface: CONTAINER_INTERFACE, mac: req.mac, hostVeth, bridge: req.bridge, addresses: req.addresses };
}

/**
 * `ip address add` of one recorded address. IPv4 gets its broadcast
 * (recorded, or the subnet's as `brd +` computes it). IPv6 skips duplicate
 * address detection: the address is the container's, checked free on this
 * host, and its copy elsewhere is frozen or gone; with DAD it would be
 * unusable (tentative) for a second or more, and a server binding it
 * would fail.
 */
function addressCommand(dev: string, a: { local: string; prefixlen: number; broadcast?: string | undefined; scope?: string | undefined }): string {
  const v4 = net.isIPv4(a.local);
  return [
    'address add', `${a.local}/${a.prefixlen}`,
    ...(v4 ? ['brd', a.broadcast ?? '+'] : []),
    ...(a.scope ? ['scope', a.scope] : []),
    'dev', dev,
    ...(v4 ? [] : ['nodad']),
  ].join(' ');
}

// ---------------------------------------------------------------- checkpoint

interface IpLink {
  ifname: string;
  link_type?: string;
  address?: string;
  mtu: number;
  flags?: string[];
  linkinfo?: { info_kind?: string };
}
interface IpAddress {
  ifname: string;
  addr_info?: Array<{ family: string; local?: string; prefixlen: number; broadcast?: string; scope?: string; dynamic?: boolean }>;
}
type IpRoute = Record<string, unknown> & { dst: string; flags?: string[] };

/** Route keys of `ip -json route` that the image carries; a route with any other is refused rather than restored without it. */
const ROUTE_KEYS = new Set(['type', 'dst', 'gateway', 'dev', 'protocol', 'scope', 'prefsrc', 'metric', 'flags', 'pref']);
/** Routes the kernel makes and remakes by itself: from addresses (kernel) and from router advertisements (ra). */
const KERNEL_PROTOCOLS = new Set(['kernel', 'ra']);

/** The container's network namespace as the image holds it, and what in it cannot migrate (each a reason). */
export interface NetworkSnapshot {
  image: ContainerNetworkImage;
  refusals: string[];
}

/**
 * Reads the network namespace of `pid` (the container's init) with one
 * process start: links, addresses, and the main table's IPv4 and IPv6
 * routes. `known` is the container's record of its veth: any interface
 * but lo and that one is refused, as is any route attribute the image
 * cannot carry.
 */
export function snapshotNetwork(pid: number, known: ContainerNetwork | undefined): NetworkSnapshot {
  const [links, addresses, routes4, routes6] = ipJsonEach(
    [['-details', 'link', 'show'], ['address', 'show'], ['-4', 'route', 'show', 'table', 'main'], ['-6', 'route', 'show', 'table', 'main']],
    pid,
  ) as [IpLink[], IpAddress[], IpRoute[], IpRoute[]];
  const refusals: string[] = [];
  const interfaces: NetworkInterfaceImage[] = [];
  for (const link of links) {
    const kind = link.link_type === 'loopback' ? 'loopback' : link.linkinfo?.info_kind === 'veth' && known?.interface === link.ifname ? 'veth' : null;
    if (!kind) {
      const what = link.linkinfo?.info_kind ?? link.link_type ?? 'unknown kind';
      refusals.push(`its network namespace has interface ${link.ifname} (${what}), which Ferry did not make: only lo and the ${CONTAINER_INTERFACE} that \`migrate run --ip\` gives a container move with it`);
      continue;
    }
    const mac = (link.address ?? '00:00:00:00:00:00').toLowerCase();
    const addrs = (addresses.find((a) => a.ifname === link.ifname)?.addr_info ?? [])
      .filter((a) => a.local !== undefined && !kernelMade(kind, mac, a.local, a.prefixlen) && !a.dynamic)
      .map((a) => ({
        local: a.local!,
        prefixlen: a.prefixlen,
        ...(a.broadcast ? { broadcast: a.broadcast } : {}),
        ...(a.scope && a.scope !== 'global' && !(kind === 'loopback' && a.scope === 'host') ? { scope: a.scope } : {}),
      }));
    interfaces.push({ name: link.ifname, kind, mac, mtu: link.mtu, up: (link.flags ?? []).includes('UP'), addresses: addrs });
  }
  const recorded: RouteImage[] = [];
  for (const [family, list] of [[4, routes4], [6, routes6]] as const) {
    for (const r of list) {
      if (typeof r['protocol'] === 'string' && KERNEL_PROTOCOLS.has(r['protocol'])) continue;
      const unknown = Object.keys(r).filter((k) => !ROUTE_KEYS.has(k));
      if (unknown.length) {
        refusals.push(`its IPv${family} route to ${r.dst} has ${unknown.join(', ')}, which Ferry does not carry yet`);
        continue;
      }
      recorded.push(routeImage(family, r));
    }
  }
  return { image: { interfaces, routes: recorded }, refusals };
}

function routeImage(family: 4 | 6, r: IpRoute): RouteImage {
  const str = (k: string): Record<string, string> => (typeof r[k] === 'string' ? { [k]: r[k] as string } : {});
  return {
    family,
    dst: r.dst,
    ...str('type'),
    ...str('gateway'),
    ...str('dev'),
    ...str('protocol'),
    ...str('scope'),
    ...str('prefsrc'),
    ...str('pref'),
    ...(typeof r['metric'] === 'number' ? { metric: r['metric'] } : {}),
    ...((r.flags ?? []).includes('onlink') ? { onlink: true } : {}),
  };
}

/** Whether the kernel made this address itself and makes it again: the loopback's own, or the EUI-64 link-local of the MAC. */
function kernelMade(kind: 'loopback' | 'veth', mac: string, local: string, prefixlen: number): boolean {
  if (kind === 'loopback') return (local === '127.0.0.1' && prefixlen === 8) || (local === '::1' && prefixlen === 128);
  return prefixlen === 64 && net.isIPv6(local) && ipv6Bytes(local).equals(eui64LinkLocal(mac));
}

// ---------------------------------------------------------------- restore

/**
 * Whether an image's network needs more than the loopback up, which the
 * restore's init can do by itself (and faster) without `ip`.
 */
export function needsIp(image: ContainerNetworkImage): boolean {
  return image.routes.length > 0 || image.interfaces.some((i) => i.kind !== 'loopback' || i.addresses.length > 0 || i.mtu !== 65536);
}

/** The problem a restore here would have with the image's interfaces: a veth needs a bridge. Null when none. */
export function restoreProblem(image: ContainerNetworkImage, host: string = os.hostname()): string | null {
  return image.interfaces.some((i) => i.kind === 'veth') ? bridgeProblem(host) : null;
}

/**
 * Makes the image's interfaces and routes again for a container being
 * restored, whose init (`initPid`) is alone in its new network namespace:
 * the loopback as it was, and for the veth a new pair whose host end is
 * plugged into FERRY_BRIDGE but left down (see the module comment;
 * bringUp does the rest once the copy is the container of record).
 */
export function recreateNetwork(initPid: number, name: string, image: ContainerNetworkImage): void {
  const inside: string[] = [];
  for (const i of image.interfaces) {
    if (i.kind === 'veth') {
      const bridge = configuredBridge();
      if (!bridge) throw new ContainerError('NO_BRIDGE', `cannot restore container "${name}": ${bridgeProblem(os.hostname())}`);
      const hostVeth = hostVethName(name);
      deleteLink(hostVeth);
      ipBatch([
        `link add ${hostVeth} mtu ${i.mtu} type veth peer name ${i.name} address ${i.mac} mtu ${i.mtu} netns ${initPid}`,
        `link set ${hostVeth} master ${bridge}`,
      ]);
    } else if (i.mtu !== 65536) {
      inside.push(`link set ${i.name} mtu ${i.mtu}`);
    }
    inside.push(...i.addresses.map((a) => addressCommand(i.name, a)));
    if (i.up) inside.push(`link set ${i.name} up`);
  }
  inside.push(...image.routes.map(routeCommand));
  if (inside.length) ipBatch(inside, initPid);
}

function routeCommand(r: RouteImage): string {
  const parts = ['route', 'add'];
  if (r.type) parts.push(r.type);
  parts.push(r.dst === 'default' ? (r.family === 4 ? '0.0.0.0/0' : '::/0') : r.dst);
  if (r.gateway) parts.push('via', r.gateway);
  if (r.dev) parts.push('dev', r.dev);
  if (r.metric !== undefined) parts.push('metric', String(r.metric));
  if (r.scope) parts.push('scope', r.scope);
  if (r.protocol) parts.push('proto', r.protocol);
  if (r.prefsrc) parts.push('src', r.prefsrc);
  if (r.pref) parts.push('pref', r.pref);
  if (r.onlink) parts.push('onlink');
  return parts.join(' ');
}

/**
 * The interface a restored container has on this host, read from the
 * kernel (its record is written from this): undefined when it has only
 * its loopback.
 */
export function describeNetwork(pid: number, name: string): ContainerNetwork | undefined {
  // Most containers have their loopback alone: /proc says so without starting `ip`, which the migration's clock would count.
  if (loopbackOnly(pid)) return undefined;
  const [links] = ipJsonEach([['-details', 'address', 'show']], pid) as [Array<IpLink & IpAddress>];
  const veth = links.find((l) => l.linkinfo?.info_kind === 'veth');
  if (!veth) return undefined;
  const mac = (veth.address ?? '').toLowerCase();
  return {
    interface: veth.ifname,
    mac,
    hostVeth: hostVethName(name),
    bridge: configuredBridge() ?? '',
    addresses: (veth.addr_info ?? []).filter((a) => a.local !== undefined && !kernelMade('veth', mac, a.local, a.prefixlen) && !a.dynamic).map((a) => `${a.local}/${a.prefixlen}`),
  };
}

// ---------------------------------------------------------------- going live

/** When the announcement is sent, after the link is up: at once, then twice more in case a bridge on the way was still bringing its port up. */
const ANNOUNCE_AT_MS = [0, 50, 250];
/** How long both ends of a veth that was just set up may take to be operationally up. */
const RUNNING_TIMEOUT_MS = 3_000;

/**
 * Takes the addresses over on this host: the host end of the container's
 * veth comes up (idempotent) and, once both ends carry traffic, the
 * container announces every address from inside its own namespace, with
 * its own MAC: a gratuitous ARP request (RFC 5227 announcement) per IPv4
 * address, an unsolicited neighbour advertisement with the override flag
 * (RFC 4861 7.2.6) per IPv6 one. Resolves when the last announcement is
 * sent, about a quarter second after the link is up.
 */
export async function bringUp(pid: number, network: ContainerNetwork): Promise<void> {
  setInterfaceUp(network.hostVeth);
  // A container that set its own end down has nothing to announce.
  if (!(interfaceFlags(network.interface, pid) & IFF.UP)) return;
  const deadline = Date.now() + RUNNING_TIMEOUT_MS;
  // The kernel starts a link's queue asynchronously after carrier comes: a frame sent before that is dropped.
  while (!(interfaceFlags(network.hostVeth) & IFF.RUNNING) || !(interfaceFlags(network.interface, pid) & IFF.RUNNING)) {
    if (Date.now() > deadline) throw new Error(`the link of container (pid ${pid}) to ${network.bridge} did not come up within ${RUNNING_TIMEOUT_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const frames = announcements(network);
  let elapsed = 0;
  for (const at of ANNOUNCE_AT_MS) {
    if (at > elapsed) await new Promise((resolve) => setTimeout(resolve, at - elapsed));
    elapsed = at;
    sendFrames(network.interface, frames, pid);
  }
}

/**
 * For the coordinator: once a restored container is the one of record
 * here (runtime.recordRestored), its link comes up and its addresses are
 * announced. recordRestored already does this in the background, so this
 * only waits for it again and reports failures; it is idempotent, and a
 * container without addresses returns at once.
 */
export async function announceAddresses(name: string): Promise<void> {
  const state = readState(name);
  if (!state?.network || containerStatus(state) === 'exited') return;
  await bringUp(state.pid, state.network);
}

/**
 * Lets go of a container's addresses on this host: the network hook hears
 * `down`, then the host end is deleted, which takes the container's end
 * with it. For a copy that is ending (its copy elsewhere is taking over,
 * or it was stopped): a network namespace outlives its last process for a
 * while, and until it is torn down its interface would still answer ARP
 * for the addresses, with the same MAC, from the old port.
 */
export function releaseAddresses(name: string, network: ContainerNetwork | undefined): void {
  if (!network) return;
  try {
    runNetworkHook('down', name, network);
  } finally {
    deleteLink(network.hostVeth);
  }
}

const HOOK_TIMEOUT_MS = 10_000;

/**
 * Runs the operator's network hook (FERRY_NETWORK_HOOK, an executable),
 * if this host has one, for networks that route container addresses
 * rather than bridge them onto one segment (docs/NETWORK.md): `up` once a
 * container's addresses are live on this host (its veth's host end is up:
 * at `run`, and when a restored copy becomes the container of record,
 * before it announces itself), `down` when this host lets them go (the
 * container moved away, was checkpointed or stopped; its host end still
 * exists). Arguments: the action, the container's name, its addresses
 * (address/prefix); environment: FERRY_CONTAINER, FERRY_HOST_VETH,
 * FERRY_BRIDGE, FERRY_MAC, FERRY_ADDRESSES (space-separated). It must be
 * idempotent: a resume that is retried runs `up` again. Throws HookError
 * when it fails or takes longer than 10 s.
 */
export function runNetworkHook(action: 'up' | 'down', name: string, network: ContainerNetwork): void {
  const hook = process.env[HOOK_VARIABLE];
  if (!hook) return;
  runHook([hook, action, name, ...network.addresses], {
    FERRY_CONTAINER: name,
    FERRY_HOST_VETH: network.hostVeth,
    FERRY_BRIDGE: network.bridge,
    FERRY_MAC: network.mac,
    FERRY_ADDRESSES: network.addresses.join(' '),
  }, HOOK_TIMEOUT_MS);
}

// ---------------------------------------------------------------- frames

function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => Number.parseInt(h, 16)));
}

function ipv6Bytes(address: string): Buffer {
  const words = (part: string): number[] =>
    part
      ? part.split(':').flatMap((w) => {
          if (!w.includes('.')) return [Number.parseInt(w, 16)];
          const b = w.split('.').map(Number);
          return [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
        })
      : [];
  const gap = address.indexOf('::');
  const head = words(gap < 0 ? address : address.slice(0, gap));
  const tail = gap < 0 ? [] : words(address.slice(gap + 2));
  const all = gap < 0 ? head : [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/** fe80::/64 with the modified EUI-64 interface identifier of the MAC (RFC 4291 appendix A): what the kernel gives a link by default. */
function eui64LinkLocal(mac: string): Buffer {
  const m = macBytes(mac);
  const out = Buffer.alloc(16);
  out.writeUInt16BE(0xfe80, 0);
  Buffer.from([m[0]! ^ 0x02, m[1]!, m[2]!, 0xff, 0xfe, m[3]!, m[4]!, m[5]!]).copy(out, 8);
  return out;
}

/** One announcement frame per address of the interface. */
function announcements(network: ContainerNetwork): Buffer[] {
  const mac = macBytes(network.mac);
  return network.addresses.map((cidr) => {
    const address = addressOf(cidr);
    return net.isIPv4(address) ? gratuitousArp(mac, Buffer.from(address.split('.').map(Number))) : unsolicitedAdvertisement(mac, ipv6Bytes(address));
  });
}

/** An ARP announcement: a broadcast request whose sender and target address are both the address, with the sender's MAC. */
function gratuitousArp(mac: Buffer, ip: Buffer): Buffer {
  // 60 bytes: the Ethernet minimum, which a veth does not pad to by itself.
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  mac.copy(f, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // hardware: Ethernet
  f.writeUInt16BE(0x0800, 16); // protocol: IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  mac.copy(f, 22);
  ip.copy(f, 28);
  ip.copy(f, 38);
  return f;
}

const ALL_NODES = ipv6Bytes('ff02::1');

/** An unsolicited neighbour advertisement to all nodes, override set, with the target's link-layer address. */
function unsolicitedAdvertisement(mac: Buffer, ip: Buffer): Buffer {
  const icmp = Buffer.alloc(32);
  icmp[0] = 136; // neighbour advertisement
  icmp.writeUInt32BE(0x20000000, 4); // override
  ip.copy(icmp, 8);
  icmp[24] = 2; // option: target link-layer address
  icmp[25] = 1; // in units of 8 bytes
  mac.copy(icmp, 26);
  const pseudo = Buffer.alloc(40);
  ip.copy(pseudo, 0);
  ALL_NODES.copy(pseudo, 16);
  pseudo.writeUInt32BE(icmp.length, 32);
  pseudo[39] = 58;
  icmp.writeUInt16BE(checksum(Buffer.concat([pseudo, icmp])), 2);
  const ip6 = Buffer.alloc(40);
  ip6.writeUInt32BE(0x60000000, 0);
  ip6.writeUInt16BE(icmp.length, 4);
  ip6[6] = 58; // ICMPv6
  ip6[7] = 255; // hop limit: receivers drop neighbour discovery that has crossed a router
  ip.copy(ip6, 8);
  ALL_NODES.copy(ip6, 24);
  const eth = Buffer.alloc(14);
  Buffer.from([0x33, 0x33, 0, 0, 0, 1]).copy(eth, 0);
  mac.copy(eth, 6);
  eth.writeUInt16BE(0x86dd, 12);
  return Buffer.concat([eth, ip6, icmp]);
}

/** The Internet checksum (RFC 1071) of an even-length buffer. */
function checksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) sum += data.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
