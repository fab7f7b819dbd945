/**
 * The entry-type registry: how resource modules plug into the image.
 *
 * Each resource declares its entry once, in src/image/<resource>.ts:
 *
 *     import { defineEntry, type Entry } from './entry.js';
 *     import { PageRunsField } from './pages.js';
 *
 *     export const VmaEntry = defineEntry('vma', 1, z.object({
 *       start: z.number().int(), end: z.number().int(), prot: z.number().int(),
 *       pages: PageRunsField,
 *     }));
 *     export type VmaEntry = Entry<typeof VmaEntry>;
 *
 * and gets the TypeScript type, a builder (`VmaEntry.make({...})`), a type
 * guard (`VmaEntry.is(e)`) and validation of everything read from disk or a
 * stream. Entry schemas are plain data (no transforms): parsing a parsed entry
 * must give the same entry. Unknown fields are refused: changing an entry's
 * fields in any way means a new version (docs/IMAGE-FORMAT.md, "Versioning").
 *
 * Older versions stay readable by registering an upgrade:
 *
 *     defineEntryUpgrade(VmaEntry, 1, z.object({...v1 fields}), (old) => ({...v2 fields}));
 *
 * The reader hands consumers only current-version entries.
 */
import { z } from 'zod';
import { RESERVED_RECORD_TYPES } from './constants.js';
import { ImageError } from './errors.js';
import { MAX_RECORD_VERSION, RECORD_TYPE_PATTERN, type RecordMeta } from './record.js';

/** Any entry: a record meta. Narrow it with `SomeEntry.is(e)`. */
export type AnyEntry = RecordMeta;

/** Schemas usable for an entry's fields: a zod object (strip/strict/loose all accepted; strictness is enforced). */
export type FieldsSchema = z.ZodObject<any, any>;

export type EntryOf<T extends string, V extends number, F extends FieldsSchema> = { type: T; v: V } & z.output<F>;

/** The TypeScript type of an entry declared with defineEntry: `Entry<typeof VmaEntry>`. */
export type Entry<D extends { readonly __entry: unknown }> = D['__entry'];

/** Where an entry was read from, for error messages. */
export interface EntrySource {
  file?: string;
  offset?: number;
  /** Index of the record in its file or stream (0 = the header record). */
  index?: number;
}

function at(src: EntrySource | undefined): string {
  if (!src) return 'entry';
  const parts = [src.file ?? 'record stream'];
  if (src.index !== undefined) parts.push(`record #${src.index}`);
  if (src.offset !== undefined) parts.push(`at byte ${src.offset}`);
  return parts.join(' ');
}

function issues(err: z.ZodError): string {
  const list = err.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.map(String).join('.') : '(entry)'}: ${i.message}`);
  if (err.issues.length > 5) list.push(`and ${err.issues.length - 5} more`);
  return list.join('; ');
}

function badEntry(src: EntrySource | undefined, msg: string, cause?: unknown): ImageError {
  return new ImageError('bad-entry', `${at(src)}: ${msg}`, { file: src?.file ?? 'record stream', offset: src?.offset, cause });
}

export class EntryDef<T extends string = string, V extends number = number, F extends FieldsSchema = FieldsSchema> {
  /** Phantom: the entry's TypeScript type. Use `Entry<typeof X>`. */
  declare readonly __entry: EntryOf<T, V, F>;
  private readonly strictFields: FieldsSchema;

  constructor(
    readonly type: T,
    readonly v: V,
    readonly fields: F,
  ) {
    this.strictFields = fields.strict();
  }

  /** Builds an entry from its fields (not validated here; ImageWriter.addEntry validates). */
  make(fields: z.output<F>): EntryOf<T, V, F> {
    return { ...fields, type: this.type, v: this.v } as EntryOf<T, V, F>;
  }

  is(e: { type: string; v: number }): e is EntryOf<T, V, F> {
    return e.type === this.type && e.v === this.v;
  }

  /** Validates an entry of this type and version; returns the parsed entry or throws ImageError('bad-entry'). */
  parse(e: AnyEntry, src?: EntrySource): EntryOf<T, V, F> {
    return parseFields(this.type, this.v, this.strictFields, e, src) as EntryOf<T, V, F>;
  }
}

function parseFields(type: string, v: number, schema: FieldsSchema, e: AnyEntry, src?: EntrySource): AnyEntry {
  if (e.type !== type || e.v !== v) {
    throw badEntry(src, `expected entry "${type}" v${v}, got "${e.type}" v${e.v}`);
  }
  const { type: _t, v: _v, ...rest } = e;
  const r = schema.safeParse(rest);
  if (!r.success) throw badEntry(src, `entry "${type}" v${v} is invalid: ${issues(r.error)}`, r.error);
  return { type, v, ...(r.data as object) };
}

interface Upgrade {
  v: number;
  fields: FieldsSchema;
  upgrade: (old: AnyEntry) => Record<string, unknown>;
}

export class EntryRegistry {
  private readonly current = new Map<string, EntryDef>();
  private readonly upgrades = new Map<string, Map<number, Upgrade>>();

  /** Declares the current version of an entry type. One current version per type. */
  define<const T extends string, const V extends number, F extends FieldsSchema>(type: T, v: V, fields: F): EntryDef<T, V, F> {
    if (!RECORD_TYPE_PATTERN.test(type)) {
      throw new Error(`entry type name ${JSON.stringify(type)} must match ${RECORD_TYPE_PATTERN}`);
    }
    if (RESERVED_RECORD_TYPES.includes(type)) {
      throw new Error(`entry type name "${type}" is reserved by the image format`);
    }
    if (!Number.isInteger(v) || v < 1 || v > MAX_RECORD_VERSION) {
      throw new Error(`entry "${type}": version must be an integer >= 1 (got ${v})`);
    }
    const prev = this.current.get(type);
    if (prev) {
      throw new Error(`entry "${type}" is already defined (v${prev.v}); declare older versions with defineEntryUpgrade`);
    }
    if (this.upgrades.get(type)?.has(v)) {
      throw new Error(`entry "${type}" v${v} is already registered as an old version`);
    }
    if (!('shape' in fields) || typeof (fields as { strict?: unknown }).strict !== 'function') {
      throw new Error(`entry "${type}": fields must be a zod object schema`);
    }
    if ('type' in fields.shape || 'v' in fields.shape) {
      throw new Error(`entry "${type}": fields may not be named "type" or "v" (they are added by defineEntry)`);
    }
    const def = new EntryDef(type, v, fields);
    this.current.set(type, def as unknown as EntryDef);
    return def;
  }

  /**
   * Keeps an older version of an entry readable: `fields` is the old schema,
   * `upgrade` turns an old entry into the current version's fields.
   */
  defineUpgrade<D extends EntryDef, F extends FieldsSchema>(
    current: D,
    fromVersion: number,
    fields: F,
    upgrade: (old: { type: D['type']; v: number } & z.output<F>) => Omit<Entry<D>, 'type' | 'v'>,
  ): void {
    if (this.current.get(current.type) !== (current as EntryDef)) {
      throw new Error(`entry "${current.type}" is not defined in this registry`);
    }
    if (!Number.isInteger(fromVersion) || fromVersion < 1 || fromVersion >= current.v) {
      throw new Error(`entry "${current.type}": an upgrade must come from a version below ${current.v} (got ${fromVersion})`);
    }
    let m = this.upgrades.get(current.type);
    if (!m) this.upgrades.set(current.type, (m = new Map()));
    if (m.has(fromVersion)) throw new Error(`entry "${current.type}" v${fromVersion} already has an upgrade`);
    m.set(fromVersion, {
      v: fromVersion,
      fields: fields.strict(),
      upgrade: upgrade as unknown as Upgrade['upgrade'],
    });
  }

  /** The current definition of a type, if any. */
  get(type: string): EntryDef | undefined {
    return this.current.get(type);
  }

  /** Registered type names, sorted. */
  types(): string[] {
    return [...this.current.keys()].sort();
  }

  /** Versions of `type` this registry reads, ascending (empty if unknown). */
  versions(type: string): number[] {
    const def = this.current.get(type);
    if (!def) return [];
    return [...(this.upgrades.get(type)?.keys() ?? []), def.v].sort((a, b) => a - b);
  }

  /**
   * Validates an entry read from disk or a stream and returns it at the
   * current version of its type. Throws ImageError: 'unknown-entry' (type not
   * registered), 'unsupported-version' (version not readable), 'bad-entry'.
   */
  validate(e: AnyEntry, src?: EntrySource): AnyEntry {
    const def = this.current.get(e.type);
    if (!def) {
      const known = this.types();
      throw new ImageError(
        'unknown-entry',
        `${at(src)}: entry type "${e.type}" (v${e.v}) is unknown to this Ferry` +
          (known.length ? ` (it knows ${known.length} types: ${known.slice(0, 12).join(', ')}${known.length > 12 ? ', …' : ''})` : ' (no entry types registered)'),
        { file: src?.file ?? 'record stream', offset: src?.offset },
      );
    }
    if (e.v === def.v) return def.parse(e, src);
    const up = this.upgrades.get(e.type)?.get(e.v);
    if (!up) {
      const vs = this.versions(e.type);
      throw new ImageError(
        'unsupported-version',
        `${at(src)}: entry "${e.type}" version ${e.v} is not supported by this Ferry (it reads version${vs.length > 1 ? 's' : ''} ${vs.join(', ')}` +
          (e.v > def.v ? '; the image was written by a newer Ferry)' : ')'),
        { file: src?.file ?? 'record stream', offset: src?.offset },
      );
    }
    const old = parseFields(e.type, e.v, up.fields, e, src);
    let fields: Record<string, unknown>;
    try {
      fields = up.upgrade(old);
    } catch (err) {
      throw badEntry(src, `entry "${e.type}" v${e.v} could not be upgraded to v${def.v}: ${(err as Error)?.message ?? String(err)}`, err);
    }
    return def.parse({ ...fields, type: def.type, v: def.v }, src);
  }
}

/** The registry resource modules register into, and ImageReader/ImageWriter use by default. */
export const defaultRegistry = new EntryRegistry();

/** Declares an entry type in the default registry. See the module comment. */
export function defineEntry<const T extends string, const V extends number, F extends FieldsSchema>(type: T, v: V, fields: F): EntryDef<T, V, F> {
  return defaultRegistry.define(type, v, fields);
}

/** Registers an upgrade from an older version of an entry in the default registry. */
export function defineEntryUpgrade<D extends EntryDef, F extends FieldsSchema>(
  current: D,
  fromVersion: number,
  fields: F,
  upgrade: (old: { type: D['type']; v: number } & z.output<F>) => Omit<Entry<D>, 'type' | 'v'>,
): void {
  defaultRegistry.defineUpgrade(current, fromVersion, fields, upgrade);
}
