/**
 * The messages agents and the CLI exchange above the transport. Requests
 * are answered with plain objects (their shapes are the `…Reply` types);
 * one-way messages carry a migration's progress to whoever started it.
 */
import { z } from 'zod';
import { defineMessage } from '../transport/index.js';
import { ContainerSpecSchema } from '../container/spec.js';
import { HostNeeds } from './checks.js';

const Id = z.string().regex(/^[0-9a-f]{12}$/, 'a migration id (12 hex digits)');
const HostRef = z.strictObject({ host: z.string().min(1).max(255), address: z.string().min(1).max(300) });
const Name = z.string().min(1).max(64);

// ---- CLI → agent

export const PsRequest = defineMessage('ps', z.object({}));
export const RunRequest = defineMessage('container.run', z.object({ spec: ContainerSpecSchema }));
export const StopRequest = defineMessage('container.stop', z.object({ name: Name, timeoutMs: z.number().int().nonnegative() }));
/** How a migration copies memory: live pre-copy rounds within a downtime budget, or cold (frozen for the whole copy). */
export const MigrationOptions = z.strictObject({
  live: z.boolean(),
  maxDowntimeMs: z.number().int().positive().max(3_600_000),
  maxRounds: z.number().int().min(1).max(1000),
  minRounds: z.number().int().min(1).max(1000),
  throttle: z.boolean(),
  strictDowntime: z.boolean(),
});
export type MigrationOptions = z.infer<typeof MigrationOptions>;
export const DEFAULT_MIGRATION_OPTIONS: MigrationOptions = { live: true, maxDowntimeMs: 100, maxRounds: 30, minRounds: 1, throttle: true, strictDowntime: false };

export const MigrateRequest = defineMessage('migration.start', z.object({ container: Name, to: HostRef, options: MigrationOptions }));
export const StatusRequest = defineMessage('migration.status', z.object({ id: Id.nullable() }));
export const CancelRequest = defineMessage('migration.cancel', z.object({ id: Id }));

// ---- replies

/** The reply of requests that only succeed or fail. */
export const Ok = defineMessage('ok', z.object({}));
export const PsReply = defineMessage('ps.reply', z.object({ host: z.string(), containers: z.array(z.record(z.string(), z.unknown())) }));
export const RunReply = defineMessage('container.run.reply', z.object({ container: z.record(z.string(), z.unknown()) }));
export const StopReply = defineMessage('container.stop.reply', z.object({ report: z.record(z.string(), z.unknown()) }));
export const MigrationStarted = defineMessage('migration.started', z.object({ id: Id }));
export const StatusReply = defineMessage('migration.status.reply', z.object({ host: z.string(), migrations: z.array(z.record(z.string(), z.unknown())) }));
export const CancelReply = defineMessage('migration.cancel.reply', z.object({ id: Id, phase: z.string() }));
export const OutcomeReply = defineMessage('migration.outcome.reply', z.object({ phase: z.string() }));
export const RestoreReply = defineMessage('target.restore.reply', z.object({ pid: z.number().int().positive(), pids: z.array(z.number().int().positive()), restoreMs: z.number() }));

/** The image's two data files travel as two streams of the channel, with the migration id as their meta. */
export const IMAGE_STREAMS = { 'entries.bin': 'image.entries', 'pages.bin': 'image.pages' } as const;
export const ImageStreamMeta = z.strictObject({ id: Id });

// ---- agent → CLI (one-way, on the channel that started the migration)

/** One pre-copy round, as the source measured it. */
export const RoundEvent = z.strictObject({
  round: z.number().int().nonnegative(),
  pages: z.number().int().nonnegative(),
  bytes: z.number().nonnegative(),
  ms: z.number().nonnegative(),
  /** Pages written while the round ran. */
  dirtiedPages: z.number().int().nonnegative(),
  /** MB/s. */
  dirtyRate: z.number().nonnegative(),
  bandwidth: z.number().nonnegative(),
  predictedDowntimeMs: z.number().nonnegative(),
  /** The CPU share auto-converge left the container, or null when it is not throttled. */
  cpuFraction: z.number().positive().max(1).nullable(),
  decision: z.string(),
});
export type RoundEvent = z.infer<typeof RoundEvent>;

export const Progress = defineMessage('migration.progress', z.object({ id: Id, phase: z.string(), at: z.number(), round: RoundEvent.optional(), note: z.string().optional() }));
export const Finished = defineMessage('migration.finished', z.object({ report: z.record(z.string(), z.unknown()) }));

// ---- source agent → target agent

export const PrepareRequest = defineMessage('target.prepare', z.object({ id: Id, needs: HostNeeds, source: HostRef }));
export const ImageComplete = defineMessage('target.image', z.object({ id: Id, manifest: z.record(z.string(), z.unknown()) }));
export const RestoreRequest = defineMessage('target.restore', z.object({ id: Id }));
export const ResumeRequest = defineMessage('target.resume', z.object({ id: Id }));
export const DiscardRequest = defineMessage('target.discard', z.object({ id: Id, reason: z.string().max(4096) }));

// ---- target agent → source agent (recovery)

export const OutcomeRequest = defineMessage('migration.outcome', z.object({ id: Id }));

export type ProgressEvent = { id: string; phase: string; at: number; round?: RoundEvent; note?: string };

/** What a finished migration reports, on success or after a rollback. */
export interface MigrationReport {
  id: string;
  container: string;
  from: string;
  to: string;
  outcome: 'done' | 'rolled-back';
  /** Why it rolled back. */
  error: string | null;
  totalMs: number;
  /** From the freeze until the copy on the target runs: the downtime. */
  frozenMs: number | null;
  /** Page data streamed (zero pages travel as counts). */
  bytes: number | null;
  pages: number | null;
  zeroPages: number | null;
  /** The container's processes on the target, as host pids there. */
  pids: number[] | null;
  phases: Array<{ phase: string; ms: number }>;
  /** Live migrations: every pre-copy round, the dirty-tracking method, and whether the downtime budget held. */
  live: { method: string; rounds: RoundEvent[]; budgetMs: number; fits: boolean | null; throttled: boolean; precopiedPages: number } | null;
}
