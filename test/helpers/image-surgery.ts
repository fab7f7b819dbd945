import fs from 'node:fs';
import { ImageReader, ImageWriter } from '../../src/image/format.js';
import type { AnyEntry } from '../../src/image/entry.js';
import '../../src/image/all.js';

/**
 * Writes a copy of an image with its entries changed by `edit` (return null
 * to drop an entry). Page data is copied as is, so page offsets stay valid.
 * The copy is a consistent, correctly checksummed image: what it lacks is
 * state, which is exactly what a restore that skips a resource would lose.
 */
export async function rewriteImage(from: string, to: string, edit: (e: AnyEntry) => AnyEntry | null): Promise<void> {
  const reader = await ImageReader.open(from);
  try {
    const writer = await ImageWriter.create(to, { fsync: false });
    const pages = fs.readFileSync(`${from}/pages.bin`);
    if (pages.length) await writer.writePages(pages);
    for (const e of reader.entries()) {
      const changed = edit(structuredClone(e));
      if (changed) writer.addEntry(changed);
    }
    await writer.finish(reader.manifest.meta);
  } finally {
    await reader.close();
  }
}
