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
