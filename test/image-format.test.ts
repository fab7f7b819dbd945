/**
 * The image container format (src/image/): writer and reader on real temp
 * directories, corruption of every kind, page runs, record framing, and a
 * fuzz of the record decoder.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  ENTRIES_FILE,
  EntryRegistry,
  FORMAT_NAME,
  FORMAT_VERSION,
  ImageError,
  ImageReader,
  ImageWriter,
  MANIFEST_FILE,
  PAGE_SIZE,
  PAGES_FILE,
  PageRunsField,
  RecordDecoder,
  countPageRuns,
  decodeRecord,
  decodeRecords,
  encodeRecord,
  encodeRecordHead,
  isAllZero,
  isZeroPage,
  manifestDigest,
  packPageRuns,
  scanPages,
  unpackPageRuns,
  type AnyEntry,
  type Entry,
  type ImageErrorReason,
  type PageRun,
  type RecordMeta,
} from '../src/image/index.js';

// ---------------------------------------------------------------- example entries (the pattern src/image/<resource>.ts follows)

// What src/image/<resource>.ts does with defineEntry(), here on a private
// registry so that the test types do not leak into the default one.
const registry = new EntryRegistry();
const MemV1Fields = z.object({ name: z.string(), start: z.number().int().nonnegative(), pages: PageRunsField });
const MemEntry = registry.define('test-mem', 2, MemV1Fields.extend({ flags: z.bigint() }));
type MemEntry = Entry<typeof MemEntry>;
registry.defineUpgrade(MemEntry, 1, MemV1Fields, (old) => ({ name: old.name, start: old.start, pages: old.pages, flags: 0n }));
const NoteEntry = registry.define('test-note', 1, z.object({ text: z.string(), blob: z.instanceof(Uint8Array).optional() }));

/** The registry of an older or newer Ferry. */
function makeRegistry(memVersion: 1 | 2 | 3, extra = false): EntryRegistry {
  const reg = new EntryRegistry();
  if (memVersion === 1) {
    reg.define('test-mem', 1, MemV1Fields);
  } else {
    const mem = reg.define('test-mem', memVersion, MemV1Fields.extend({ flags: z.bigint() }));
    reg.defineUpgrade(mem, 1, MemV1Fields, (old) => ({ name: old.name, start: old.start, pages: old.pages, flags: 0n }));
  }
  reg.define('test-note', 1, z.object({ text: z.string(), blob: z.instanceof(Uint8Array).optional() }));
  if (extra) reg.define('test-extra', 1, z.object({ n: z.number() }));
  return reg;
}

// ---------------------------------------------------------------- helpers

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** A buffer of `pattern.length` pages: 'd' = data page (filled with its index), '0' = zero page. */
function pagesFrom(pattern: string, fillLast = false): Buffer {
  const buf = Buffer.alloc(pattern.length * PAGE_SIZE);
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === 'd') {
      if (fillLast) buf[i * PAGE_SIZE + PAGE_SIZE - 1] = 1;
      else buf.fill((i % 250) + 1, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    }
  }
  return buf;
}

async function expectImageError(p: Promise<unknown> | (() => unknown), reason: ImageErrorReason, ...inMessage: (string | RegExp)[]): Promise<ImageError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ImageError '${reason}', nothing was thrown`);
  assert.ok(err instanceof ImageError, `expected ImageError '${reason}', got ${(err as Error)?.stack ?? String(err)}`);
  assert.equal(err.reason, reason, `expected reason '${reason}', got '${err.reason}': ${err.message}`);
  for (const m of inMessage) {
    if (typeof m === 'string') assert.ok(err.message.includes(m), `message should mention ${JSON.stringify(m)}: ${err.message}`);
    else assert.match(err.message, m);
  }
  return err;
}

async function sha256File(p: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(p)).digest('hex');
}

/** Everything about a directory a modification would change. */
async function snapshot(dir: string): Promise<string> {
  const names = (await fs.readdir(dir)).sort();
  const d = await fs.stat(dir);
  const rows = [`dir mtime=${d.mtimeMs} ctime=${d.ctimeMs} mode=${d.mode}`];
  for (const n of names) {
    const p = path.join(dir, n);
    const st = await fs.stat(p);
    rows.push(`${n} size=${st.size} mtime=${st.mtimeMs} ctime=${st.ctimeMs} mode=${st.mode} ino=${st.ino} sha=${await sha256File(p)}`);
  }
  return rows.join('\n');
}

async function readManifestJson(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await fs.readFile(path.join(dir, MANIFEST_FILE), 'utf8')) as Record<string, unknown>;
}

/** Rewrites manifest.json; re-signs it (valid self-checksum) unless told not to. */
async function editManifest(dir: string, edit: (m: Record<string, unknown>) => void, resign = true): Promise<void> {
  const m = await readManifestJson(dir);
  edit(m);
  if (resign) m.sha256 = manifestDigest(m);
  await fs.writeFile(path.join(dir, MANIFEST_FILE), JSON.stringify(m, null, 2));
}

// ---------------------------------------------------------------- fixtures

let tmp = '';
let readers: ImageReader[] = [];
let writers: ImageWriter[] = [];

async function open(dir: string, reg: EntryRegistry = registry): Promise<ImageReader> {
  const r = await ImageReader.open(dir, { registry: reg });
  readers.push(r);
  return r;
}

async function create(dir: string, reg: EntryRegistry = registry): Promise<ImageWriter> {
  const w = await ImageWriter.create(dir, { registry: reg, fsync: false });
  writers.push(w);
  return w;
}

const MEM_PATTERN = '0dd000ddd0' + '0'.repeat(40) + 'd' + '0'.repeat(20) + 'dddd';

interface Written {
  dir: string;
  mem: Buffer;
  entries: AnyEntry[];
}

/** A small image: two memory ranges (one all zero), a note with a blob. */
async function writeSample(dir: string, reg: EntryRegistry = registry): Promise<Written> {
  const w = await create(dir, reg);
  const mem = pagesFrom(MEM_PATTERN);
  const runs = await w.writePageRuns(mem);
  const zeroRuns = await w.writePageRuns(Buffer.alloc(8 * PAGE_SIZE));
  const entries: AnyEntry[] = [
    { type: 'test-note', v: 1, text: 'first', blob: Buffer.from([1, 2, 3, 0xff]) },
    { type: 'test-mem', v: 2, name: 'heap', start: 0x7f0000000000, pages: packPageRuns(runs), flags: 0xffff_ffff_ffff_fff0n },
    { type: 'test-mem', v: 2, name: 'bss', start: 0x10000, pages: packPageRuns(zeroRuns), flags: 1n },
    { type: 'test-note', v: 1, text: 'ünïcödé ✓' },
  ];
  for (const e of entries) w.addEntry(e);
  await w.finish({ container: 'web', pid: 1234 });
  return { dir, mem, entries };
}

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-image-test-'));
  readers = [];
  writers = [];
});

afterEach(async () => {
  for (const r of readers) await r.close().catch(() => {});
  for (const w of writers) await w.abort().catch(() => {});
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  tmp = '';
});

// ---------------------------------------------------------------- tests

describe('image format: write and read', () => {
  it('round-trips entries and pages', async () => {
    const dir = path.join(tmp, 'img');
    const { mem, entries } = await writeSample(dir);
    assert.deepEqual((await fs.readdir(dir)).sort(), [ENTRIES_FILE, MANIFEST_FILE, PAGES_FILE]);

    const r = await open(dir);
    assert.equal(r.manifest.format, FORMAT_NAME);
    assert.equal(r.manifest.formatVersion, FORMAT_VERSION);
    assert.equal(r.manifest.pageSize, PAGE_SIZE);
    assert.deepEqual(r.manifest.meta, { container: 'web', pid: 1234 });
    assert.equal(r.manifest.host.kernel, os.release());
    assert.equal(r.manifest.host.arch, os.machine());
    assert.deepEqual([...r.entries()], entries);
    assert.equal(r.entryCount, 4);

    const mems: MemEntry[] = r.entriesOf(MemEntry);
    assert.deepEqual(
      mems.map((m) => m.name),
      ['heap', 'bss'],
    );
    assert.equal(typeof mems[0]!.flags, 'bigint');
    assert.equal(r.entriesOf(NoteEntry).length, 2);

    // Rebuild the range into a dirty target: zero runs must be zero-filled.
    const target = Buffer.alloc(mem.length, 0xaa);
    await r.readPageRuns(mems[0]!.pages, target);
    assert.ok(target.equals(mem));
    const zeroTarget = Buffer.alloc(8 * PAGE_SIZE, 0xaa);
    await r.readPageRuns(mems[1]!.pages, zeroTarget);
    assert.ok(isAllZero(zeroTarget));

    // Stream it in small chunks (windows smaller than the runs).
    for (const maxBytes of [PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE + 17, 1 << 20]) {
      const rebuilt = Buffer.alloc(mem.length);
      let nextPage = 0;
      for await (const c of r.pageChunks(mems[0]!.pages, { maxBytes })) {
        assert.equal(c.page, nextPage, 'chunks come in address order without gaps');
        if (c.data) {
          assert.equal(c.data.length, c.pages * PAGE_SIZE);
          assert.ok(c.data.length <= Math.max(PAGE_SIZE, maxBytes));
          c.data.copy(rebuilt, c.page * PAGE_SIZE);
        }
        nextPage += c.pages;
      }
      assert.equal(nextPage, MEM_PATTERN.length);
      assert.ok(rebuilt.equals(mem), `pageChunks with maxBytes ${maxBytes}`);
    }

    // readPages: into a caller buffer and into the reader's reused buffer.
    const first = unpackPageRuns(mems[0]!.pages).find((x) => x.kind === 'data') as PageRun & { kind: 'data' };
    const own = Buffer.alloc(2 * PAGE_SIZE);
    const got = await r.readPages(first.offset, 2 * PAGE_SIZE, own);
    assert.ok(got.equals(mem.subarray(PAGE_SIZE, 3 * PAGE_SIZE)));
    assert.equal(got.buffer, own.buffer);
    const again = await r.readPages(first.offset, PAGE_SIZE);
    assert.ok(again.equals(mem.subarray(PAGE_SIZE, 2 * PAGE_SIZE)));

    await r.verify();
  });

  it('stores zero pages as counts, not bytes', async () => {
    const dir = path.join(tmp, 'img');
    const w = await create(dir);
    const pattern = '0'.repeat(100) + 'd' + '0'.repeat(50) + 'dd' + '0'.repeat(103);
    const runs = await w.writePageRuns(pagesFrom(pattern));
    assert.deepEqual(runs, [
      { kind: 'zero', pages: 100 },
      { kind: 'data', pages: 1, offset: 0 },
      { kind: 'zero', pages: 50 },
      { kind: 'data', pages: 2, offset: PAGE_SIZE },
      { kind: 'zero', pages: 103 },
    ]);
    assert.deepEqual(countPageRuns(runs), { pages: 256, dataPages: 3, zeroPages: 253 });
    w.addEntry({ type: 'test-mem', v: 2, name: 'sparse', start: 0, pages: packPageRuns(runs), flags: 0n });
    const allZero = await w.writePageRuns(Buffer.alloc(1024 * PAGE_SIZE));
    assert.deepEqual(allZero, [{ kind: 'zero', pages: 1024 }]);
    const manifest = await w.finish();

    const st = await fs.stat(path.join(dir, PAGES_FILE));
    assert.equal(st.size, 3 * PAGE_SIZE, 'only the 3 data pages are in pages.bin');
    assert.equal(manifest.files.find((f) => f.name === PAGES_FILE)!.size, 3 * PAGE_SIZE);
    const entriesSize = (await fs.stat(path.join(dir, ENTRIES_FILE))).size;
    assert.ok(entriesSize < 200, `entries.bin stays small (${entriesSize} bytes)`);
  });

  it('assigns writePages offsets in call order even when calls overlap', async () => {
    const dir = path.join(tmp, 'img');
    const w = await create(dir);
    const bufs = Array.from({ length: 20 }, (_, i) => Buffer.alloc(((i % 3) + 1) * PAGE_SIZE, i + 1));
    const results = await Promise.all(bufs.map((b) => w.writePages(b)));
    let expect = 0;
    for (let i = 0; i < bufs.length; i++) {
      assert.equal(results[i]!.offset, expect);
      expect += bufs[i]!.length;
    }
    assert.equal(w.pagesSize, expect);
    await assert.rejects(w.writePages(Buffer.alloc(100)), RangeError);
    await w.finish();
    const r = await open(dir);
    for (let i = 0; i < bufs.length; i++) {
      assert.ok((await r.readPages(results[i]!.offset, bufs[i]!.length)).equals(bufs[i]!));
    }
  });

  it('writes many entries (several flushes) and reads them back in order', async () => {
    const dir = path.join(tmp, 'img');
    const w = await create(dir);
    const n = 5000;
    for (let i = 0; i < n; i++) w.addEntry({ type: 'test-note', v: 1, text: `note ${i} ${'x'.repeat(i % 200)}` });
    await w.finish();
    const r = await open(dir);
    const got = [...r.entries()];
    assert.equal(got.length, n);
    got.forEach((e, i) => assert.ok((e.text as string).startsWith(`note ${i} `)));
  });

  it('writes into an existing empty directory, refuses a non-empty one or a file', async () => {
    const empty = path.join(tmp, 'empty');
    await fs.mkdir(empty);
    const w = await create(empty);
    await w.finish();
    await open(empty);

    await expectImageError(ImageWriter.create(empty, { registry }), 'exists', 'not empty');
    const file = path.join(tmp, 'file');
    await fs.writeFile(file, 'x');
    await expectImageError(ImageWriter.create(file, { registry }), 'exists', 'not a directory');
  });

  it('refuses entries the registry does not accept, at write time', async () => {
    const w = await create(path.join(tmp, 'img'));
    await expectImageError(() => w.addEntry({ type: 'eventfd', v: 1 }), 'unknown-entry', '"eventfd"');
    await expectImageError(() => w.addEntry({ type: 'test-note', v: 1, text: 5 }), 'bad-entry', 'text');
    await expectImageError(() => w.addEntry({ type: 'test-note', v: 1, text: 'a', surprise: 1 }), 'bad-entry', 'surprise');
    await expectImageError(() => w.addEntry({ type: 'test-mem', v: 1, name: 'x', start: 0, pages: { offset: 0, runs: [] } }), 'unsupported-version', 'v2');
    await expectImageError(() => w.addEntry({ type: 'image', v: 1 }), 'bad-entry', 'reserved');
    await expectImageError(
      () => w.addEntry({ type: 'test-mem', v: 2, name: 'x', start: 0, pages: { offset: 5, runs: [0] }, flags: 0n }),
      'bad-entry',
      'pages.offset',
    );
    await w.finish();
  });
});

describe('image format: refusing bad images', () => {
  it('refuses a format it does not know, naming both formats', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await editManifest(dir, (m) => {
      m.format = 'criu-image';
    });
    await expectImageError(open(dir), 'unknown-format', '"criu-image"', `"${FORMAT_NAME}"`, 'version 1');
  });

  it('refuses a format version it does not know, naming both versions', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await editManifest(dir, (m) => {
      m.formatVersion = 99;
      m.ferryVersion = '9.9.9';
    });
    const e = await expectImageError(open(dir), 'unsupported-version', `"${FORMAT_NAME}" version 99`, 'Ferry 9.9.9', `reads only "${FORMAT_NAME}" version ${FORMAT_VERSION}`);
    assert.match(e.message, /upgrade Ferry/);
  });

  it('refuses a truncated pages.bin', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const p = path.join(dir, PAGES_FILE);
    await fs.truncate(p, (await fs.stat(p)).size - 100);
    const e = await expectImageError(open(dir), 'truncated', PAGES_FILE);
    assert.equal(e.file, PAGES_FILE);
  });

  it('refuses a pages.bin that grew', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await fs.appendFile(path.join(dir, PAGES_FILE), Buffer.alloc(PAGE_SIZE));
    await expectImageError(open(dir), 'checksum-mismatch', PAGES_FILE);
  });

  it('refuses a flipped byte in entries.bin', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const p = path.join(dir, ENTRIES_FILE);
    const b = await fs.readFile(p);
    b[Math.floor(b.length / 2)]! ^= 0x01;
    await fs.writeFile(p, b);
    const e = await expectImageError(open(dir), 'checksum-mismatch', ENTRIES_FILE, 'sha256');
    assert.equal(e.file, ENTRIES_FILE);
  });

  it('refuses a flipped byte in pages.bin', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const p = path.join(dir, PAGES_FILE);
    const fh = await fs.open(p, 'r+');
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, 5000);
    one[0]! ^= 0x80;
    await fh.write(one, 0, 1, 5000);
    await fh.close();
    await expectImageError(open(dir), 'checksum-mismatch', PAGES_FILE);
  });

  it('refuses a missing file', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await fs.rm(path.join(dir, PAGES_FILE));
    const e = await expectImageError(open(dir), 'missing-file', PAGES_FILE);
    assert.equal(e.file, PAGES_FILE);
    await fs.rm(path.join(dir, ENTRIES_FILE));
    await expectImageError(open(dir), 'missing-file', ENTRIES_FILE);
  });

  it('refuses an edited manifest', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await editManifest(
      dir,
      (m) => {
        (m.meta as Record<string, unknown>).container = 'db';
      },
      false,
    );
    const e = await expectImageError(open(dir), 'checksum-mismatch', MANIFEST_FILE, 'modified');
    assert.equal(e.file, MANIFEST_FILE);
  });

  it('refuses a manifest that lies about a file even with a valid self-checksum', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    await editManifest(dir, (m) => {
      (m.files as { name: string; sha256: string }[])[0]!.sha256 = '0'.repeat(64);
    });
    await expectImageError(open(dir), 'checksum-mismatch', ENTRIES_FILE);
  });

  it('refuses a manifest that is not JSON, or lacks fields', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const m = await readManifestJson(dir);
    await fs.writeFile(path.join(dir, MANIFEST_FILE), '{"format": "ferry-image", ');
    await expectImageError(open(dir), 'bad-manifest', 'not valid JSON');
    await fs.writeFile(path.join(dir, MANIFEST_FILE), JSON.stringify(m));
    await editManifest(dir, (x) => {
      delete x.files;
    });
    await expectImageError(open(dir), 'bad-manifest', 'files');
    await editManifest(dir, (x) => {
      x.files = [{ name: '../../etc/passwd', size: 1, sha256: '0'.repeat(64) }, (m.files as unknown[])[1]];
    });
    await expectImageError(open(dir), 'bad-manifest', 'files');
    await editManifest(dir, (x) => {
      delete x.format;
    });
    await expectImageError(open(dir), 'bad-manifest', '"format"');
  });

  it('says "not an image" for a missing directory, an empty one, or a plain file', async () => {
    await expectImageError(ImageReader.open(path.join(tmp, 'nope')), 'not-an-image', 'nope');
    await fs.mkdir(path.join(tmp, 'empty'));
    await expectImageError(ImageReader.open(path.join(tmp, 'empty')), 'not-an-image', MANIFEST_FILE);
    await fs.writeFile(path.join(tmp, 'f'), 'x');
    await expectImageError(ImageReader.open(path.join(tmp, 'f')), 'not-an-image');
  });

  it('refuses entry types and versions it does not know, by name and version', async () => {
    // Written by a "newer Ferry": knows test-extra, and test-mem v3.
    const newer = makeRegistry(3, true);
    const dir = path.join(tmp, 'newer');
    const w = await create(dir, newer);
    w.addEntry({ type: 'test-extra', v: 1, n: 1 });
    await w.finish();
    await expectImageError(open(dir), 'unknown-entry', '"test-extra"', ENTRIES_FILE, 'record #1');

    const dir2 = path.join(tmp, 'newer2');
    const w2 = await create(dir2, newer);
    w2.addEntry({ type: 'test-mem', v: 3, name: 'x', start: 0, pages: { offset: 0, runs: [] }, flags: 0n });
    await w2.finish();
    await expectImageError(open(dir2), 'unsupported-version', '"test-mem" version 3', 'versions 1, 2', 'newer Ferry');
  });

  it('upgrades an older entry version to the current one', async () => {
    const older = makeRegistry(1);
    const dir = path.join(tmp, 'older');
    const w = await create(dir, older);
    w.addEntry({ type: 'test-mem', v: 1, name: 'old', start: 4096, pages: { offset: 0, runs: [-3] } });
    await w.finish();
    const r = await open(dir);
    assert.deepEqual([...r.entries()], [{ type: 'test-mem', v: 2, name: 'old', start: 4096, pages: { offset: 0, runs: [-3] }, flags: 0n }]);
  });

  it('refuses page reads outside pages.bin', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const r = await open(dir);
    await expectImageError(r.readPages(r.pagesSize - PAGE_SIZE, 2 * PAGE_SIZE), 'out-of-range', PAGES_FILE);
    await expectImageError(r.readPages(-1, 1), 'out-of-range');
    await expectImageError(r.readPageRuns([{ kind: 'data', pages: 1, offset: r.pagesSize }], Buffer.alloc(PAGE_SIZE)), 'out-of-range');
    await expectImageError(r.readPageRuns([{ kind: 'data', pages: 1, offset: 7 }], Buffer.alloc(PAGE_SIZE)), 'out-of-range', 'page boundary');
    await expectImageError(
      (async () => {
        for await (const _ of r.pageChunks({ offset: 0, runs: [-1, 1000] })) void _;
      })(),
      'out-of-range',
    );
  });
});

describe('image format: safety', () => {
  it('never modifies the image directory when reading', async () => {
    const dir = path.join(tmp, 'img');
    await writeSample(dir);
    const before = await snapshot(dir);
    // Give any write a chance to show in a timestamp.
    await new Promise((res) => setTimeout(res, 20));
    const r = await open(dir);
    assert.equal([...r.entries()].length, 4);
    for (const e of r.entriesOf(MemEntry)) {
      await r.readPageRuns(e.pages, Buffer.alloc(countPageRuns(unpackPageRuns(e.pages)).pages * PAGE_SIZE));
      for await (const _ of r.pageChunks(e.pages, { maxBytes: PAGE_SIZE })) void _;
    }
    await r.readPages(0, PAGE_SIZE);
    await expectImageError(r.readPages(r.pagesSize, PAGE_SIZE), 'out-of-range');
    await r.verify();
    await r.close();
    // A reader that refuses the image (here: an entry type it does not know) writes nothing either.
    await expectImageError(ImageReader.open(dir, { registry: new EntryRegistry() }), 'unknown-entry');
    assert.equal(await snapshot(dir), before);
  });

  it('a checkpoint that crashes before finish() leaves no image', async function () {
    const dir = path.join(tmp, 'crashed');
    const here = path.dirname(fileURLToPath(import.meta.url));
    const imageModule = path.join(here, '..', 'src', 'image', 'index.js');
    const script = `
      const { ImageWriter, EntryRegistry, PAGE_SIZE } = await import(${JSON.stringify(imageModule)});
      const { z } = await import('zod');
      const reg = new EntryRegistry();
      reg.define('test-note', 1, z.object({ text: z.string() }));
      const w = await ImageWriter.create(${JSON.stringify(dir)}, { registry: reg });
      for (let i = 0; i < 10000; i++) w.addEntry({ type: 'test-note', v: 1, text: 'n' + i });
      await w.writePages(Buffer.alloc(64 * PAGE_SIZE, 7));
      process.exit(3); // the crash: no finish(), no abort()
    `;
    const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: path.join(here, '..', '..'), encoding: 'utf8' });
    assert.equal(res.status, 3, res.stderr);
    const names = (await fs.readdir(dir)).sort();
    assert.ok(!names.includes(MANIFEST_FILE), `no manifest after a crash: ${names.join(', ')}`);
    assert.ok(names.every((n) => n.endsWith('.tmp')), `only temp names: ${names.join(', ')}`);
    await expectImageError(ImageReader.open(dir, { registry }), 'not-an-image', 'did not finish');
    await expectImageError(ImageWriter.create(dir, { registry }), 'exists', '.tmp');

    // Even with the data files already renamed (a crash inside finish()), it is not an image.
    for (const n of [ENTRIES_FILE, PAGES_FILE]) await fs.rename(path.join(dir, n + '.tmp'), path.join(dir, n));
    await expectImageError(ImageReader.open(dir, { registry }), 'not-an-image', 'did not finish');
  });

  it('abort() removes what the writer created', async () => {
    const dir = path.join(tmp, 'a', 'b');
    const w = await create(dir);
    w.addEntry({ type: 'test-note', v: 1, text: 'x' });
    await w.writePages(Buffer.alloc(PAGE_SIZE, 1));
    await w.abort();
    await assert.rejects(fs.stat(dir), { code: 'ENOENT' });
    assert.throws(() => w.addEntry({ type: 'test-note', v: 1, text: 'y' }), /aborted/);

    const kept = path.join(tmp, 'kept');
    await fs.mkdir(kept);
    const w2 = await create(kept);
    await w2.abort();
    assert.deepEqual(await fs.readdir(kept), []);
  });
});

describe('image format: page runs', () => {
  it('scanPages matches a page-by-page check on random patterns', () => {
    const rand = prng(7);
    for (let c = 0; c < 300; c++) {
      const n = 1 + Math.floor(rand() * 80);
      let pattern = '';
      const zeroBias = rand();
      for (let i = 0; i < n; i++) pattern += rand() < zeroBias ? '0' : 'd';
      const buf = pagesFrom(pattern, rand() < 0.5);
      const spans = scanPages(buf);
      let rebuilt = '';
      let next = 0;
      for (let k = 0; k < spans.length; k++) {
        const s = spans[k]!;
        assert.equal(s.first, next);
        assert.ok(s.pages > 0);
        if (k > 0) assert.notEqual(s.zero, spans[k - 1]!.zero, 'spans alternate');
        rebuilt += (s.zero ? '0' : 'd').repeat(s.pages);
        next += s.pages;
      }
      assert.equal(rebuilt, pattern);
      for (let i = 0; i < n; i++) assert.equal(isZeroPage(buf, i), pattern[i] === '0');
    }
    assert.deepEqual(scanPages(Buffer.alloc(0)), []);
    assert.throws(() => scanPages(Buffer.alloc(100)), RangeError);
  });

  it('finds a single non-zero byte anywhere in a page', () => {
    const buf = Buffer.alloc(40 * PAGE_SIZE);
    for (const pos of [0, 1, 4095, 4096 * 17 + 2048, 40 * PAGE_SIZE - 1]) {
      buf[pos] = 0x80;
      const spans = scanPages(buf);
      const page = Math.floor(pos / PAGE_SIZE);
      const data = spans.filter((s) => !s.zero);
      assert.deepEqual(data, [{ zero: false, first: page, pages: 1 }]);
      buf[pos] = 0;
    }
  });

  it('packs and unpacks run lists', () => {
    const runs: PageRun[] = [
      { kind: 'zero', pages: 2 },
      { kind: 'data', pages: 3, offset: 8192 },
      { kind: 'data', pages: 1, offset: 8192 + 3 * PAGE_SIZE },
      { kind: 'zero', pages: 0 },
      { kind: 'zero', pages: 5 },
      { kind: 'data', pages: 2, offset: 8192 + 4 * PAGE_SIZE },
    ];
    const packed = packPageRuns(runs);
    assert.deepEqual(packed, { offset: 8192, runs: [-2, 4, -5, 2] });
    assert.deepEqual(unpackPageRuns(packed), [
      { kind: 'zero', pages: 2 },
      { kind: 'data', pages: 4, offset: 8192 },
      { kind: 'zero', pages: 5 },
      { kind: 'data', pages: 2, offset: 8192 + 4 * PAGE_SIZE },
    ]);
    assert.deepEqual(packPageRuns([{ kind: 'zero', pages: 9 }]), { offset: 0, runs: [-9] });
    assert.throws(
      () =>
        packPageRuns([
          { kind: 'data', pages: 1, offset: 0 },
          { kind: 'data', pages: 1, offset: 3 * PAGE_SIZE },
        ]),
      /not contiguous/,
    );
    assert.ok(PageRunsField.safeParse(packed).success);
    assert.ok(!PageRunsField.safeParse({ offset: 8192, runs: [0] }).success);
  });
});

describe('image format: records', () => {
  const sample: RecordMeta[] = [
    { type: 'image', v: 1, format: FORMAT_NAME },
    { type: 'test-note', v: 1, text: 'hello', blob: Buffer.from('abc') },
    { type: 'test-mem', v: 2, name: 'x', start: 2 ** 47 - 4096, pages: { offset: 0, runs: [-1, 2] }, flags: 2n ** 64n - 1n },
    { type: 'pages', v: 1, offset: 0 },
  ];

  it('round-trips records, with and without payload', () => {
    const payload = Buffer.alloc(2 * PAGE_SIZE, 9);
    const bufs = sample.map((m) => (m.type === 'pages' ? encodeRecord(m, payload) : encodeRecord(m)));
    const all = Buffer.concat(bufs);
    const got = [...decodeRecords(all)];
    assert.deepEqual(
      got.map((r) => r.meta),
      sample,
    );
    assert.ok(got[3]!.data.equals(payload));
    assert.equal(got[0]!.data.length, 0);
    assert.equal(got[3]!.end, all.length);
    // The head + payload form is byte-identical to the one-buffer form.
    assert.ok(Buffer.concat([encodeRecordHead(sample[3]!, payload.length), payload]).equals(bufs[3]!));
  });

  it('decodes a stream cut into any chunks', () => {
    const payload = randomBytes(prng(1), 3 * PAGE_SIZE);
    const all = Buffer.concat(sample.map((m) => (m.type === 'pages' ? encodeRecord(m, payload) : encodeRecord(m))));
    const rand = prng(2);
    for (let c = 0; c < 50; c++) {
      const dec = new RecordDecoder({ file: 'test stream' });
      const out: RecordMeta[] = [];
      const datas: Buffer[] = [];
      for (let i = 0; i < all.length; ) {
        const n = c === 0 ? 1 : 1 + Math.floor(rand() * 3000);
        for (const r of dec.push(all.subarray(i, i + n))) {
          out.push(r.meta);
          datas.push(r.data);
        }
        i += n;
      }
      dec.end();
      assert.deepEqual(out, sample);
      assert.ok(datas[3]!.equals(payload));
      assert.equal(dec.position, all.length);
    }
    const dec = new RecordDecoder({ file: 'test stream' });
    dec.push(all.subarray(0, all.length - 1));
    const e = (() => {
      try {
        dec.end();
      } catch (err) {
        return err;
      }
      return null;
    })();
    assert.ok(e instanceof ImageError && e.reason === 'truncated' && e.message.includes('test stream'), String(e));
  });

  it('refuses records that are not maps with a type and a version', async () => {
    const frame = (body: Buffer) => {
      const h = Buffer.alloc(8);
      h.writeUInt32LE(body.length, 0);
      return Buffer.concat([h, body]);
    };
    await expectImageError(() => decodeRecord(frame(Buffer.from([0x93, 1, 2, 3]))), 'bad-entry', 'not a map');
    await expectImageError(() => decodeRecord(frame(Buffer.from([0x81, 0xa1, 0x76, 0x01]))), 'bad-entry', '"type"');
    await expectImageError(() => decodeRecord(frame(Buffer.from([0x82, 0xa1, 0x76]))), 'bad-entry', 'msgpack');
    await expectImageError(() => decodeRecord(Buffer.alloc(8)), 'bad-entry', 'meta length of 0');
    await expectImageError(() => decodeRecord(Buffer.from([1, 0, 0])), 'truncated');
    assert.throws(() => encodeRecord({ type: 'Bad Type', v: 1 }), ImageError);
    assert.throws(() => encodeRecord({ type: 'ok', v: 0 }), ImageError);
  });

  it('fuzz: the decoder throws only ImageError, on random, mutated and truncated input', () => {
    const rand = prng(0xfe77);
    const valid = Buffer.concat(sample.map((m) => (m.type === 'pages' ? encodeRecord(m, Buffer.alloc(PAGE_SIZE, 3)) : encodeRecord(m))));
    const check = (input: Buffer, what: string) => {
      // Whole-buffer decoding.
      try {
        for (const r of decodeRecords(input, { file: 'fuzz' })) {
          try {
            registry.validate(r.meta, { file: 'fuzz' });
          } catch (e) {
            if (!(e instanceof ImageError)) throw e;
          }
        }
      } catch (e) {
        if (!(e instanceof ImageError)) assert.fail(`${what}: decodeRecords threw ${(e as Error)?.stack ?? String(e)}\ninput: ${input.toString('hex').slice(0, 400)}`);
      }
      // Incremental decoding in random chunks.
      const dec = new RecordDecoder({ file: 'fuzz' });
      try {
        for (let i = 0; i < input.length; ) {
          const n = 1 + Math.floor(rand() * 64);
          dec.push(input.subarray(i, i + n));
          i += n;
        }
        dec.end();
      } catch (e) {
        if (!(e instanceof ImageError)) assert.fail(`${what}: RecordDecoder threw ${(e as Error)?.stack ?? String(e)}`);
      }
    };
    let cases = 0;
    // Random bytes.
    for (let i = 0; i < 1500; i++, cases++) check(randomBytes(rand, Math.floor(rand() * 200)), `random #${i}`);
    // A valid frame header around random msgpack-ish bodies, so the msgpack decoder itself is fuzzed.
    for (let i = 0; i < 2500; i++, cases++) {
      const body = randomBytes(rand, 1 + Math.floor(rand() * 120));
      // Bias towards map headers and common msgpack type bytes.
      if (rand() < 0.7) body[0] = [0x80 | Math.floor(rand() * 16), 0xde, 0xdf, 0xc7, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc4, 0xd9][Math.floor(rand() * 11)]!;
      const h = Buffer.alloc(8);
      h.writeUInt32LE(body.length, 0);
      h.writeUInt32LE(rand() < 0.8 ? 0 : Math.floor(rand() * 16), 4);
      check(Buffer.concat([h, body, randomBytes(rand, Math.floor(rand() * 16))]), `framed random #${i}`);
    }
    // Every truncation of a valid stream must say 'truncated' (or decode the complete records before it).
    for (let cut = 0; cut < valid.length; cut++, cases++) {
      const input = valid.subarray(0, cut);
      let err: unknown = null;
      try {
        [...decodeRecords(input)];
      } catch (e) {
        err = e;
      }
      const boundary = [...decodeRecords(valid)].some((r) => r.end === cut) || cut === 0;
      if (boundary) assert.equal(err, null, `cut at ${cut} is a record boundary`);
      else assert.ok(err instanceof ImageError && err.reason === 'truncated', `cut at ${cut}: ${String(err)}`);
    }
    // Mutations of a valid stream: flipped bytes, inserted and deleted bytes.
    for (let i = 0; i < 2000; i++, cases++) {
      const m = Buffer.from(valid);
      const k = 1 + Math.floor(rand() * 4);
      for (let j = 0; j < k; j++) m[Math.floor(rand() * m.length)] = (rand() * 256) | 0;
      let input: Buffer = m;
      if (rand() < 0.2) {
        const at = Math.floor(rand() * m.length);
        input = Buffer.concat([m.subarray(0, at), randomBytes(rand, 1 + Math.floor(rand() * 8)), m.subarray(at)]);
      } else if (rand() < 0.2) {
        const at = Math.floor(rand() * m.length);
        input = Buffer.concat([m.subarray(0, at), m.subarray(at + 1 + Math.floor(rand() * 8))]);
      }
      check(input, `mutation #${i}`);
    }
    assert.ok(cases > 6000);
  });
});

describe('image format: entry registry', () => {
  it('refuses bad definitions', () => {
    const reg = new EntryRegistry();
    reg.define('fd', 1, z.object({ n: z.number() }));
    assert.throws(() => reg.define('fd', 2, z.object({})), /already defined/);
    assert.throws(() => reg.define('pages', 1, z.object({})), /reserved/);
    assert.throws(() => reg.define('Bad Name', 1, z.object({})), /must match/);
    assert.throws(() => reg.define('x', 0, z.object({})), /version/);
    assert.throws(() => reg.define('y', 1, z.object({ v: z.number() })), /"type" or "v"/);
    assert.deepEqual(reg.types(), ['fd']);
    assert.deepEqual(reg.versions('fd'), [1]);
    assert.deepEqual(reg.versions('nope'), []);
  });

  it('gives each entry a type, a builder and a guard', () => {
    const e = MemEntry.make({ name: 'stack', start: 0x7ffff000, pages: { offset: 0, runs: [-1] }, flags: 0n });
    const typed: { type: 'test-mem'; v: 2; name: string; flags: bigint } = e;
    assert.equal(typed.type, 'test-mem');
    const any: AnyEntry = e;
    assert.ok(MemEntry.is(any));
    assert.ok(!NoteEntry.is(any));
    assert.deepEqual(MemEntry.parse(any), e);
  });
});
