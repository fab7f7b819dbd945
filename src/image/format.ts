/**
 * The Ferry image container: a directory holding manifest.json, entries.bin
 * and pages.bin. docs/IMAGE-FORMAT.md describes the format; this module
 * writes (ImageWriter) and reads (ImageReader) it.
 *
 *   const w = await ImageWriter.create(dir);
 *   w.addEntry(VmaEntry.make({ start, end, pages: packPageRuns(await w.writePageRuns(buf)) }));
 *   await w.finish({ container: 'web' });
 *
 *   const r = await ImageReader.open(dir);          // verifies everything first
 *   for (const e of r.entriesOf(VmaEntry)) await r.readPageRuns(e.pages, target);
 *   await r.close();
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  ENTRIES_FILE,
  FORMAT_NAME,
  FORMAT_VERSION,
  MANIFEST_FILE,
  MAX_ENTRIES_FILE_BYTES,
  MAX_MANIFEST_BYTES,
  PAGE_SIZE,
  PAGES_FILE,
  RESERVED_RECORD_TYPES,
  SUPPORTED_FORMAT_VERSIONS,
  TEMP_SUFFIX,
} from './constants.js';
import { defaultRegistry, type AnyEntry, type Entry, type EntryDef, type EntryRegistry } from './entry.js';
import { ImageError } from './errors.js';
import { scanPages, unpackPageRuns, type PackedPageRuns, type PageRun } from './pages.js';
import { decodeRecords, encodeRecordHead, type RecordMeta } from './record.js';

export * from './constants.js';

// ---------------------------------------------------------------- manifest

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Facts about the host that wrote the image; restore compares them with its own. */
export interface HostFacts {
  hostname: string;
  /** uname -r */
  kernel: string;
  /** uname -v: the kernel build; vdso placement needs the very same build. */
  kernelBuild: string;
  /** uname -m, e.g. "x86_64" */
  arch: string;
  [extra: string]: JsonValue;
}

const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a lower-case hex sha256');

export const ManifestFileSchema = z.strictObject({
  name: z.enum([ENTRIES_FILE, PAGES_FILE]),
  size: z.number().int().nonnegative(),
  sha256: Sha256Hex,
});

export const ManifestSchema = z.strictObject({
  format: z.literal(FORMAT_NAME),
  formatVersion: z.number().int(),
  ferryVersion: z.string().min(1),
  created: z.iso.datetime(),
  pageSize: z.literal(PAGE_SIZE),
  host: z.looseObject({ hostname: z.string(), kernel: z.string(), kernelBuild: z.string(), arch: z.string() }),
  files: z
    .array(ManifestFileSchema)
    .refine((fs) => fs.length === 2 && new Set(fs.map((f) => f.name)).size === 2, `must list ${ENTRIES_FILE} and ${PAGES_FILE} once each`),
  meta: z.record(z.string(), z.json()),
  sha256: Sha256Hex,
});

export interface ManifestFile {
  name: string;
  size: number;
  sha256: string;
}

export interface Manifest {
  format: typeof FORMAT_NAME;
  formatVersion: number;
  ferryVersion: string;
  created: string;
  pageSize: number;
  host: HostFacts;
  files: ManifestFile[];
  /** Free-form facts from the writer's caller (container name, source host, reason...). */
  meta: Record<string, JsonValue>;
  /** sha256 of canonicalJson(manifest without this field). */
  sha256: string;
}

/**
 * Canonical JSON: object keys sorted by UTF-16 code units, no whitespace,
 * strings and numbers as JSON.stringify writes them, undefined members
 * dropped. Only JSON values are accepted (TypeError otherwise).
 */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`canonical JSON cannot hold ${v}`);
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return '[' + v.map((x) => canonicalJson(x)).join(',') + ']';
  if (typeof v === 'object' && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonicalJson(o[k])).join(',') + '}';
  }
  throw new TypeError(`canonical JSON cannot hold a value of type ${typeof v === 'object' ? v.constructor?.name : typeof v}`);
}

/** The manifest's self-checksum: sha256 of its canonical JSON without the `sha256` field. */
export function manifestDigest(manifest: object): string {
  const { sha256: _omit, ...rest } = manifest as Record<string, unknown>;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

let cachedVersion: string | undefined;
/** The version of this Ferry (from its package.json). */
export function ferryVersion(): string {
  if (cachedVersion) return cachedVersion;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    try {
      const pj = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pj.name === 'ferry' && typeof pj.version === 'string') return (cachedVersion = pj.version);
    } catch {
      // not here; go up
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return (cachedVersion = '0.0.0-unknown');
}

export function hostFacts(): HostFacts {
  return { hostname: os.hostname(), kernel: os.release(), kernelBuild: os.version(), arch: os.machine() };
}

/** The first record of entries.bin and of every live stream. */
export function imageHeaderRecord(): RecordMeta {
  return { type: 'image', v: FORMAT_VERSION, format: FORMAT_NAME };
}

function describeFormat(m: Record<string, unknown>): string {
  const by = typeof m.ferryVersion === 'string' ? ` (written by Ferry ${m.ferryVersion})` : '';
  return `format ${JSON.stringify(m.format)} version ${JSON.stringify(m.formatVersion)}${by}`;
}

function ourFormat(): string {
  return `this Ferry (${ferryVersion()}) reads only "${FORMAT_NAME}" version${SUPPORTED_FORMAT_VERSIONS.length > 1 ? 's' : ''} ${SUPPORTED_FORMAT_VERSIONS.join(', ')}`;
}

/**
 * Checks the two fields every manifest of every version has: `format` and
 * `formatVersion`. Done before anything else, since a future format may change
 * everything else (even how the manifest is checksummed).
 */
function checkFormatIdentity(m: Record<string, unknown>, where: string): void {
  if (!('format' in m)) {
    throw new ImageError('bad-manifest', `${where}: has no "format" field; ${ourFormat()}`, { file: MANIFEST_FILE });
  }
  if (m.format !== FORMAT_NAME) {
    throw new ImageError('unknown-format', `${where}: the image is in ${describeFormat(m)}; ${ourFormat()}`, { file: MANIFEST_FILE });
  }
  if (typeof m.formatVersion !== 'number' || !SUPPORTED_FORMAT_VERSIONS.includes(m.formatVersion)) {
    const newer = typeof m.formatVersion === 'number' && m.formatVersion > Math.max(...SUPPORTED_FORMAT_VERSIONS);
    throw new ImageError(
      'unsupported-version',
      `${where}: the image is in ${describeFormat(m)}; ${ourFormat()}` + (newer ? ' (upgrade Ferry to read it)' : ''),
      { file: MANIFEST_FILE },
    );
  }
}

function zodIssues(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.map(String).join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

// ---------------------------------------------------------------- file I/O

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/** Writes all of `bufs` at `position`, coping with short writes and IOV_MAX. */
async function writeFully(fh: FileHandle, bufs: readonly Uint8Array[], position: number): Promise<void> {
  const list = bufs.filter((b) => b.length > 0);
  let i = 0;
  while (i < list.length) {
    const batch = list.slice(i, i + 1024);
    const want = batch.reduce((n, b) => n + b.length, 0);
    const { bytesWritten } = await fh.writev(batch, position);
    if (bytesWritten === want) {
      i += batch.length;
      position += want;
      continue;
    }
    if (bytesWritten <= 0) throw new Error(`write to image file returned ${bytesWritten}`);
    position += bytesWritten;
    let n = bytesWritten;
    while (n >= list[i]!.length) n -= list[i++]!.length;
    list[i] = list[i]!.subarray(n);
  }
}

/** Reads exactly `length` bytes at `position` or throws ImageError('truncated'). */
async function readFully(fh: FileHandle, buf: Uint8Array, offset: number, length: number, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, offset + done, length - done, position + done);
    if (bytesRead === 0) {
      throw new ImageError('truncated', `${file}: ends at byte ${position + done}, ${length - done} bytes short of what was to be read`, {
        file,
        offset: position + done,
      });
    }
    done += bytesRead;
  }
}

/**
 * An append-only stream (a file or a network stream) with a running sha256.
 * Offsets are given out and the hash is updated synchronously, in call
 * order; `out` may complete the writes in any order (files are written
 * positionally) but must take them in call order (streams).
 */
class Appender {
  size = 0;
  private readonly hash = createHash('sha256');
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown = null;

  constructor(
    readonly name: string,
    private readonly out: (bufs: readonly Uint8Array[], offset: number) => Promise<void>,
  ) {}

  append(bufs: readonly Uint8Array[]): { offset: number; done: Promise<void> } {
    if (this.failure) throw this.failure;
    const offset = this.size;
    for (const b of bufs) {
      this.hash.update(b);
      this.size += b.length;
    }
    const done = this.out(bufs, offset).catch((e: unknown) => {
      this.failure ??= e;
      throw e;
    });
    this.inflight.add(done);
    done.then(
      () => this.inflight.delete(done),
      () => this.inflight.delete(done),
    );
    return { offset, done };
  }

  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    if (this.failure) throw this.failure;
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * Where an image goes other than a directory: a migration streams it to
 * the target host as it is written, with nothing on the source's disk.
 */
export interface ImageSink {
  /** What the image is written to, for messages ("lab-2 (migration 3f2a)"). */
  readonly where: string;
  /**
   * Appends to one of the image's two data files. Called in the order the
   * bytes belong in the file; resolves once the sink has taken them, so a
   * slow receiver holds the checkpoint here rather than filling memory.
   * `bufs` may be reused by the writer once the promise settles.
   */
  append(file: typeof ENTRIES_FILE | typeof PAGES_FILE, bufs: readonly Uint8Array[]): Promise<void>;
  /** Everything was appended: the manifest, with both files' sizes and sha256s, ends the image. */
  finish(manifest: Manifest): Promise<void>;
  /** The checkpoint failed: the receiver discards what it got. */
  abort(reason: string): Promise<void>;
}

/** An image being written: its two data files, and how it is completed or discarded. */
interface ImageOutput {
  readonly where: string;
  readonly entries: Appender;
  readonly pages: Appender;
  /** Makes the data files durable and places the manifest, the last step of an image. */
  complete(manifest: Manifest): Promise<void>;
  discard(reason: string): Promise<void>;
}

class DirectoryOutput implements ImageOutput {
  private renamed = false;

  private constructor(
    private readonly dir: string,
    private readonly fsync: boolean,
    private readonly createdDir: boolean,
    private readonly handles: [FileHandle, FileHandle],
    readonly entries: Appender,
    readonly pages: Appender,
  ) {}

  get where(): string {
    return this.dir;
  }

  /**
   * Creates `dir` (and its parents) or takes an existing empty directory.
   * Throws ImageError('exists') if it exists and is not an empty directory.
   */
  static async create(dir: string, fsync: boolean): Promise<DirectoryOutput> {
    let createdDir = false;
    let st;
    try {
      st = await fs.stat(dir);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
    }
    if (st) {
      if (!st.isDirectory()) {
        throw new ImageError('exists', `${dir} exists and is not a directory; an image is written into a new or empty directory`);
      }
      const names = await fs.readdir(dir);
      if (names.length > 0) {
        const unfinished = names.some((n) => n.endsWith(TEMP_SUFFIX));
        throw new ImageError(
          'exists',
          `${dir} is not empty (${names.slice(0, 4).join(', ')}${names.length > 4 ? ', …' : ''}); an image is written into a new or empty directory` +
            (unfinished ? '. It holds *.tmp files from a checkpoint that did not finish: remove the directory' : ''),
        );
      }
    } else {
      await fs.mkdir(path.dirname(dir), { recursive: true });
      try {
        await fs.mkdir(dir);
        createdDir = true;
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw e;
      }
    }
    const opened: FileHandle[] = [];
    try {
      for (const name of [ENTRIES_FILE, PAGES_FILE]) {
        try {
          opened.push(await fs.open(path.join(dir, name + TEMP_SUFFIX), 'wx'));
        } catch (e) {
          if (errno(e) === 'EEXIST') throw new ImageError('exists', `${dir}: another checkpoint is being written into this directory (${name}${TEMP_SUFFIX} exists)`);
          throw e;
        }
      }
    } catch (e) {
      for (const fh of opened) await fh.close().catch(() => {});
      throw e;
    }
    const [entries, pages] = opened as [FileHandle, FileHandle];
    return new DirectoryOutput(
      dir,
      fsync,
      createdDir,
      [entries, pages],
      new Appender(ENTRIES_FILE, (bufs, offset) => writeFully(entries, bufs, offset)),
      new Appender(PAGES_FILE, (bufs, offset) => writeFully(pages, bufs, offset)),
    );
  }

  /** Syncs and renames the data files into place, then writes manifest.json last (via a temp name): until then nothing here opens as an image. */
  async complete(manifest: Manifest): Promise<void> {
    if (this.fsync) await Promise.all(this.handles.map((fh) => fh.sync()));
    await Promise.all(this.handles.map((fh) => fh.close()));
    for (const name of [ENTRIES_FILE, PAGES_FILE]) {
      await fs.rename(path.join(this.dir, name + TEMP_SUFFIX), path.join(this.dir, name));
    }
    this.renamed = true;
    const tmp = path.join(this.dir, MANIFEST_FILE + TEMP_SUFFIX);
    const fh = await fs.open(tmp, 'wx');
    try {
      await fh.writeFile(JSON.stringify(manifest, null, 2) + '\n');
      if (this.fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path.join(this.dir, MANIFEST_FILE));
    if (this.fsync) {
      const d = await fs.open(this.dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    }
  }

  /** Removes what this writer created: temp files, the data files if the manifest was never written, the directory if it made it. */
  async discard(): Promise<void> {
    await Promise.allSettled(this.handles.map((fh) => fh.close()));
    const names = [ENTRIES_FILE + TEMP_SUFFIX, PAGES_FILE + TEMP_SUFFIX, MANIFEST_FILE + TEMP_SUFFIX];
    if (this.renamed) names.push(ENTRIES_FILE, PAGES_FILE);
    for (const n of names) await fs.rm(path.join(this.dir, n), { force: true });
    if (this.createdDir) await fs.rmdir(this.dir).catch(() => {});
  }
}

class SinkOutput implements ImageOutput {
  readonly entries: Appender;
  readonly pages: Appender;

  constructor(private readonly sink: ImageSink) {
    this.entries = new Appender(ENTRIES_FILE, (bufs) => sink.append(ENTRIES_FILE, bufs));
    this.pages = new Appender(PAGES_FILE, (bufs) => sink.append(PAGES_FILE, bufs));
  }

  get where(): string {
    return this.sink.where;
  }

  complete(manifest: Manifest): Promise<void> {
    return this.sink.finish(manifest);
  }

  discard(reason: string): Promise<void> {
    return this.sink.abort(reason);
  }
}

// ---------------------------------------------------------------- writer

export interface ImageWriterOptions {
  /** Entry types to validate against (default: the registry defineEntry fills). */
  registry?: EntryRegistry;
  /** fsync the files and the directory at finish() (default true). */
  fsync?: boolean;
  /** Override host facts (the lab's simulated hosts, tests). */
  host?: Partial<HostFacts>;
  /** Override the Ferry version recorded in the manifest (tests). */
  ferryVersion?: string;
}

const ENTRY_FLUSH_BYTES = 256 * 1024;

/**
 * Writes a new image: into a directory (create) or into a sink that
 * streams it elsewhere (toSink). In a directory everything goes to *.tmp
 * names and manifest.json comes last, so until finish() returns nothing
 * there opens as an image.
 */
export class ImageWriter {
  private state: 'open' | 'finishing' | 'finished' | 'failed' | 'aborted' = 'open';
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private count = 0;
  private readonly entriesOut: Appender;
  private readonly pagesOut: Appender;

  private constructor(
    private readonly output: ImageOutput,
    private readonly opts: ImageWriterOptions,
  ) {
    this.entriesOut = output.entries;
    this.pagesOut = output.pages;
    this.queueRecord(encodeRecordHead(imageHeaderRecord()));
  }

  /**
   * Creates `dir` (and its parents) or takes an existing empty directory.
   * Throws ImageError('exists') if it exists and is not an empty directory.
   */
  static async create(dir: string, opts: ImageWriterOptions = {}): Promise<ImageWriter> {
    return new ImageWriter(await DirectoryOutput.create(path.resolve(dir), opts.fsync ?? true), opts);
  }

  /** Writes the image into `sink` as it is made (a migration's stream to the target host). */
  static toSink(sink: ImageSink, opts: ImageWriterOptions = {}): ImageWriter {
    return new ImageWriter(new SinkOutput(sink), opts);
  }

  /** Where the image goes: the directory, or the sink's description. */
  get dir(): string {
    return this.output.where;
  }

  /** Entries added so far. */
  get entryCount(): number {
    return this.count;
  }

  /** Bytes of page data written so far (= the offset the next writePages gets). */
  get pagesSize(): number {
    return this.pagesOut.size;
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new Error(`ImageWriter for ${this.dir} is ${this.state}`);
  }

  private queueRecord(head: Buffer): void {
    this.pending.push(head);
    this.pendingBytes += head.length;
    if (this.pendingBytes >= ENTRY_FLUSH_BYTES) this.flushEntries();
  }

  private flushEntries(): void {
    if (this.pending.length === 0) return;
    const bufs = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.entriesOut.append(bufs);
  }

  /**
   * Validates and appends an entry. Throws ImageError ('unknown-entry',
   * 'unsupported-version', 'bad-entry') for an entry the registry refuses, so a
   * bad entry fails the checkpoint, never the restore.
   */
  addEntry(entry: AnyEntry): void {
    this.checkOpen();
    if (RESERVED_RECORD_TYPES.includes(entry.type)) {
      throw new ImageError('bad-entry', `entry type "${entry.type}" is reserved by the image format`, { file: ENTRIES_FILE });
    }
    const index = this.count + 1;
    const registry = this.opts.registry ?? defaultRegistry;
    const def = registry.get(entry.type);
    if (def && def.v !== entry.v) {
      throw new ImageError('unsupported-version', `${ENTRIES_FILE} record #${index}: entry "${entry.type}" v${entry.v} given; this Ferry writes only v${def.v}`, {
        file: ENTRIES_FILE,
      });
    }
    const valid = registry.validate(entry, { file: ENTRIES_FILE, index });
    this.queueRecord(encodeRecordHead(valid));
    this.count++;
  }

  /**
   * Appends page data (a multiple of PAGE_SIZE bytes) to pages.bin and returns
   * where it starts. Don't modify `buf` until the promise settles. Calls may
   * overlap: offsets are assigned in call order.
   */
  async writePages(buf: Uint8Array): Promise<{ offset: number }> {
    this.checkOpen();
    if (buf.length % PAGE_SIZE !== 0) throw new RangeError(`page data of ${buf.length} bytes is not a multiple of ${PAGE_SIZE}`);
    const { offset, done } = this.pagesOut.append([buf]);
    await done;
    return { offset };
  }

  /**
   * Splits a page-aligned buffer into zero and data runs, appends only the data
   * pages (back to back) to pages.bin, and returns the runs, ready for
   * packPageRuns(). Don't modify `buf` until the promise settles.
   */
  async writePageRuns(buf: Uint8Array): Promise<PageRun[]> {
    this.checkOpen();
    const spans = scanPages(buf);
    const data = spans.filter((s) => !s.zero).map((s) => buf.subarray(s.first * PAGE_SIZE, (s.first + s.pages) * PAGE_SIZE));
    const { offset, done } = this.pagesOut.append(data);
    let next = offset;
    const runs: PageRun[] = spans.map((s) => {
      if (s.zero) return { kind: 'zero', pages: s.pages };
      const r: PageRun = { kind: 'data', pages: s.pages, offset: next };
      next += s.pages * PAGE_SIZE;
      return r;
    });
    await done;
    return runs;
  }

  /**
   * Like writePageRuns, but the runs (with their pages.bin offsets) come back
   * at once and the write proceeds in the background: `buf` must stay
   * untouched until flushPages() resolves. A dump of many small mappings
   * then costs one wait, not one per mapping.
   */
  queuePageRuns(buf: Uint8Array): PageRun[] {
    this.checkOpen();
    const spans = scanPages(buf);
    const data = spans.filter((s) => !s.zero).map((s) => buf.subarray(s.first * PAGE_SIZE, (s.first + s.pages) * PAGE_SIZE));
    let next = this.pagesOut.append(data).offset;
    return spans.map((s): PageRun => {
      if (s.zero) return { kind: 'zero', pages: s.pages };
      const r: PageRun = { kind: 'data', pages: s.pages, offset: next };
      next += s.pages * PAGE_SIZE;
      return r;
    });
  }

  /** Waits until every queued page write is on its way to the file (buffers given to queuePageRuns may be reused). */
  async flushPages(): Promise<void> {
    await this.pagesOut.drain();
  }

  /**
   * Completes the image: flushes both data files, then hands the manifest
   * (sizes, sha256s, `meta`, free-form JSON) to the output, which places it
   * last.
   */
  async finish(meta: Record<string, JsonValue> = {}): Promise<Manifest> {
    this.checkOpen();
    canonicalJson(meta); // refuse non-JSON meta before touching anything
    this.state = 'finishing';
    try {
      this.flushEntries();
      await Promise.all([this.entriesOut.drain(), this.pagesOut.drain()]);
      const body: Omit<Manifest, 'sha256'> = {
        format: FORMAT_NAME,
        formatVersion: FORMAT_VERSION,
        ferryVersion: this.opts.ferryVersion ?? ferryVersion(),
        created: new Date().toISOString(),
        pageSize: PAGE_SIZE,
        host: { ...hostFacts(), ...this.opts.host } as HostFacts,
        files: [
          { name: ENTRIES_FILE, size: this.entriesOut.size, sha256: this.entriesOut.digest() },
          { name: PAGES_FILE, size: this.pagesOut.size, sha256: this.pagesOut.digest() },
        ],
        meta,
      };
      const manifest: Manifest = { ...body, sha256: manifestDigest(body) };
      await this.output.complete(manifest);
      this.state = 'finished';
      return manifest;
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  /**
   * Gives up: a directory loses what this writer created (temp files, the
   * data files if the manifest was never written, the directory if it made
   * it); a sink is told to discard. No-op after a successful finish().
   */
  async abort(reason = 'the checkpoint failed'): Promise<void> {
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    await Promise.allSettled([this.entriesOut.drain(), this.pagesOut.drain()]);
    await this.output.discard(reason);
  }
}

// ---------------------------------------------------------------- reader

export interface ImageReaderOptions {
  /** Entry types to accept (default: the registry defineEntry fills). */
  registry?: EntryRegistry;
}

/** A piece of a page range, from ImageReader.pageChunks(). */
export interface PageChunk {
  /** Index of the first page within the range (0 = the range's start). */
  page: number;
  pages: number;
  /** The bytes, or null for zero pages. A view valid until the next chunk. */
  data: Buffer | null;
}

const READ_CHUNK = 1024 * 1024;
/** Data runs at least this long are read straight into the caller's buffer. */
const DIRECT_READ_BYTES = 256 * 1024;

/**
 * A read-ahead window over pages.bin: one buffer, refilled by large reads at
 * the requested offset. at() returns a view of at most `want` bytes starting
 * at `offset` (page multiples), valid until the next call.
 */
class PageWindow {
  private buf: Buffer | null = null;
  private start = 0;
  private end = 0;

  constructor(
    private readonly reader: ImageReader,
    private readonly size: number,
  ) {}

  async at(offset: number, want: number): Promise<Buffer> {
    if (!(offset >= this.start && offset + PAGE_SIZE <= this.end)) {
      this.buf ??= Buffer.allocUnsafe(this.size);
      const n = Math.min(this.size, this.reader.pagesSize - offset);
      await this.reader.readInto(this.buf, n, offset);
      this.start = offset;
      this.end = offset + n;
    }
    const n = Math.min(this.end - offset, want);
    return this.buf!.subarray(offset - this.start, offset - this.start + n);
  }
}

/**
 * Reads an image directory. open() refuses anything it cannot fully trust
 * before handing out a single entry: the format name and version, the
 * manifest's own checksum, every file's size and sha256, then every entry's
 * type, version and fields. It only ever opens files read-only.
 */
export class ImageReader {
  private entryList: AnyEntry[] = [];
  private pagesFh: FileHandle | null = null;
  private entriesFh: FileHandle | null = null;
  private scratch: Buffer = Buffer.alloc(0);

  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    private readonly registry: EntryRegistry,
  ) {}

  static async open(dir: string, opts: ImageReaderOptions = {}): Promise<ImageReader> {
    dir = path.resolve(dir);
    const manifest = await readManifest(dir);
    const r = new ImageReader(dir, manifest, opts.registry ?? defaultRegistry);
    try {
      await r.load();
    } catch (e) {
      await r.close();
      throw e;
    }
    return r;
  }

  private fileInfo(name: string): ManifestFile {
    return this.manifest.files.find((f) => f.name === name)!;
  }

  /** Size of pages.bin in bytes. */
  get pagesSize(): number {
    return this.fileInfo(PAGES_FILE).size;
  }

  get entryCount(): number {
    return this.entryList.length;
  }

  private async load(): Promise<void> {
    const handles: FileHandle[] = [];
    for (const f of [ENTRIES_FILE, PAGES_FILE]) {
      try {
        handles.push(await fs.open(path.join(this.dir, f), 'r'));
      } catch (e) {
        if (errno(e) === 'ENOENT') {
          throw new ImageError('missing-file', `${this.dir}: ${f} is missing (manifest.json lists it with ${this.fileInfo(f).size} bytes)`, { file: f });
        }
        throw e;
      }
      if (f === ENTRIES_FILE) this.entriesFh = handles[0]!;
      else this.pagesFh = handles[1]!;
    }
    const entriesBuf = await this.verifyFiles();
    this.decodeEntries(entriesBuf);
    // entries.bin is held in memory now; its handle is not needed.
    await this.entriesFh?.close();
    this.entriesFh = null;
  }

  /**
   * Checks every file's size and sha256 against the manifest (open() has done
   * this already; call again to re-check before a long restore).
   */
  async verify(): Promise<void> {
    if (!this.pagesFh) throw new Error(`ImageReader for ${this.dir} is closed`);
    const fh = await fs.open(path.join(this.dir, ENTRIES_FILE), 'r').catch((e: unknown) => {
      if (errno(e) === 'ENOENT') throw new ImageError('missing-file', `${this.dir}: ${ENTRIES_FILE} is missing`, { file: ENTRIES_FILE });
      throw e;
    });
    this.entriesFh = fh;
    try {
      await this.verifyFiles();
    } finally {
      this.entriesFh = null;
      await fh.close();
    }
  }

  /** Sizes first (cheap), then hashes. Returns entries.bin's bytes. */
  private async verifyFiles(): Promise<Buffer> {
    const handles: [ManifestFile, FileHandle][] = [
      [this.fileInfo(ENTRIES_FILE), this.entriesFh!],
      [this.fileInfo(PAGES_FILE), this.pagesFh!],
    ];
    for (const [f, fh] of handles) {
      const { size } = await fh.stat();
      if (size < f.size) {
        throw new ImageError('truncated', `${this.dir}: ${f.name} is ${size} bytes, manifest.json says ${f.size}: the file is truncated`, {
          file: f.name,
          offset: size,
        });
      }
      if (size > f.size) {
        throw new ImageError('checksum-mismatch', `${this.dir}: ${f.name} is ${size} bytes, manifest.json says ${f.size}: the file was modified`, {
          file: f.name,
          offset: f.size,
        });
      }
    }
    const [entriesInfo] = handles[0];
    if (entriesInfo.size > MAX_ENTRIES_FILE_BYTES) {
      throw new ImageError('bad-manifest', `${this.dir}: ${ENTRIES_FILE} is ${entriesInfo.size} bytes, more than the ${MAX_ENTRIES_FILE_BYTES} this Ferry reads`, {
        file: ENTRIES_FILE,
      });
    }
    const entriesBuf = Buffer.allocUnsafe(entriesInfo.size);
    await readFully(this.entriesFh!, entriesBuf, 0, entriesInfo.size, 0, ENTRIES_FILE);
    this.checkDigest(entriesInfo, createHash('sha256').update(entriesBuf).digest('hex'));

    const [pagesInfo, pagesFh] = handles[1];
    const h = createHash('sha256');
    const buf = this.scratchBuffer(READ_CHUNK);
    for (let pos = 0; pos < pagesInfo.size; ) {
      const n = Math.min(buf.length, pagesInfo.size - pos);
      await readFully(pagesFh, buf, 0, n, pos, PAGES_FILE);
      h.update(buf.subarray(0, n));
      pos += n;
    }
    this.checkDigest(pagesInfo, h.digest('hex'));
    return entriesBuf;
  }

  private checkDigest(f: ManifestFile, actual: string): void {
    if (actual !== f.sha256) {
      throw new ImageError('checksum-mismatch', `${this.dir}: ${f.name} has sha256 ${actual}, manifest.json says ${f.sha256}: the file is corrupt or was modified`, {
        file: f.name,
      });
    }
  }

  private decodeEntries(buf: Buffer): void {
    const list: AnyEntry[] = [];
    let index = 0;
    for (const r of decodeRecords(buf, { file: ENTRIES_FILE })) {
      const src = { file: ENTRIES_FILE, offset: r.start, index };
      const at = `${this.dir}: ${ENTRIES_FILE} record #${index} at byte ${r.start}`;
      if (r.data.length > 0) {
        throw new ImageError('bad-entry', `${at}: carries a ${r.data.length}-byte payload; page data belongs in ${PAGES_FILE}`, src);
      }
      if (index === 0) {
        const m = r.meta;
        if (m.type !== 'image' || m.format !== FORMAT_NAME || m.v !== this.manifest.formatVersion) {
          throw new ImageError(
            'bad-entry',
            `${at}: expected the header record {type: "image", format: "${FORMAT_NAME}", v: ${this.manifest.formatVersion}}, found type ${JSON.stringify(m.type)} v${m.v}`,
            src,
          );
        }
      } else if (RESERVED_RECORD_TYPES.includes(r.meta.type)) {
        throw new ImageError('bad-entry', `${at}: record type "${r.meta.type}" may not appear in ${ENTRIES_FILE}`, src);
      } else {
        list.push(this.registry.validate(r.meta, src));
      }
      index++;
    }
    if (index === 0) throw new ImageError('bad-entry', `${this.dir}: ${ENTRIES_FILE} is empty (no header record)`, { file: ENTRIES_FILE });
    this.entryList = list;
  }

  /** All entries, in the order they were written, each at its type's current version. */
  entries(): IterableIterator<AnyEntry> {
    return this.entryList[Symbol.iterator]();
  }

  /** The entries of one type. */
  entriesOf<D extends EntryDef>(def: D): Entry<D>[] {
    return this.entryList.filter((e) => def.is(e)) as Entry<D>[];
  }

  private scratchBuffer(n: number): Buffer {
    if (this.scratch.length < n) this.scratch = Buffer.allocUnsafe(Math.max(n, READ_CHUNK));
    return this.scratch;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.pagesSize) {
      throw new ImageError(
        'out-of-range',
        `${this.dir}: ${PAGES_FILE} bytes ${offset}..${offset + length} requested, the file holds ${this.pagesSize} bytes`,
        { file: PAGES_FILE, offset },
      );
    }
  }

  /**
   * Reads `length` bytes of pages.bin at `offset`, into `into` if given, else
   * into a buffer the reader reuses: the returned view is valid until the
   * next readPages() without `into`.
   */
  async readPages(offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    const fh = this.pagesFh;
    if (!fh) throw new Error(`ImageReader for ${this.dir} is closed`);
    this.checkRange(offset, length);
    let target: Buffer;
    if (into) {
      if (into.length < length) throw new RangeError(`buffer of ${into.length} bytes cannot hold ${length}`);
      target = Buffer.isBuffer(into) ? into : Buffer.from(into.buffer, into.byteOffset, into.byteLength);
    } else {
      target = this.scratchBuffer(length);
    }
    await readFully(fh, target, 0, length, offset, PAGES_FILE);
    return target.subarray(0, length);
  }

  /**
   * Rebuilds a page range into `target` (at least pages * PAGE_SIZE bytes):
   * data runs are read into it, zero runs are zero-filled (skip that with
   * zeroFill: false when the target is known to be zero already). Large data
   * runs are read straight into the target; small ones through one window
   * of large sequential reads, so a fragmented range costs few syscalls.
   */
  async readPageRuns(runs: readonly PageRun[] | PackedPageRuns, target: Uint8Array, opts: { zeroFill?: boolean } = {}): Promise<void> {
    const fh = this.pagesFh;
    if (!fh) throw new Error(`ImageReader for ${this.dir} is closed`);
    const list = Array.isArray(runs) ? (runs as readonly PageRun[]) : unpackPageRuns(runs as PackedPageRuns);
    const total = list.reduce((n, r) => n + r.pages, 0);
    if (target.length < total * PAGE_SIZE) throw new RangeError(`target of ${target.length} bytes cannot hold ${total} pages`);
    const win = new PageWindow(this, READ_CHUNK);
    let pos = 0;
    for (const r of list) {
      const len = r.pages * PAGE_SIZE;
      if (r.kind === 'data') {
        this.checkRun(r);
        if (len >= DIRECT_READ_BYTES) {
          await readFully(fh, target, pos, len, r.offset, PAGES_FILE);
        } else {
          for (let done = 0; done < len; ) {
            const view = await win.at(r.offset + done, len - done);
            target.set(view, pos + done);
            done += view.length;
          }
        }
      } else if (opts.zeroFill ?? true) {
        target.fill(0, pos, pos + len);
      }
      pos += len;
    }
  }

  /** @internal Range-checked read for PageWindow. */
  async readInto(buf: Buffer, length: number, offset: number): Promise<void> {
    const fh = this.pagesFh;
    if (!fh) throw new Error(`ImageReader for ${this.dir} is closed`);
    await readFully(fh, buf, 0, length, offset, PAGES_FILE);
  }

  private checkRun(r: PageRun & { kind: 'data' }): void {
    if (r.offset % PAGE_SIZE !== 0) {
      throw new ImageError('out-of-range', `${this.dir}: a page run starts at ${PAGES_FILE} byte ${r.offset}, not on a page boundary`, {
        file: PAGES_FILE,
        offset: r.offset,
      });
    }
    this.checkRange(r.offset, r.pages * PAGE_SIZE);
  }

  /**
   * Streams a page range in pieces of at most `maxBytes`, in address order:
   * zero runs come as {data: null}, data as views into one reused buffer
   * (valid until the next chunk is requested). Reads pages.bin sequentially
   * in large reads, whatever the run lengths.
   */
  async *pageChunks(runs: readonly PageRun[] | PackedPageRuns, opts: { maxBytes?: number } = {}): AsyncGenerator<PageChunk> {
    const list = Array.isArray(runs) ? (runs as readonly PageRun[]) : unpackPageRuns(runs as PackedPageRuns);
    const win = new PageWindow(this, Math.max(PAGE_SIZE, Math.floor((opts.maxBytes ?? READ_CHUNK) / PAGE_SIZE) * PAGE_SIZE));
    let page = 0;
    for (const r of list) {
      if (r.kind === 'zero') {
        if (r.pages > 0) yield { page, pages: r.pages, data: null };
        page += r.pages;
        continue;
      }
      this.checkRun(r);
      for (let done = 0; done < r.pages; ) {
        const data = await win.at(r.offset + done * PAGE_SIZE, (r.pages - done) * PAGE_SIZE);
        const pages = data.length / PAGE_SIZE;
        yield { page: page + done, pages, data };
        done += pages;
      }
      page += r.pages;
    }
  }

  async close(): Promise<void> {
    const hs = [this.pagesFh, this.entriesFh];
    this.pagesFh = null;
    this.entriesFh = null;
    for (const h of hs) await h?.close().catch(() => {});
  }
}

async function readManifest(dir: string): Promise<Manifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let st;
  try {
    st = await fs.stat(dir);
  } catch (e) {
    if (errno(e) === 'ENOENT') throw new ImageError('not-an-image', `${dir}: no such directory, so no image`);
    throw e;
  }
  if (!st.isDirectory()) throw new ImageError('not-an-image', `${dir} is not a directory, so not a Ferry image`);
  let fh: FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    const unfinished = names.some((n) => n.endsWith(TEMP_SUFFIX)) || names.includes(ENTRIES_FILE);
    throw new ImageError(
      'not-an-image',
      `${dir} has no ${MANIFEST_FILE}, so it is not a Ferry image` + (unfinished ? ' (it holds files of a checkpoint that did not finish)' : ''),
      { file: MANIFEST_FILE },
    );
  }
  let text: string;
  try {
    const { size } = await fh.stat();
    if (size > MAX_MANIFEST_BYTES) {
      throw new ImageError('bad-manifest', `${file} is ${size} bytes; a manifest is at most ${MAX_MANIFEST_BYTES}`, { file: MANIFEST_FILE });
    }
    const buf = Buffer.alloc(size);
    await readFully(fh, buf, 0, size, 0, MANIFEST_FILE);
    text = buf.toString('utf8');
  } finally {
    await fh.close();
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ImageError('bad-manifest', `${file} is not valid JSON (${(e as Error).message})`, { file: MANIFEST_FILE, cause: e });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ImageError('bad-manifest', `${file} does not hold a JSON object`, { file: MANIFEST_FILE });
  }
  const obj = raw as Record<string, unknown>;
  checkFormatIdentity(obj, file);
  const digest = manifestDigest(obj);
  if (obj.sha256 !== digest) {
    throw new ImageError(
      'checksum-mismatch',
      `${file} was modified after it was written: its content hashes to ${digest}, its "sha256" field says ${JSON.stringify(obj.sha256)}`,
      { file: MANIFEST_FILE },
    );
  }
  const parsed = ManifestSchema.safeParse(obj);
  if (!parsed.success) {
    throw new ImageError('bad-manifest', `${file} is not a valid manifest: ${zodIssues(parsed.error)}`, { file: MANIFEST_FILE, cause: parsed.error });
  }
  return parsed.data as Manifest;
}
