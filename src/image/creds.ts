import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';
import { Pid, U64Hex } from './fields.js';

/** A uid or gid: (uid_t)-1 means "unchanged" to the kernel, so it is never a real id. */
const Id = z.number().int().nonnegative().max(0xfffffffe);

const Ids = z.strictObject({ real: Id, effective: Id, saved: Id, fs: Id });

/**
 * A process's credentials as its own user namespace sees them (the
 * checkpoint refuses a process in another user namespace than Ferry's).
 * Capability sets are bit n for capability n.
 */
export const CredsEntry = defineEntry(
  'creds',
  1,
  z.strictObject({
    pid: Pid,
    uid: Ids,
    gid: Ids,
    /** Supplementary groups, in the kernel's (sorted) order. */
    groups: z.array(Id).max(65536),
    caps: z.strictObject({ inheritable: U64Hex, permitted: U64Hex, effective: U64Hex, bounding: U64Hex, ambient: U64Hex }),
    /** prctl(PR_GET_SECUREBITS): the SECBIT_* flags and their locks (keep_caps is one of them). */
    securebits: z.number().int().nonnegative().max(0xffff),
    noNewPrivs: z.boolean(),
  }),
);
export type CredsEntry = Entry<typeof CredsEntry>;
