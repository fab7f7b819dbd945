import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { close, ioctl } from './process.js';
import { O_NONBLOCK } from './flags.js';

const F_GETPIPE_SZ = 1032;
const F_SETPIPE_SZ = 1031;
const FIONREAD = 0x541b;
const SPLICE_F_NONBLOCK = 2;
const POLLERR = 0x8;
const POLLHUP = 0x10;

/** Capacity and unread bytes of a pipe or FIFO we hold an fd of. */
export function pipeState(fd: number): { size: number; unread: number } {
  const size = syscall(`fcntl(${fd}, F_GETPIPE_SZ)`, Sys.fcntl, fd, F_GETPIPE_SZ);
  const n = Buffer.alloc(4);
  ioctl(fd, FIONREAD, n);
  return { size, unread: n.readInt32LE(0) };
}

/**
 * The unread bytes of a pipe, without consuming them: tee() links the pipe's
 * buffers into a pipe of ours, which we then drain. Ours gets the same
 * capacity so one tee takes everything; both sides are non-blocking so a
 * pipe that changes under us fails instead of hanging.
 */
export function peekPipe(fd: number): Buffer {
  const { size, unread } = pipeState(fd);
  if (unread === 0) return Buffer.alloc(0);
  const ends = Buffer.alloc(8);
  syscall('pipe2', Sys.pipe2, addressOf(ends), O_NONBLOCK);
  const r = ends.readInt32LE(0);
  const w = ends.readInt32LE(4);
  try {
    syscall(`fcntl(F_SETPIPE_SZ, ${size})`, Sys.fcntl, w, F_SETPIPE_SZ, size);
    const teed = syscall(`tee(${fd})`, Sys.tee, fd, w, unread, SPLICE_F_NONBLOCK);
    if (teed !== unread) throw new NativeError(`tee(${fd})`, Errno.EAGAIN, `copied ${teed} of the ${unread} unread bytes`);
    const out = Buffer.alloc(unread);
    for (let done = 0; done < unread; ) {
      const n = syscall('read(peek pipe)', Sys.read, r, addressOf(out) + BigInt(done), unread - done);
      if (n === 0) throw new NativeError('read(peek pipe)', Errno.EIO, `the pipe ended after ${done} of ${unread} bytes`);
      done += n;
    }
    return out;
  } finally {
    close(r);
    close(w);
  }
}

/**
 * Whether the other side of a pipe end still exists anywhere: readers for a
 * write end, writers for a read end. poll() says so without waiting
 * (POLLERR: no readers left; POLLHUP: no writers left). Only meaningful for
 * anonymous pipes: a FIFO read end reports no POLLHUP until a first writer
 * has come and gone.
 */
export function pipePeerExists(fd: number, end: 'read' | 'write'): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(0, 4);
  syscall(`poll(${fd})`, Sys.poll, addressOf(pfd), 1, 0);
  const revents = pfd.readInt16LE(6);
  return !(revents & (end === 'read' ? POLLHUP : POLLERR));
}
