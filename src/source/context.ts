import type { Injector } from '../native/inject.js';
import type { ImageWriter } from '../image/format.js';
import type { SentPages } from '../precopy/sent.js';

/** Totals a checkpoint reports. */
export interface DumpStats {
  /** Pages the image describes as private data (stored or counted as zero). */
  pages: number;
  dataPages: number;
  zeroPages: number;
  /** Of `pages`, those whose copy a pre-copy round had already sent: referred to, not read at the freeze. */
  precopiedPages: number;
}

/** What every resource's dump gets: a stopped process, an injector into it, and the image being written. */
export interface DumpContext {
  pid: number;
  /** Injects into the stopped thread-group leader; its scratch mapping is Ferry's, not the process's. */
  injector: Injector;
  /** Every thread, the leader first, each with its own injector (sharing the leader's scratch). */
  threads: Array<{ tid: number; injector: Injector }>;
  image: ImageWriter;
  stats: DumpStats;
  /** Shared-memory objects already in the image, by dev:inode, so fds and mappings of one memfd share one entry. */
  shmemIds: Map<string, number>;
  /** Every process this image holds: whatever they share with each other travels; sharing with anything else is refused. */
  scope: Set<number>;
  /** Open file descriptions already in the image, image-wide: a fork shares them between processes. */
  fileIds: Array<{ id: number; pid: number; fd: number; link: string }>;
  /** Pipes and unlinked files already in the image, image-wide, by their kernel identity. */
  pipeIds: Map<string, number>;
  ghostIds: Map<string, number>;
  /** After pre-copy: the pages of this process already in the image and still clean. */
  sent?: SentPages;
}

/** A range of the task's address space that Ferry itself mapped (the injection scratch). */
export function ferryRanges(ctx: DumpContext): Array<{ start: number; end: number }> {
  const r = ctx.injector.scratchRange;
  return r ? [r] : [];
}
