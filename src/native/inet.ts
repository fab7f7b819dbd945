import fs from 'node:fs';
import { syscall, addressOf } from './libc.js';
import { NativeError, isNativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { getsockopt, setsockopt } from './process.js';
import type { Injector } from './inject.js';

/**
 * Sockets of the internet families (AF_INET, AF_INET6) and what Ferry
 * needs to tell any socket apart: its family, type and protocol, and its
 * addresses in a form people and nft read (dotted quads, RFC 5952 IPv6).
 * Everything here works on an fd of Ferry's own, usually a pidfd_getfd copy
 * of a process's socket; nothing changes the socket.
 */

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_PACKET = 17;
export const SOL_SOCKET = 1;
export const SOL_IP = 0;
export const SOL_IPV6 = 41;
export const SOL_TCP = 6;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;

const SO_TYPE = 3;
const SO_PROTOCOL = 38;
const SO_DOMAIN = 39;
const ENOPROTOOPT = 92;

export type InetFamily = 'inet' | 'inet6';

/** An address and port as the kernel reports them; `scope` is an IPv6 scope id (link-local addresses). */
export interface InetAddress {
  addr: string;
  port: number;
  scope?: number;
}

export function familyNumber(f: InetFamily): number {
  return f === 'inet' ? AF_INET : AF_INET6;
}

/** What kind of socket an fd is: SO_DOMAIN, SO_TYPE, SO_PROTOCOL. */
export function socketKind(fd: number): { domain: number; type: number; protocol: number } {
  return { domain: sockInt(fd, SOL_SOCKET, SO_DOMAIN), type: sockInt(fd, SOL_SOCKET, SO_TYPE), protocol: sockInt(fd, SOL_SOCKET, SO_PROTOCOL) };
}

/** getsockopt of an int; `absent` is returned when this kernel or this socket lacks the option (ENOPROTOOPT, EOPNOTSUPP). */
export function sockInt(fd: number, level: number, name: number, absent?: number): number {
  try {
    return getsockopt(fd, level, name, 4).readInt32LE(0);
  } catch (e) {
    if (absent !== undefined && e instanceof NativeError && (e.errno === ENOPROTOOPT || e.errno === Errno.EOPNOTSUPP || e.errno === Errno.EINVAL)) return absent;
    throw e;
  }
}

export function setSockInt(fd: number, level: number, name: number, value: number): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  setsockopt(fd, level, name, v);
}

function formatIpv4(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** RFC 5952 text of 16 address bytes: the longest run of two or more zero groups becomes "::"; an IPv4-mapped address keeps its dotted tail. */
export function formatIpv6(b: Buffer, at = 0): string {
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(at + i * 2));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${formatIpv4(b, at + 12)}`;
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** The 16 bytes of an IPv6 address in any text form inet_pton takes (with an optional dotted IPv4 tail). */
export function parseIpv6(text: string): Buffer {
  const out = Buffer.alloc(16);
  let s = text;
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const v4 = parseIpv4(dotted[1]!);
    tail.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
    s = s.slice(0, -dotted[1]!.length);
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) throw new RangeError(`not an IPv6 address: ${text}`);
  const [head, rest] = halves.length === 2 ? halves : [s, undefined];
  const parse = (part: string | undefined) => (part ? part.split(':').filter((g) => g !== '').map((g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new RangeError(`not an IPv6 address: ${text}`);
    return parseInt(g, 16);
  }) : []);
  const front = parse(head);
  const back = [...parse(rest), ...tail];
  const missing = 8 - front.length - back.length;
  if (missing < 0 || (rest === undefined && missing !== 0)) throw new RangeError(`not an IPv6 address: ${text}`);
  [...front, ...Array<number>(missing).fill(0), ...back].forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

export function parseIpv4(text: string): Buffer {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`not an IPv4 address: ${text}`);
  return Buffer.from(parts);
}

/** The IPv4 address an IPv4-mapped IPv6 address stands for, else null. */
export function mappedIpv4(addr: string): string | null {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : null;
}

export function isWildcard(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}

/** "addr:port", with brackets around IPv6 addresses. */
export function showAddress(a: InetAddress): string {
  return a.addr.includes(':') ? `[${a.addr}${a.scope ? `%${a.scope}` : ''}]:${a.port}` : `${a.addr}:${a.port}`;
}

const SOCKADDR_MAX = 128;

function parseSockaddr(sa: Buffer, len: number): InetAddress | null {
  const family = sa.readUInt16LE(0);
  if (family === AF_INET && len >= 8) return { addr: formatIpv4(sa, 4), port: sa.readUInt16BE(2) };
  if (family === AF_INET6 && len >= 24) {
    const scope = len >= 28 ? sa.readUInt32LE(24) : 0;
    return { addr: formatIpv6(sa, 8), port: sa.readUInt16BE(2), ...(scope ? { scope } : {}) };
  }
  return null;
}

/** A sockaddr_in or sockaddr_in6 for `a`. */
export function sockaddr(family: InetFamily, a: InetAddress): Buffer {
  if (family === 'inet') {
    const sa = Buffer.alloc(16);
    sa.writeUInt16LE(AF_INET, 0);
    sa.writeUInt16BE(a.port, 2);
    parseIpv4(a.addr).copy(sa, 4);
    return sa;
  }
  const sa = Buffer.alloc(28);
  sa.writeUInt16LE(AF_INET6, 0);
  sa.writeUInt16BE(a.port, 2);
  parseIpv6(a.addr).copy(sa, 8);
  sa.writeUInt32LE(a.scope ?? 0, 24);
  return sa;
}

function nameCall(call: 'getsockname' | 'getpeername', fd: number): InetAddress | null {
  const sa = Buffer.alloc(SOCKADDR_MAX);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sa.length, 0);
  try {
    syscall(`${call}(${fd})`, call === 'getsockname' ? Sys.getsockname : Sys.getpeername, fd, addressOf(sa), addressOf(len));
  } catch (e) {
    if (call === 'getpeername' && isNativeError(e, 'ENOTCONN')) return null;
    throw e;
  }
  return parseSockaddr(sa, len.readUInt32LE(0));
}

/** getsockname of an internet socket: port 0 means it is not bound. */
export function localAddress(fd: number): InetAddress | null {
  return nameCall('getsockname', fd);
}

/** getpeername; null when not connected. */
export function peerAddress(fd: number): InetAddress | null {
  return nameCall('getpeername', fd);
}

export function bindTo(fd: number, family: InetFamily, a: InetAddress): void {
  const sa = sockaddr(family, a);
  syscall(`bind(${fd}, ${showAddress(a)})`, Sys.bind, fd, addressOf(sa), sa.length);
}

export function connectTo(fd: number, family: InetFamily, a: InetAddress): void {
  const sa = sockaddr(family, a);
  syscall(`connect(${fd}, ${showAddress(a)})`, Sys.connect, fd, addressOf(sa), sa.length);
}

export function listenOn(fd: number, backlog: number): void {
  syscall(`listen(${fd}, ${backlog})`, Sys.listen, fd, backlog);
}

export const SHUT = { RD: 0, WR: 1, RDWR: 2 } as const;

export function shutdownSocket(fd: number, how: number): void {
  syscall(`shutdown(${fd}, ${how})`, Sys.shutdown, fd, how);
}

/** socket() of an internet stream socket, injected, so that it belongs to the task's network namespace; returns the task's fd. */
export function injectInetSocket(inj: Injector, family: InetFamily, type: number, protocol: number): number {
  return inj.call(`socket(${family === 'inet' ? 'AF_INET' : 'AF_INET6'})`, Sys.socket, familyNumber(family), type, protocol);
}

/**
 * The ethertype a packet socket was opened for, from /proc/PID/net/packet
 * (SO_PROTOCOL answers 0 for packet sockets); null when not listed.
 */
export function packetProtocol(pid: number, inode: number): number | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/net/packet`, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sk RefCnt Type Proto Iface R Rmem User Inode
    if (f.length >= 9 && Number(f[8]) === inode) return parseInt(f[3]!, 16);
  }
  return null;
}
