/**
 * Page runs: how an entry describes a range of memory pages.
 *
 * A range of N pages is a list of runs, in address order:
 *   {kind: 'zero', pages}          pages that are all zero: stored as a count, no bytes
 *   {kind: 'data', pages, offset}  pages whose bytes are in pages.bin at `offset`
 *
 * In an entry, runs are stored packed (PageRunsField): one signed integer per
 * run (negative = zero run of -n pages, positive = data run of n pages) and
 * one pages.bin offset; the data runs of one range lie back to back in
 * pages.bin, which ImageWriter.writePageRuns guarantees.
 *
 * Zero detection compares against a shared zero block with Buffer.compare
 * (memcmp): 12-23 GiB/s here, against ~10 GiB/s for a BigUint64Array loop.
 */
import { z } from 'zod';
import { PAGE_SIZE } from './constants.js';

export type PageRun = { kind: 'zero'; pages: number } | { kind: 'data'; pages: number; offset: number };

/** A stretch of a buffer: `pages` pages starting at page index `first`, all zero or all non-zero. */
export interface PageSpan {
  zero: boolean;
  first: number;
  pages: number;
}

/** The packed form of a run list, as stored in entries. */
export interface PackedPageRuns {
  /** pages.bin offset of the first data run (0 if there is none). */
  offset: number;
  /** One per run: -n = n zero pages, +n = n data pages. Never 0. */
  runs: number[];
}

/** zod field for packed page runs; use it in entry schemas. */
export const PageRunsField = z.strictObject({
  offset: z.number().int().nonnegative().multipleOf(PAGE_SIZE),
  runs: z.array(z.number().int().refine((n) => n !== 0, 'a run of 0 pages')),
});

const ZERO_BLOCK_PAGES = 16;
const ZERO_BLOCK = Buffer.alloc(PAGE_SIZE * ZERO_BLOCK_PAGES);

function asBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

function checkPageMultiple(buf: Uint8Array): number {
  if (buf.length % PAGE_SIZE !== 0) {
    throw new RangeError(`page buffer of ${buf.length} bytes is not a multiple of ${PAGE_SIZE}`);
  }
  return buf.length / PAGE_SIZE;
}

/** True if page `index` of `buf` is all zero bytes. */
export function isZeroPage(buf: Uint8Array, index = 0): boolean {
  const start = index * PAGE_SIZE;
  if (start + PAGE_SIZE > buf.length) throw new RangeError(`page ${index} is beyond a buffer of ${buf.length} bytes`);
  return asBuffer(buf).compare(ZERO_BLOCK, 0, PAGE_SIZE, start, start + PAGE_SIZE) === 0;
}

/** True if every byte of `buf` is zero. */
export function isAllZero(buf: Uint8Array): boolean {
  const b = asBuffer(buf);
  for (let off = 0; off < b.length; off += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - off);
    if (b.compare(ZERO_BLOCK, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

/**
 * Splits a page-aligned buffer into alternating spans of zero and non-zero
 * pages. The buffer's length must be a multiple of PAGE_SIZE.
 */
export function scanPages(buf: Uint8Array): PageSpan[] {
  const n = checkPageMultiple(buf);
  const b = asBuffer(buf);
  const spans: PageSpan[] = [];
  let cur: PageSpan | null = null;
  let i = 0;
  while (i < n) {
    // Try a whole block of zero pages at once: one memcmp instead of 16 calls.
    let zero: boolean;
    let count = 1;
    if (i + ZERO_BLOCK_PAGES <= n && b.compare(ZERO_BLOCK, 0, ZERO_BLOCK.length, i * PAGE_SIZE, (i + ZERO_BLOCK_PAGES) * PAGE_SIZE) === 0) {
      zero = true;
      count = ZERO_BLOCK_PAGES;
    } else {
      zero = b.compare(ZERO_BLOCK, 0, PAGE_SIZE, i * PAGE_SIZE, (i + 1) * PAGE_SIZE) === 0;
    }
    if (cur && cur.zero === zero) {
      cur.pages += count;
    } else {
      cur = { zero, first: i, pages: count };
      spans.push(cur);
    }
    i += count;
  }
  return spans;
}

/** Totals of a run list. */
export function countPageRuns(runs: readonly PageRun[]): { pages: number; dataPages: number; zeroPages: number } {
  let dataPages = 0;
  let zeroPages = 0;
  for (const r of runs) {
    if (r.kind === 'data') dataPages += r.pages;
    else zeroPages += r.pages;
  }
  return { pages: dataPages + zeroPages, dataPages, zeroPages };
}

/**
 * Packs a run list for storing in an entry. Adjacent runs of the same kind are
 * merged; data runs must be back to back in pages.bin (RangeError otherwise).
 */
export function packPageRuns(runs: readonly PageRun[]): PackedPageRuns {
  const out: number[] = [];
  let offset = -1;
  let next = -1;
  for (const r of runs) {
    if (!Number.isInteger(r.pages) || r.pages < 0) throw new RangeError(`page run of ${r.pages} pages`);
    if (r.pages === 0) continue;
    if (r.kind === 'data') {
      if (offset < 0) {
        offset = next = r.offset;
      } else if (r.offset !== next) {
        throw new RangeError(`data runs are not contiguous in pages.bin (expected offset ${next}, got ${r.offset})`);
      }
      next += r.pages * PAGE_SIZE;
    }
    const signed = r.kind === 'data' ? r.pages : -r.pages;
    const last = out.length - 1;
    if (last >= 0 && Math.sign(out[last]!) === Math.sign(signed)) out[last] = out[last]! + signed;
    else out.push(signed);
  }
  return { offset: offset < 0 ? 0 : offset, runs: out };
}

/** Unpacks the stored form into a run list with explicit offsets. */
export function unpackPageRuns(packed: PackedPageRuns): PageRun[] {
  const runs: PageRun[] = [];
  let offset = packed.offset;
  for (const n of packed.runs) {
    if (n > 0) {
      runs.push({ kind: 'data', pages: n, offset });
      offset += n * PAGE_SIZE;
    } else if (n < 0) {
      runs.push({ kind: 'zero', pages: -n });
    }
  }
  return runs;
}
