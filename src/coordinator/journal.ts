/**
 * The migration journal: one JSON file per migration in the agent's state
 * directory, rewritten atomically (temp file, fsync, rename) *before* each
 * phase begins. Whatever dies — the source agent, the target agent, the
 * CLI — the journal says how far the migration got, and recovery
 * (recovery.ts) resolves it to exactly one running copy.
 *
 * The source's journal is the single source of truth: the target resumes
 * its copy only when the source's journal says `committed`, and the source
 * writes `committed` only after the target holds a complete, frozen copy.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { RestoredContainer } from '../container/runtime.js';

export const SOURCE_PHASES = ['checking', 'precopy', 'streaming', 'restoring', 'committed', 'done', 'rolled-back'] as const;
export const TARGET_PHASES = ['receiving', 'restoring', 'restored', 'resumed', 'discarded'] as const;
export type SourcePhase = (typeof SOURCE_PHASES)[number];
export type TargetPhase = (typeof TARGET_PHASES)[number];
export type Phase = SourcePhase | TargetPhase;

/** Phases after which nothing more happens. */
const FINAL: ReadonlySet<Phase> = new Set<Phase>(['done', 'rolled-back', 'resumed', 'discarded']);

const PhaseRecord = z.strictObject({ phase: z.string(), at: z.string() });

export const JournalRecord = z.strictObject({
  version: z.literal(1),
  id: z.string().regex(/^[0-9a-f]{12}$/),
  role: z.enum(['source', 'target']),
  container: z.string(),
  /** Host names as the inventory knows them. */
  source: z.strictObject({ host: z.string(), address: z.string() }),
  target: z.strictObject({ host: z.string(), address: z.string() }),
  phase: z.string(),
  history: z.array(PhaseRecord),
  /** Why it was rolled back or discarded. */
  error: z.string().nullable(),
  /** The report of a finished migration (source), free-form JSON. */
  report: z.record(z.string(), z.unknown()).nullable(),
  /** Target: the restored copy (frozen until the source commits): its init's pid and what runtime.recordRestored needs. */
  restored: z.strictObject({ pid: z.number().int().positive(), container: z.custom<RestoredContainer>((v) => typeof v === 'object' && v !== null) }).nullable(),
});
export type JournalRecord = z.infer<typeof JournalRecord>;

export function newMigrationId(): string {
  return randomBytes(6).toString('hex');
}

export function isFinal(phase: string): boolean {
  return FINAL.has(phase as Phase);
}

export class Journal {
  constructor(readonly dir: string) {}

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** Writes the record durably: a crash leaves either the old or the new one, never half of either. */
  write(record: JournalRecord): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const file = this.file(record.id);
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, JSON.stringify(record, null, 2) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    const dirFd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  }

  create(fields: Omit<JournalRecord, 'version' | 'phase' | 'history' | 'error' | 'report' | 'restored'> & { phase: Phase }): JournalRecord {
    const record: JournalRecord = { version: 1, ...fields, history: [{ phase: fields.phase, at: new Date().toISOString() }], error: null, report: null, restored: null };
    this.write(record);
    return record;
  }

  /** Records that `phase` begins (and anything else that changed), durably, and returns the new record. */
  advance(record: JournalRecord, phase: Phase, changes: Partial<Pick<JournalRecord, 'error' | 'report' | 'restored'>> = {}): JournalRecord {
    const next: JournalRecord = { ...record, ...changes, phase, history: [...record.history, { phase, at: new Date().toISOString() }] };
    this.write(next);
    return next;
  }

  /** Saves changes without a new phase (the final report, say). */
  update(record: JournalRecord, changes: Partial<Pick<JournalRecord, 'error' | 'report' | 'restored'>>): JournalRecord {
    const next = { ...record, ...changes };
    this.write(next);
    return next;
  }

  read(id: string): JournalRecord | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file(id), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const parsed = JournalRecord.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error(`${this.file(id)}: not a migration journal this Ferry reads: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  /** Every migration on record, newest first. */
  list(): JournalRecord[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: JournalRecord[] = [];
    for (const n of names) {
      const m = /^([0-9a-f]{12})\.json$/.exec(n);
      if (!m) continue;
      const r = this.read(m[1]!);
      if (r) out.push(r);
    }
    return out.sort((a, b) => (b.history[0]!.at < a.history[0]!.at ? -1 : 1));
  }
}
