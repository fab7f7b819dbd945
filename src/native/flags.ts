/** Linux x86_64 flag values Ferry passes to the kernel, defined once (include/uapi/asm-generic/fcntl.h, mman-common.h, mman.h). */

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECT = 0o40000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
/** O_TMPFILE includes O_DIRECTORY, as the kernel wants it. */
export const O_TMPFILE = 0o20200000;

/** socket()'s close-on-exec type flag: the same bit as O_CLOEXEC. */
export const SOCK_CLOEXEC = O_CLOEXEC;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x100;
export const MAP_NORESERVE = 0x4000;
export const MAP_FIXED_NOREPLACE = 0x100000;
