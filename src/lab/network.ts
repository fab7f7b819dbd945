/**
 * The lab's network: a bridge in the machine's network namespace with the
 * first address of 10.77.0.0/24, and one veth per host from the bridge to
 * the host's eth0. Every host and the machine itself are on one segment, so
 * all of them reach each other without routing or NAT.
 *
 * Inside each host, eth0 is a port of the host's own bridge br0, which
 * holds the host's address; containers plug their veths into br0
 * (FERRY_BRIDGE), which puts them on the same segment as every host and
 * the machine, as docs/NETWORK.md asks of real hosts.
 */
import { deleteLink, ip, ipBatch, linkExists, linkNames } from '../native/iproute.js';
import { ToolError } from '../native/tool.js';
import { LabError } from './errors.js';
import { BRIDGE, BRIDGE_IP, HOST_BRIDGE, PREFIX_LENGTH, VETH_NAME, vethName } from './layout.js';

/**
 * Creates the bridge. It is also the lab's claim on the machine: of two
 * `lab up`s at once, only one can create it, and the other stops here
 * before it has made anything.
 */
export function createBridge(): void {
  try {
    ip(['link', 'add', 'name', BRIDGE, 'type', 'bridge']);
  } catch (e) {
    if (e instanceof ToolError && linkExists(BRIDGE)) throw new LabError('LAB_EXISTS', `bridge ${BRIDGE} already exists: another \`migrate lab up\` got there first`);
    throw e;
  }
  ipBatch([`address add ${BRIDGE_IP}/${PREFIX_LENGTH} dev ${BRIDGE}`, `link set ${BRIDGE} up`]);
}

/**
 * Connects a host: a veth pair whose one end goes into the network
 * namespace of the host's init as eth0 and whose other end is plugged into
 * the lab's bridge; inside, eth0 becomes a port of the host's bridge br0,
 * which gets the host's address, and the default route goes via the
 * machine. eth0 and br0 share a fixed MAC (layout.hostMac says why).
 */
export function plugHost(host: string, address: string, mac: string, initPid: number): void {
  const veth = vethName(host);
  ipBatch([`link add ${veth} type veth peer name eth0 address ${mac} netns ${initPid}`, `link set ${veth} master ${BRIDGE} up`]);
  ipBatch(
    [
      'link set lo up',
      `link add ${HOST_BRIDGE} address ${mac} type bridge`,
      `link set eth0 master ${HOST_BRIDGE}`,
      'link set eth0 up',
      `link set ${HOST_BRIDGE} up`,
      `address add ${address}/${PREFIX_LENGTH} dev ${HOST_BRIDGE}`,
      `route add default via ${BRIDGE_IP}`,
    ],
    initPid,
  );
}

/** The lab's links that exist now: the bridge and the machine's ends of the veths. */
export function labLinks(): string[] {
  return linkNames().filter((name) => name === BRIDGE || VETH_NAME.test(name));
}

/**
 * Deletes the lab's veths (both ends go together) and the bridge, found by
 * name; returns what it deleted. Deleting a bridge leaves its ports, so the
 * veths go first.
 */
export function removeNetwork(): string[] {
  const links = labLinks().sort((a, b) => Number(a === BRIDGE) - Number(b === BRIDGE));
  return links.filter((name) => deleteLink(name));
}
