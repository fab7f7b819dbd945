/**
 * Network interfaces by ioctl and raw frames by AF_PACKET, in our network
 * namespace or in that of another process (entered by this thread only,
 * for the length of the call). For what must be quick or what `ip` cannot
 * do: a restored container's link comes up and announces its addresses
 * while the migration's clock runs, and no tool in Debian's base sends an
 * IPv6 unsolicited neighbour advertisement.
 */
import fs from 'node:fs';
import { addressOf, cString, syscall } from './libc.js';
import { SOCK_CLOEXEC } from './flags.js';
import { Sys } from './syscalls.js';
import { close, inNetns, ioctl, socket } from './process.js';

const AF_INET = 2;
const AF_PACKET = 17;
const SOCK_DGRAM = 2;
const SOCK_RAW = 3;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFINDEX = 0x8933;
const SIOCGIFMTU = 0x8921;
const SIOCGIFHWADDR = 0x8927;
const IFREQ_SIZE = 40;
const IFR_DATA_OFFSET = 16;
const SOCKADDR_LL_SIZE = 20;

/** Interface flags (<net/if.h>). RUNNING: up and operationally up, i.e. carrier and the kernel's link-state work done. */
export const IFF = { UP: 0x1, RUNNING: 0x40 } as const;

/**
 * Runs `fn` in the network namespace of `pid`, or in ours when `pid` is
 * undefined. setns moves the calling thread only, and a socket stays in
 * the namespace it was made in, so `fn` makes its sockets inside and this
 * thread is back home before anything else runs on it.
 */
function inNetnsOf<T>(pid: number | undefined, fn: () => T): T {
  return pid === undefined ? fn() : inNetns(`/proc/${pid}/ns/net`, fn);
}

function ifreq(ifname: string): Buffer {
  const req = Buffer.alloc(IFREQ_SIZE);
  cString(ifname).copy(req, 0);
  return req;
}

function withSocket<T>(domain: number, type: number, fn: (fd: number) => T): T {
  const fd = socket(domain, type | SOCK_CLOEXEC, 0);
  try {
    return fn(fd);
  } finally {
    close(fd);
  }
}

/** The flags of interface `ifname` (IFF), in our network namespace or `pid`'s. */
export function interfaceFlags(ifname: string, pid?: number): number {
  return inNetnsOf(pid, () =>
    withSocket(AF_INET, SOCK_DGRAM, (fd) => {
      const req = ifreq(ifname);
      ioctl(fd, SIOCGIFFLAGS, req);
      return req.readUInt16LE(IFR_DATA_OFFSET);
    }),
  );
}

/** Sets interface `ifname` up (`ip link set up`), in our network namespace or `pid`'s. */
export function setInterfaceUp(ifname: string, pid?: number): void {
  inNetnsOf(pid, () =>
    withSocket(AF_INET, SOCK_DGRAM, (fd) => {
      const req = ifreq(ifname);
      ioctl(fd, SIOCGIFFLAGS, req);
      req.writeUInt16LE(req.readUInt16LE(IFR_DATA_OFFSET) | IFF.UP, IFR_DATA_OFFSET);
      ioctl(fd, SIOCSIFFLAGS, req);
    }),
  );
}

/**
 * Sends each frame (a whole Ethernet frame: destination, source, type,
 * payload) once on interface `ifname`, in our network namespace or
 * `pid`'s. The frames go to the device as they are: whatever source MAC
 * they carry is what the wire sees.
 */
export function sendFrames(ifname: string, frames: readonly Buffer[], pid?: number): void {
  inNetnsOf(pid, () =>
    // Protocol 0: the socket only sends, so nothing it would receive queues up on it meanwhile.
    withSocket(AF_PACKET, SOCK_RAW, (fd) => {
      const req = ifreq(ifname);
      ioctl(fd, SIOCGIFINDEX, req);
      const ifindex = req.readInt32LE(IFR_DATA_OFFSET);
      for (const frame of frames) {
        const ll = Buffer.alloc(SOCKADDR_LL_SIZE);
        ll.writeUInt16LE(AF_PACKET, 0);
        // sll_protocol is in network byte order, as the frame carries its type.
        frame.copy(ll, 2, 12, 14);
        ll.writeInt32LE(ifindex, 4);
        ll.writeUInt8(6, 11);
        frame.copy(ll, 12, 0, 6);
        syscall(`sendto(AF_PACKET, ${ifname})`, Sys.sendto, fd, addressOf(frame), frame.length, 0, addressOf(ll), SOCKADDR_LL_SIZE);
      }
    }),
  );
}

/** The interfaces of `pid`'s network namespace, by name, from its /proc/PID/net/dev. */
function interfaceNames(pid: number): string[] {
  return fs
    .readFileSync(`/proc/${pid}/net/dev`, 'utf8')
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]!.trim())
    .filter(Boolean);
}

/**
 * Everything of `pid`'s network namespace that `ip` would show about its
 * interfaces, addresses and routes, as one string that changes when any
 * of it does: each interface's flags, MTU and MAC, and the kernel's own
 * tables of addresses and routes (fib_trie holds IPv4 addresses and
 * routes of every table, ipv6_route and if_inet6 IPv6's). No process is
 * started and nothing is parsed, so it is cheap enough to take while a
 * container is frozen, to tell whether a description made before still
 * holds.
 */
export function networkState(pid: number): string {
  const names = interfaceNames(pid);
  const links = inNetnsOf(pid, () =>
    withSocket(AF_INET, SOCK_DGRAM, (fd) =>
      names.map((name) => {
        const flags = ifreq(name);
        ioctl(fd, SIOCGIFFLAGS, flags);
        const mtu = ifreq(name);
        ioctl(fd, SIOCGIFMTU, mtu);
        const hw = ifreq(name);
        ioctl(fd, SIOCGIFHWADDR, hw);
        return `${name} ${flags.readUInt16LE(IFR_DATA_OFFSET)} ${mtu.readInt32LE(IFR_DATA_OFFSET)} ${hw.subarray(IFR_DATA_OFFSET, IFR_DATA_OFFSET + 8).toString('hex')}`;
      }),
    ),
  );
  const tables = ['fib_trie', 'if_inet6', 'ipv6_route'].map((f) => fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8'));
  return [...links, ...tables].join('\n');
}

/** Whether `pid`'s network namespace has no interface but its loopback (read from /proc, no process started). */
export function loopbackOnly(pid: number): boolean {
  const names = interfaceNames(pid);
  return names.length === 1 && names[0] === 'lo';
}
