/**
 * What pre-copy rounds already put into the image for one process: for
 * each page, where its latest copy is in pages.bin (or that it was zero).
 * A page written after its copy was taken is forgotten (its copy is stale)
 * and travels again, in a later round or at the freeze. At the freeze the
 * memory dump refers to the copies of every page still known here instead
 * of reading and sending it again: that is the whole point of pre-copy.
 */
import { PAGE_SIZE } from '../image/constants.js';
import type { PageRun } from '../image/pages.js';

/** The page was all zero when copied: it travels as a count, not bytes. */
const ZERO = -1;

export class SentPages {
  private readonly pages = new Map<number, number>();

  get size(): number {
    return this.pages.size;
  }

  /** The runs a write of the pages from `addr` on produced: page after page, data at its offset or zero. */
  record(addr: number, runs: readonly PageRun[]): void {
    let page = addr;
    for (const r of runs) {
      for (let i = 0; i < r.pages; i++, page += PAGE_SIZE) this.pages.set(page, r.kind === 'zero' ? ZERO : r.offset + i * PAGE_SIZE);
    }
  }

  /** The pages of [addr, addr + pages) were written since their copy was taken. */
  forget(addr: number, pages: number): void {
    for (let i = 0; i < pages; i++) this.pages.delete(addr + i * PAGE_SIZE);
  }

  /** Where the copy of the page at `addr` is: an offset, 'zero', or undefined when it must travel. */
  lookup(addr: number): number | 'zero' | undefined {
    const at = this.pages.get(addr);
    return at === ZERO ? 'zero' : at;
  }
}
