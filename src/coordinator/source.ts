/**
 * A migration as the source agent runs it (cold: the container is frozen
 * from the first page to the cutover; pre-copy comes with src/precopy):
 *
 *   checking   the target checks what the container needs, nothing is touched
 *   streaming  freeze; the image streams into the target's memory; the
 *              container stays frozen here (holdFrozen)
 *   restoring  the target restores it, frozen
 *   committed  the point of no return: the target holds a complete copy,
 *              so the source copy is killed
 *   done       the target's copy runs
 *
 * Each phase is journaled before it begins. Any failure before
 * `committed` rolls back (`rolled-back`): the target discards, the source
 * thaws, and the workload never ran anywhere else. After `committed`, the
 * source keeps telling the target to resume until it has.
 */
import { MessageChannel } from 'node:worker_threads';
import { ENTRIES_FILE, PAGES_FILE } from '../image/constants.js';
import type { ImageSink, Manifest } from '../image/format.js';
import { servePortSink } from '../image/port-sink.js';
import { availableParallelism } from 'node:os';
import { clearCpuLimit, listPids, memoryUsage, setCpuLimit } from '../native/cgroup.js';
import { ConvergencePolicy } from '../precopy/policy.js';
import type { RoundStats } from '../precopy/session.js';
import type { Tracer } from '../native/tracer.js';
import { killHeld, releaseHeld } from '../container/runtime.js';
import { containerStatus, readState, type ContainerState } from '../container/state.js';
import { referencedFiles } from '../source/memory.js';
import type { CheckpointSummary } from '../source/checkpoint.js';
import type { Channel, StreamWriter } from '../transport/index.js';
import { describeNeeds } from './checks.js';
import { Journal, newMigrationId, type JournalRecord, type SourcePhase } from './journal.js';
import { MigrationError } from './errors.js';
import { faultPoint } from './faults.js';
import {
  DiscardRequest,
  IMAGE_STREAMS,
  ImageComplete,
  Ok,
  PrepareRequest,
  RestoreReply,
  RestoreRequest,
  ResumeRequest,
  type MigrationOptions,
  type MigrationReport,
  type ProgressEvent,
  type RoundEvent,
} from './messages.js';

/** What a migration needs from the agent that runs it. */
export interface SourceAgent {
  name: string;
  address: string;
  journal: Journal;
  tracer: Tracer;
  /** An authenticated channel to another agent. */
  connect(address: string): Promise<Channel>;
  log(line: string): void;
}

/** How long the target may take to check, to restore and to resume. */
const CHECK_TIMEOUT_MS = 60_000;
const RESTORE_TIMEOUT_MS = 120_000;
const RESUME_TIMEOUT_MS = 30_000;

export class SourceMigration {
  private record: JournalRecord;
  private cancelled: string | null = null;
  /** The image's streams while the checkpoint writes into them: what a cancel must cut. */
  private sink: ChannelImageSink | null = null;
  private readonly phases: Array<{ phase: string; ms: number }> = [];
  private live: LiveReport | null = null;
  /** The pre-copy session on the tracer thread is open: a rollback must take its tracking off. */
  private precopyOpen = false;
  readonly done: Promise<MigrationReport>;
  private resolveDone!: (r: MigrationReport) => void;

  private constructor(
    private readonly agent: SourceAgent,
    private readonly container: ContainerState,
    to: { host: string; address: string },
    private readonly options: MigrationOptions,
    private readonly progress: (e: ProgressEvent) => void,
  ) {
    this.record = agent.journal.create({
      id: newMigrationId(),
      role: 'source',
      container: container.name,
      source: { host: agent.name, address: agent.address },
      target: to,
      phase: 'checking',
    });
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  get id(): string {
    return this.record.id;
  }

  get phase(): string {
    return this.record.phase;
  }

  get containerName(): string {
    return this.container.name;
  }

  /** Starts moving `name` to `to`; the returned migration runs on by itself (its `done` settles with the report). */
  static start(agent: SourceAgent, name: string, to: { host: string; address: string }, options: MigrationOptions, progress: (e: ProgressEvent) => void): SourceMigration {
    const state = readState(name);
    if (!state || containerStatus(state) === 'exited') throw new MigrationError('NO_CONTAINER', `no container named "${name}" runs on ${agent.name}`);
    if (containerStatus(state) === 'frozen') throw new MigrationError('BUSY', `container "${name}" on ${agent.name} is frozen (another migration or checkpoint holds it)`);
    if (to.host === agent.name) throw new MigrationError('SAME_HOST', `container "${name}" already runs on ${agent.name}`);
    const m = new SourceMigration(agent, state, to, options, progress);
    void m.run().then((r) => m.resolveDone(r));
    return m;
  }

  /** Asks for a rollback; honoured at the next step, up to the commit. */
  cancel(reason: string): boolean {
    if (['committed', 'done', 'rolled-back'].includes(this.record.phase)) return false;
    this.cancelled = reason;
    // The checkpoint waits inside the stream for credit (a slow or stalled target) and would reach no next step:
    // its pending write rejects, the checkpoint lets the container go, and the rollback follows.
    this.sink?.abort(`cancelled: ${reason}`);
    return true;
  }

  private enter(phase: SourcePhase, changes: Partial<Pick<JournalRecord, 'error' | 'report'>> = {}): void {
    this.record = this.agent.journal.advance(this.record, phase, changes);
    this.progress({ id: this.id, phase, at: Date.now() });
  }

  private checkCancel(): void {
    if (this.cancelled) throw new MigrationError('CANCELLED', `cancelled: ${this.cancelled}`);
  }

  private async run(): Promise<MigrationReport> {
    const started = performance.now();
    let mark = started;
    const lap = (phase: string) => {
      const now = performance.now();
      this.phases.push({ phase, ms: now - mark });
      mark = now;
    };
    let peer: Channel | null = null;
    let held = false;
    let checkpoint: CheckpointSummary | null = null;
    let frozenAt = 0;
    try {
      const { container } = this;
      const target = this.record.target;
      peer = await this.agent.connect(target.address);
      const pids = listPids(container.cgroup);
      const files = [...new Map(pids.flatMap((p) => referencedFiles(p)).map((f) => [f.path, f])).values()];
      const needs = describeNeeds(container.name, memoryUsage(container.cgroup) ?? 0, files);
      await peer.request(PrepareRequest.make({ id: this.id, needs, source: this.record.source }), Ok, CHECK_TIMEOUT_MS);
      lap('check');
      this.checkCancel();

      const sink = (this.sink = new ChannelImageSink(peer, this.id, target.host));
      const where = `${target.host} (migration ${this.id})`;
      const checkpointOptions = { container, holdFrozen: true, ...(this.options.live ? { precopy: this.id } : {}) };
      if (this.options.live) {
        this.enter('precopy');
        this.live = await this.precopy(sink, where, pids);
        lap('pre-copy');
        this.checkCancel();
      }
      this.enter('streaming');
      const checkpointStarted = performance.now();
      if (this.options.live) {
        // The image was opened by the pre-copy, whose sink carries on into the checkpoint.
        checkpoint = await this.agent.tracer.call<CheckpointSummary>('checkpoint', container.pid, '', checkpointOptions);
      } else {
        const { port1, port2 } = new MessageChannel();
        servePortSink(port1, sink).catch(() => {});
        checkpoint = await this.agent.tracer.callTransfer<CheckpointSummary>('checkpointToPort', [container.pid, port2, where, checkpointOptions], [port2]);
      }
      held = true;
      this.sink = null;
      this.agent.log(`migration ${this.id}: checkpoint ${checkpoint.phases.map((p) => `${p.phase} ${p.ms.toFixed(1)}`).join(', ')} ms; frozen ${checkpoint.frozenMs.toFixed(1)} ms`);
      frozenAt = checkpointStarted + (checkpoint.totalMs - checkpoint.frozenMs);
      lap('checkpoint and stream');
      await faultPoint('source-after-freeze', this.agent.log);
      this.checkCancel();

      this.enter('restoring');
      const restored = await peer.request(RestoreRequest.make({ id: this.id }), RestoreReply, RESTORE_TIMEOUT_MS);
      lap('restore');
      this.checkCancel();

      // Past this line the target's copy is the workload; nothing rolls back any more.
      this.enter('committed');
      await faultPoint('source-after-commit', this.agent.log);
      held = false;
      return await this.finishCommitted(peer, container, checkpoint, restored.pids, frozenAt, started, lap);
    } catch (e) {
      // A cancel surfaces as whatever it cut short (an aborted stream); the operator's reason is the one to report.
      if (this.cancelled && !(e instanceof MigrationError && e.code === 'CANCELLED')) {
        this.agent.log(`migration ${this.id}: cancelled (${e instanceof Error ? e.message : String(e)})`);
        e = new MigrationError('CANCELLED', `cancelled: ${this.cancelled}`);
      }
      return this.rollback(e, peer, held, started);
    } finally {
      peer?.close();
    }
  }

  /**
   * Pre-copy: rounds copy the memory into the image while the container
   * runs, each round what was written during the last, until the policy
   * says freeze (or abort). Auto-converge lowers the container's CPU share
   * step by step when it writes faster than the link carries.
   */
  private async precopy(sink: ChannelImageSink, where: string, pids: number[]): Promise<LiveReport> {
    const { port1, port2 } = new MessageChannel();
    servePortSink(port1, sink).catch(() => {});
    const { method } = await this.agent.tracer.callTransfer<{ method: string }>('precopyOpen', [this.id, pids, port2, where], [port2]);
    this.precopyOpen = true;
    const policy = new ConvergencePolicy({
      maxDowntimeMs: this.options.maxDowntimeMs,
      maxRounds: this.options.maxRounds,
      minRounds: this.options.minRounds,
      throttle: this.options.throttle,
      strictDowntime: this.options.strictDowntime,
      fixedFreezeMs: freezeOverhead.estimateMs,
    });
    const live: LiveReport = { method, rounds: [], budgetMs: this.options.maxDowntimeMs, fits: null, throttled: false, precopiedPages: 0 };
    this.progress({ id: this.id, phase: 'precopy', at: Date.now(), note: `pre-copy with ${method} dirty tracking` });
    for (;;) {
      this.checkCancel();
      const r = await this.agent.tracer.call<RoundStats>('precopyRound', this.id);
      const decision = policy.next({ round: r.round, pages: r.pages, bytes: r.bytes, ms: r.ms, dirtiedPages: r.dirtiedPages });
      if (decision.action === 'throttle') {
        setCpuLimit(this.container.cgroup, decision.cpuFraction * (this.container.limits.cpus ?? availableParallelism()));
        live.throttled = true;
      }
      const event: RoundEvent = {
        round: r.round,
        pages: r.pages,
        bytes: r.bytes,
        ms: r.ms,
        dirtiedPages: r.dirtiedPages,
        dirtyRate: (policy.dirtyRate * 1000) / 1e6,
        bandwidth: (policy.bandwidth * 1000) / 1e6,
        predictedDowntimeMs: Number.isFinite(decision.predictedMs) ? decision.predictedMs : 0,
        cpuFraction: policy.cpuFraction,
        decision: `${decision.action}: ${decision.reason}`,
      };
      live.rounds.push(event);
      this.progress({ id: this.id, phase: 'precopy', at: Date.now(), round: event });
      if (decision.action === 'abort') throw new MigrationError('FAILED', `the downtime budget cannot be met: ${decision.reason}`);
      if (decision.action === 'freeze') {
        live.fits = decision.fits;
        if (!decision.fits) this.progress({ id: this.id, phase: 'precopy', at: Date.now(), note: `warning: ${decision.reason}` });
        return live;
      }
    }
  }

  /** After the commit: the source copy dies frozen, the target's resumes; failures here are retried, never rolled back. */
  private async finishCommitted(
    peer: Channel,
    container: ContainerState,
    checkpoint: CheckpointSummary,
    pids: number[],
    frozenAt: number,
    started: number,
    lap: (phase: string) => void,
  ): Promise<MigrationReport> {
    try {
      killHeld(container);
    } catch (e) {
      // Still frozen, so it does not run; recovery kills it when the agent restarts.
      this.agent.log(`migration ${this.id}: could not end the source copy of ${container.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
    lap('kill source copy');
    await resumeUntilDone(peer, this.agent, this.record);
    const frozenMs = performance.now() - frozenAt;
    lap('resume');
    if (this.live) {
      this.live.precopiedPages = checkpoint.precopiedPages;
      const streamedAtFreeze = checkpoint.bytes - this.live.rounds.reduce((n, r) => n + r.bytes, 0);
      const bandwidth = this.live.rounds.at(-1)?.bandwidth ?? 0;
      freezeOverhead.learn(frozenMs - (bandwidth > 0 ? streamedAtFreeze / (bandwidth * 1000) : 0));
    }
    const report: MigrationReport = {
      id: this.id,
      container: container.name,
      from: this.record.source.host,
      to: this.record.target.host,
      outcome: 'done',
      error: null,
      totalMs: performance.now() - started,
      frozenMs,
      bytes: checkpoint.bytes,
      pages: checkpoint.pages,
      zeroPages: checkpoint.zeroPages,
      pids,
      phases: this.phases,
      live: this.live,
    };
    this.enter('done', { report: report as unknown as Record<string, unknown> });
    return report;
  }

  /** Before the commit: the target forgets, the source runs on. The journal says rolled-back before anything thaws. */
  private async rollback(e: unknown, peer: Channel | null, held: boolean, started: number): Promise<MigrationReport> {
    const message = e instanceof Error ? e.message : String(e);
    this.enter('rolled-back', { error: message });
    if (this.precopyOpen) await this.agent.tracer.call('precopyAbort', this.id, message).catch(() => {});
    if (this.live?.throttled) restoreCpuLimit(this.container);
    if (held) releaseHeld(this.container);
    if (peer?.isOpen) await peer.request(DiscardRequest.make({ id: this.id, reason: message }), Ok, 10_000).catch(() => {});
    this.agent.log(`migration ${this.id} of ${this.container.name} to ${this.record.target.host} rolled back: ${message}`);
    const report: MigrationReport = {
      id: this.id,
      container: this.container.name,
      from: this.record.source.host,
      to: this.record.target.host,
      outcome: 'rolled-back',
      error: message,
      totalMs: performance.now() - started,
      frozenMs: null,
      bytes: null,
      pages: null,
      zeroPages: null,
      pids: null,
      phases: this.phases,
      live: this.live,
    };
    this.record = this.agent.journal.update(this.record, { report: report as unknown as Record<string, unknown> });
    return report;
  }
}

type LiveReport = NonNullable<MigrationReport['live']>;

/**
 * What a freeze costs beyond the pages still dirty (the other state, the
 * restore, the resume), learned from this agent's migrations so far; the
 * first guess is what small containers take on a quiet 2-CPU machine.
 */
const freezeOverhead = {
  estimateMs: 150,
  learn(ms: number): void {
    if (Number.isFinite(ms) && ms > 0) this.estimateMs = 0.5 * this.estimateMs + 0.5 * ms;
  },
};

/** A rolled-back migration gives the container back the CPU share auto-converge took. */
function restoreCpuLimit(container: ContainerState): void {
  if (container.limits.cpus !== null) setCpuLimit(container.cgroup, container.limits.cpus);
  else clearCpuLimit(container.cgroup);
}

/**
 * Tells the target to resume a committed migration, through `peer` or, if
 * that fails, through new connections, until it confirms. The target's copy
 * is the only one left: giving up is not an option, waiting is.
 */
export async function resumeUntilDone(peer: Channel | null, agent: SourceAgent, record: JournalRecord): Promise<void> {
  let pause = 100;
  for (;;) {
    try {
      if (!peer) peer = await agent.connect(record.target.address);
      await peer.request(ResumeRequest.make({ id: record.id }), Ok, RESUME_TIMEOUT_MS);
      return;
    } catch (e) {
      agent.log(`migration ${record.id}: the target has not resumed yet (${e instanceof Error ? e.message : String(e)}); retrying`);
      peer?.close();
      peer = null;
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 5_000);
    }
  }
}

/** The image as it is written, into two streams of the channel; the manifest closes it, and the target's answer says it arrived whole. */
class ChannelImageSink implements ImageSink {
  private readonly writers: Record<typeof ENTRIES_FILE | typeof PAGES_FILE, StreamWriter>;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly peer: Channel,
    private readonly id: string,
    readonly where: string,
  ) {
    this.writers = {
      [ENTRIES_FILE]: peer.openStream(IMAGE_STREAMS[ENTRIES_FILE], { id }),
      [PAGES_FILE]: peer.openStream(IMAGE_STREAMS[PAGES_FILE], { id }),
    };
  }

  append(file: typeof ENTRIES_FILE | typeof PAGES_FILE, bufs: readonly Uint8Array[]): Promise<void> {
    const payload = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
    const write = this.chain.then(() => this.writers[file].write(payload));
    this.chain = write;
    return write;
  }

  async finish(manifest: Manifest): Promise<void> {
    await this.chain;
    await Promise.all([this.writers[ENTRIES_FILE].end(), this.writers[PAGES_FILE].end()]);
    await this.peer.request(ImageComplete.make({ id: this.id, manifest: manifest as unknown as Record<string, unknown> }), Ok, CHECK_TIMEOUT_MS);
  }

  async abort(reason: string): Promise<void> {
    for (const w of Object.values(this.writers)) w.abort(reason);
  }
}
