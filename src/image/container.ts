import { z } from 'zod';
import { defineEntry, defineEntryUpgrade, type Entry } from './entry.js';
import { PageSegment } from './memory.js';
import { Pid } from './fields.js';

const Time = z.strictObject({ sec: z.number().int(), nsec: z.number().int().min(0).max(999_999_999) });

const Mac = z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);

/** An address on an interface, as `ip address add` takes it back. */
const InterfaceAddress = z.strictObject({
  /** The address itself, IPv4 or IPv6, as iproute2 prints it. */
  local: z.string().min(2),
  prefixlen: z.number().int().min(0).max(128),
  /** IPv4 only, when one was set. */
  broadcast: z.string().optional(),
  /** When not "global" (e.g. "link", "host"). */
  scope: z.string().optional(),
});

/**
 * An interface of the container's network namespace. Only two kinds
 * exist: its loopback and the veth Ferry gave it (`migrate run --ip`);
 * anything else is refused at the checkpoint. Addresses the kernel makes
 * by itself are left out, since it makes them again: 127.0.0.1/8 and ::1
 * on the loopback, the EUI-64 link-local address on the veth (the MAC is
 * kept, so it comes out the same).
 */
const NetworkInterface = z.strictObject({
  name: z.string().min(1).max(15),
  kind: z.enum(['loopback', 'veth']),
  mac: Mac,
  mtu: z.number().int().positive(),
  up: z.boolean(),
  addresses: z.array(InterfaceAddress),
});

/**
 * A route of the main table that the kernel did not derive from an
 * address (those come back with the addresses): the default route and
 * whatever was added. Fields as `ip -json route` names them; absent
 * means iproute2's default (unicast, protocol boot, metric 0 or 1024).
 */
const Route = z.strictObject({
  family: z.union([z.literal(4), z.literal(6)]),
  type: z.string().optional(),
  /** "default" or a prefix. */
  dst: z.string(),
  gateway: z.string().optional(),
  dev: z.string().optional(),
  protocol: z.string().optional(),
  scope: z.string().optional(),
  prefsrc: z.string().optional(),
  metric: z.number().int().nonnegative().optional(),
  onlink: z.boolean().optional(),
  /** IPv6 router preference (low, medium, high). */
  pref: z.string().optional(),
});

/** The container's network namespace: its interfaces and its main routing table. */
export const ContainerNetworkImage = z.strictObject({
  interfaces: z.array(NetworkInterface),
  routes: z.array(Route),
});
export type ContainerNetworkImage = z.infer<typeof ContainerNetworkImage>;
export type NetworkInterfaceImage = z.infer<typeof NetworkInterface>;
export type RouteImage = z.infer<typeof Route>;

/** What a v1 image's container had: the loopback, up (`migrate run` brought it up and a restore always did), and nothing else. */
const LOOPBACK_ONLY: ContainerNetworkImage = {
  interfaces: [{ name: 'lo', kind: 'loopback', mac: '00:00:00:00:00:00', mtu: 65536, up: true, addresses: [] }],
  routes: [],
};

/**
 * A container (`migrate run`): what its namespaces and cgroup held that is
 * not part of any process. Pids elsewhere in the image are the checkpointed
 * host's; this entry maps each to the pid the container sees. A restore
 * gives back only the pids inside (clone3's set_tid sets the innermost
 * level): the host pids are whatever the restoring host hands out.
 */
const ContainerFieldsV1 = z.strictObject({
  name: z.string().min(1),
  hostname: z.string(),
  command: z.array(z.string()),
  executable: z.string(),
  cwd: z.string(),
  env: z.record(z.string(), z.string()),
  limits: z.strictObject({ memoryBytes: z.number().int().positive().nullable(), cpus: z.number().positive().nullable() }),
  /** CLOCK_MONOTONIC and CLOCK_BOOTTIME as the container read them while frozen: a restore continues them from there. */
  clocks: z.strictObject({ monotonic: Time, boottime: Time }),
  /** [host pid, pid inside] of every process and thread. */
  pids: z.array(z.tuple([Pid, Pid])),
  /**
   * The log its output went to on the checkpointed host (the agent's file,
   * not the container's). fds on it reopen the restoring host's log for
   * the container: each host keeps the log of what ran there.
   */
  log: z.string().optional(),
});

/**
 * v2 added `network`. v1 images (written before containers had
 * interfaces of their own) are read as having their loopback alone, up.
 */
export const ContainerEntry = defineEntry(
  'container',
  2,
  ContainerFieldsV1.extend({
    /** Its network namespace: interfaces with their MACs, MTUs, addresses and states, and its routes. */
    network: ContainerNetworkImage,
  }),
);
export type ContainerEntry = Entry<typeof ContainerEntry>;

defineEntryUpgrade(ContainerEntry, 1, ContainerFieldsV1, (old) => {
  const { type: _type, v: _v, ...fields } = old;
  return { ...fields, network: structuredClone(LOOPBACK_ONLY) };
});

/** One file, directory or symlink of the container's private /tmp (a tmpfs, whose contents migrate). */
export const TmpfsFileEntry = defineEntry(
  'tmpfs-file',
  1,
  z.strictObject({
    /** Path relative to /tmp; parents come before their children. */
    path: z.string().min(1),
    kind: z.enum(['file', 'dir', 'symlink']),
    mode: z.number().int().min(0).max(0o7777),
    uid: z.number().int().nonnegative(),
    gid: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    target: z.string().optional(),
    segments: z.array(PageSegment),
  }),
);
export type TmpfsFileEntry = Entry<typeof TmpfsFileEntry>;
