/**
 * The one error type of the image layer. Every problem with an image on disk
 * or a record stream is an ImageError with a machine-readable `reason` and a
 * message that names the file (or stream) and what is wrong with it.
 */

export type ImageErrorReason =
  /** No image here: the directory or its manifest.json is missing. */
  | 'not-an-image'
  /** manifest.json is not valid JSON or lacks required fields. */
  | 'bad-manifest'
  /** The manifest names a format other than "ferry-image". */
  | 'unknown-format'
  /** The format version, or an entry's version, is not one this Ferry reads. */
  | 'unsupported-version'
  /** A file's sha256 (or size larger than recorded) does not match the manifest. */
  | 'checksum-mismatch'
  /** A file or stream ends before the data it must hold. */
  | 'truncated'
  /** A file the manifest lists is not in the directory. */
  | 'missing-file'
  /** A record cannot be decoded, or its fields fail the entry's schema. */
  | 'bad-entry'
  /** An entry type no registered resource module knows. */
  | 'unknown-entry'
  /** A page reference points outside pages.bin. */
  | 'out-of-range'
  /** ImageWriter: the target exists and is not an empty directory. */
  | 'exists';

export interface ImageErrorDetails {
  /** File name inside the image (e.g. "pages.bin"), or a stream name. */
  file?: string;
  /** Byte offset in that file or stream, where it helps. */
  offset?: number;
  cause?: unknown;
}

export class ImageError extends Error {
  override name = 'ImageError';
  readonly reason: ImageErrorReason;
  readonly file: string | undefined;
  readonly offset: number | undefined;

  constructor(reason: ImageErrorReason, message: string, details: ImageErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.reason = reason;
    this.file = details.file;
    this.offset = details.offset;
  }
}
