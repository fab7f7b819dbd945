/**
 * Where everything of the lab lives: names, addresses, paths. The names
 * are fixed, not chosen per run, because `lab down` must find what an
 * earlier `lab up` made even when that run crashed before saying so.
 */
import path from 'node:path';
import { stateDir } from '../container/state.js';

/** The bridge in the machine's network namespace that every host's veth is plugged into. */
export const BRIDGE = 'ferry-lab0';
export const BRIDGE_IP = '10.77.0.1';
export const PREFIX_LENGTH = 24;
/**
 * The bridge inside every lab host that its containers plug into (the
 * host's FERRY_BRIDGE): the host's eth0 is one of its ports and the host's
 * address is on it, so a container's veth on it is on the lab's segment.
 */
export const HOST_BRIDGE = 'br0';
/**
 * Addresses for lab containers (`migrate run --ip 10.77.0.150/24`): the
 * root has .1 and the hosts .11 up, so .100-.199 is theirs as long as the
 * lab has fewer than 89 hosts. Nothing enforces it; it is the range the
 * tests and docs use.
 */
export const CONTAINER_RANGE = { first: '10.77.0.100', last: '10.77.0.199' } as const;
/** Where agents listen (the port in every lab host's inventory address). */
export const AGENT_PORT = 7468;
/** The cgroup under which each host's containers get theirs: ferry-lab/<host>/<container>. */
export const CGROUP_ROOT = 'ferry-lab';
/** Host i gets 10.77.0.(10+i): .11 to .254 fit the /24. */
export const MAX_HOSTS = 244;

/** lab-1, lab-2, ...: the names the lab reserves in the inventory. */
export const HOST_NAME = /^lab-[1-9]\d*$/;

export function hostName(index: number): string {
  return `lab-${index}`;
}

export function hostIp(index: number): string {
  return `10.77.0.${10 + index}`;
}

/**
 * The MAC of host i's eth0 and br0. Fixed, for the bridge's sake: a bridge
 * without an address of its own takes the lowest of its ports' MACs, so
 * the host's address would change MAC (and its neighbours' ARP entries go
 * stale) whenever a container's veth with a lower one joined.
 */
export function hostMac(index: number): string {
  return `02:77:00:00:${(index >> 8).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}`;
}

/** The machine's end of the host's veth (at most 15 characters, IFNAMSIZ); the host's end is eth0. */
export function vethName(host: string): string {
  return `ferry-${host}`;
}

export const VETH_NAME = /^ferry-lab-[1-9]\d*$/;

/** $FERRY_STATE_DIR/lab: the record and one state directory per host. */
export function labDir(): string {
  return path.join(stateDir(), 'lab');
}

/** The host's FERRY_STATE_DIR: its containers, its agent's log. */
export function hostStateDir(host: string): string {
  return path.join(labDir(), host);
}

export function agentLogPath(host: string): string {
  return path.join(hostStateDir(host), 'agent.log');
}

export function hostCgroupParent(host: string): string {
  return `${CGROUP_ROOT}/${host}`;
}
