import crypto from 'node:crypto';
import fs from 'node:fs';
import type { FileIdentity } from './fields.js';

const cache = new Map<string, FileIdentity>();

/**
 * Size and sha256 of a file the image refers to instead of carrying it
 * (binaries, libraries, mapped data files). Hashes are cached by path, inode,
 * size and mtime: a checkpoint maps the same libc many times.
 */
export function identifyFile(path: string): FileIdentity {
  const st = fs.statSync(path);
  const key = `${path}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let pos = 0; ; ) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const id = { path, size: st.size, sha256: hash.digest('hex') };
  cache.set(key, id);
  return id;
}

/** Why a referenced file cannot be used on this host, or null when it is the same file. */
export function fileMismatch(expected: FileIdentity): string | null {
  let actual: FileIdentity;
  try {
    actual = identifyFile(expected.path);
  } catch (e) {
    return `${expected.path} is missing or unreadable here (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  if (actual.size !== expected.size) return `${expected.path} has ${actual.size} bytes here, ${expected.size} in the image`;
  if (actual.sha256 !== expected.sha256) return `${expected.path} differs from the file the image was taken with (sha256 ${actual.sha256.slice(0, 12)}… here, ${expected.sha256.slice(0, 12)}… in the image)`;
  return null;
}
