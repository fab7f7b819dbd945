/**
 * Constants of the Ferry image container format. See docs/IMAGE-FORMAT.md.
 *
 * Changing any of these values changes the format: bump FORMAT_VERSION.
 */

/** The `format` field of every manifest.json. Never changes. */
export const FORMAT_NAME = 'ferry-image';

/** The container format version this Ferry writes. */
export const FORMAT_VERSION = 1;

/** Container format versions this Ferry reads. */
export const SUPPORTED_FORMAT_VERSIONS: readonly number[] = [1];

/** Size of one page in pages.bin and in page runs. x86_64 only, for now. */
export const PAGE_SIZE = 4096;

/** File names inside an image directory. */
export const MANIFEST_FILE = 'manifest.json';
export const ENTRIES_FILE = 'entries.bin';
export const PAGES_FILE = 'pages.bin';
/** Suffix of files being written; renamed away by ImageWriter.finish(). */
export const TEMP_SUFFIX = '.tmp';

/** Record frame limits: anything larger is refused as corrupt. */
export const RECORD_PREFIX_BYTES = 8;
export const MAX_RECORD_META_BYTES = 16 * 1024 * 1024;
export const MAX_RECORD_DATA_BYTES = 64 * 1024 * 1024;

/** manifest.json larger than this is refused without parsing. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
/** entries.bin is read into memory whole; larger than this is refused. */
export const MAX_ENTRIES_FILE_BYTES = 1024 * 1024 * 1024;

/**
 * Record types used by the container itself; resource entries may not use them.
 *  - `image`: the first record of every record stream (and of entries.bin).
 *  - `pages`: page data in a live stream (never in entries.bin).
 *  - `end`:   the last record of a live stream, carrying the manifest.
 */
export const RESERVED_RECORD_TYPES: readonly string[] = ['image', 'pages', 'end'];
