/**
 * Challenge-response over the shared cluster token. The token itself never
 * travels: each end sends a random nonce in its hello, and proves it knows
 * the token with an HMAC-SHA256 over both nonces, its side of the connection
 * and its role. The side is in the MAC so that a proof can never be
 * reflected back at the end that made it, even between two agents.
 *
 * The client proves first and the server answers only a correct proof: a
 * scanner that connects to an agent learns nothing it could grind the token
 * against offline. (A client talks only to the address it was given, and
 * with TLS it checks who that is.)
 */
import crypto from 'node:crypto';
import type { Role } from './frame.js';

export type Side = 'client' | 'server';

const LABEL = 'ferry-auth-v1';

export function newNonce(): Uint8Array {
  return crypto.randomBytes(32);
}

/** Nonces are exactly 32 bytes (the hello schema checks it), so the concatenation is unambiguous. */
export function authProof(token: string, side: Side, role: Role, clientNonce: Uint8Array, serverNonce: Uint8Array): Uint8Array {
  return crypto.createHmac('sha256', token).update(`${LABEL}\0${side}\0${role}\0`).update(clientNonce).update(serverNonce).digest();
}

export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return expected.byteLength === got.byteLength && crypto.timingSafeEqual(expected, got);
}

export function checkToken(token: unknown): asserts token is string {
  if (typeof token !== 'string' || token.length === 0) throw new TypeError('the cluster token must be a non-empty string');
}
