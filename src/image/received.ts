/**
 * The receiving end of a streamed image: the bytes land in a directory as
 * they arrive, each file's sha256 is computed on the way, and the manifest
 * is written only if both files match what it says. Until then the
 * directory never opens as an image (ImageReader needs manifest.json).
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { ENTRIES_FILE, MANIFEST_FILE, PAGES_FILE, TEMP_SUFFIX } from './constants.js';
import { ImageError } from './errors.js';
import { ManifestSchema, manifestDigest, type ImageSink, type Manifest } from './format.js';

type DataFile = typeof ENTRIES_FILE | typeof PAGES_FILE;

interface Incoming {
  fh: FileHandle;
  hash: Hash;
  size: number;
  /** Appends are written one after another, in the order they came. */
  chain: Promise<void>;
}

export class ReceivedImage implements ImageSink {
  private readonly files = new Map<DataFile, Incoming>();
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly where: string,
  ) {}

  /** Receives into `dir`, which must not exist yet (a fresh directory per migration). */
  static async create(dir: string, where = dir): Promise<ReceivedImage> {
    await fs.mkdir(path.dirname(dir), { recursive: true });
    await fs.mkdir(dir);
    const image = new ReceivedImage(dir, where);
    for (const name of [ENTRIES_FILE, PAGES_FILE] as const) {
      image.files.set(name, { fh: await fs.open(path.join(dir, name + TEMP_SUFFIX), 'wx'), hash: createHash('sha256'), size: 0, chain: Promise.resolve() });
    }
    return image;
  }

  /** Bytes received so far, both files together. */
  get bytes(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.size;
    return n;
  }

  append(file: DataFile, bufs: readonly Uint8Array[]): Promise<void> {
    const f = this.files.get(file);
    if (!f || this.closed) return Promise.reject(new Error(`${this.where}: data for ${file} after the image was closed`));
    for (const b of bufs) {
      f.hash.update(b);
      f.size += b.length;
    }
    const write = f.chain.then(async () => {
      for (const b of bufs) {
        let done = 0;
        while (done < b.length) done += (await f.fh.write(b, done, b.length - done)).bytesWritten;
      }
    });
    f.chain = write;
    return write;
  }

  /** Checks both files against the manifest, then places them and the manifest. A mismatch discards everything. */
  async finish(manifest: Manifest): Promise<void> {
    this.closed = true;
    try {
      const parsed = ManifestSchema.safeParse(manifest);
      if (!parsed.success) throw new ImageError('bad-manifest', `${this.where}: the manifest that ended the stream is malformed`);
      if (manifestDigest(omitDigest(manifest)) !== manifest.sha256) throw new ImageError('checksum-mismatch', `${this.where}: the manifest's own sha256 does not match it`);
      for (const [name, f] of this.files) {
        await f.chain;
        await f.fh.close();
        const want = manifest.files.find((x) => x.name === name);
        const got = f.hash.digest('hex');
        if (!want || want.size !== f.size || want.sha256 !== got) {
          throw new ImageError(
            'checksum-mismatch',
            `${this.where}: ${name} arrived as ${f.size} bytes with sha256 ${got}; the manifest says ${want ? `${want.size} bytes with sha256 ${want.sha256}` : 'nothing of it'}`,
            { file: name },
          );
        }
        await fs.rename(path.join(this.dir, name + TEMP_SUFFIX), path.join(this.dir, name));
      }
      await fs.writeFile(path.join(this.dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    } catch (e) {
      await this.discard();
      throw e;
    }
  }

  async abort(): Promise<void> {
    this.closed = true;
    await this.discard();
  }

  /** Removes the directory and everything in it. */
  async discard(): Promise<void> {
    for (const f of this.files.values()) {
      await f.chain.catch(() => {});
      await f.fh.close().catch(() => {});
    }
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

function omitDigest(m: Manifest): Omit<Manifest, 'sha256'> {
  const { sha256: _, ...body } = m;
  return body;
}
