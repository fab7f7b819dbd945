import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { PageRunsField } from './pages.js';
import { Address, Bytes, FileIdentity, Pid } from './fields.js';

/** Pages of a mapping stored in the image: `runs` starts at page `page` of the mapping. Pages outside every segment come from the file (file mappings) or are zero (anonymous). */
export const PageSegment = z.strictObject({ page: z.number().int().nonnegative(), runs: PageRunsField });

export const VMA_KINDS = ['anon', 'file', 'shmem', 'vdso', 'vvar', 'vvar_vclock'] as const;
export const VMA_FLAGS = ['growsdown', 'dontdump', 'dontfork', 'wipeonfork', 'hugepage', 'nohugepage', 'noreserve'] as const;

/** One mapping of a process's address space. */
export const VmaEntry = defineEntry(
  'vma',
  1,
  z.strictObject({
    pid: Pid,
    start: Address,
    end: Address,
    /** PROT_READ | PROT_WRITE | PROT_EXEC bits. */
    prot: z.number().int().min(0).max(7),
    shared: z.boolean(),
    kind: z.enum(VMA_KINDS),
    /** The name /proc/PID/maps shows ([heap], [stack], a path, ''), for people reading the image. */
    name: z.string(),
    /** kind 'file': the file and the offset of the mapping in it. */
    file: FileIdentity.optional(),
    offset: z.number().int().nonnegative(),
    /** kind 'shmem': the shmem entry holding the object's contents. */
    shmem: z.number().int().nonnegative().optional(),
    flags: z.array(z.enum(VMA_FLAGS)),
    /** Private pages that travel (anonymous memory, copy-on-write pages of files). */
    segments: z.array(PageSegment),
  }),
);
export type VmaEntry = Entry<typeof VmaEntry>;

/** A shared-memory object (MAP_SHARED|MAP_ANONYMOUS memory, a memfd, or an unlinked /dev/shm file): its contents travel once, however many mappings and fds refer to it. */
export const ShmemEntry = defineEntry(
  'shmem',
  1,
  z.strictObject({
    id: z.number().int().nonnegative(),
    /** 'tmpfs': an unlinked file of /dev/shm still mapped (what sem_open/shm_open leave after an unlink). */
    kind: z.enum(['anon', 'memfd', 'tmpfs']),
    /** memfd name without the "memfd:" prefix; for 'tmpfs' the file's former path. */
    name: z.string(),
    /** 'tmpfs': the file's permission bits. */
    mode: z.number().int().min(0).max(0o7777).optional(),
    size: z.number().int().nonnegative(),
    /** Identity on the source (dev:inode), to match fds and mappings of one object. */
    key: z.string(),
    segments: z.array(PageSegment),
  }),
);
export type ShmemEntry = Entry<typeof ShmemEntry>;

/** The mm-wide fields that PR_SET_MM_MAP restores. */
export const MmEntry = defineEntry(
  'mm',
  1,
  z.strictObject({
    pid: Pid,
    startCode: Address,
    endCode: Address,
    startData: Address,
    endData: Address,
    startBrk: Address,
    brk: Address,
    startStack: Address,
    argStart: Address,
    argEnd: Address,
    envStart: Address,
    envEnd: Address,
    auxv: Bytes,
    exe: FileIdentity,
  }),
);
export type MmEntry = Entry<typeof MmEntry>;
