import { z } from 'zod';

/**
 * Field types shared by entries. 64-bit values that may not fit a double
 * (signal masks, rlimits, capability sets) are hex strings: msgpack would
 * otherwise turn them into floats or need BigInt support on both sides.
 */
export const U64Hex = z.string().regex(/^0x[0-9a-f]{1,16}$/, 'a 64-bit value as 0x-prefixed lowercase hex');
export const Address = z.number().int().nonnegative().max(2 ** 48);
export const Pid = z.number().int().positive().max(4194304);
/**
 * The leader of a process group or session: 0 when it lives in an ancestor
 * pid namespace (the checkpointer was started inside a pid namespace by a
 * shell outside it). Like any leader that is not in the image, it is not
 * recreated: the restored copy lands in the detached session restore makes.
 */
export const LeaderPid = z.number().int().nonnegative().max(4194304);
export const Bytes = z.instanceof(Uint8Array);

export function hex(v: bigint | number): string {
  return '0x' + BigInt.asUintN(64, BigInt(v)).toString(16);
}

export function fromHex(s: string): bigint {
  return BigInt(s);
}

/** What a file referenced by the image must be on the restoring host: same size and content. */
export const FileIdentity = z.strictObject({
  path: z.string().min(1),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type FileIdentity = z.infer<typeof FileIdentity>;
