/**
 * A migration as the target agent sees it:
 *
 *   receiving  checks passed; the image streams into memory (/dev/shm)
 *   restoring  the restore runs; the copy it makes stays frozen
 *   restored   a complete frozen copy waits for the source's commit
 *   resumed    the source committed: the copy runs, ps knows it
 *   discarded  rolled back: nothing of it is left here
 *
 * The target never decides to run its copy: only the source's `commit`
 * (target.resume) thaws it. After a crash, recovery asks the source's
 * journal (recovery.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReceivedImage } from '../image/received.js';
import type { Manifest } from '../image/format.js';
import { cgroupAt, cgroupExists, killAll, removeCgroup, thaw, type Cgroup } from '../native/cgroup.js';
import type { Tracer } from '../native/tracer.js';
import { CONTAINER_CONTROLLERS, recordRestored, unlockNetwork, type RestoredContainer } from '../container/runtime.js';
import { cgroupParent, containerStatus, readState } from '../container/state.js';
import type { RestoreSummary } from '../target/restore.js';
import { checkTarget, type HostNeeds } from './checks.js';
import { MigrationError } from './errors.js';
import { faultPoint } from './faults.js';
import type { Journal, JournalRecord, TargetPhase } from './journal.js';

export interface TargetAgent {
  name: string;
  journal: Journal;
  tracer: Tracer;
  /** Where incoming images are kept until restored: memory, not disk. */
  stagingDir: string;
  memoryReserveBytes: number;
  log(line: string): void;
}

interface Incoming {
  record: JournalRecord;
  image: ReceivedImage;
  /** Settles when both data streams have ended. */
  streams: Promise<void>[];
  restored: RestoredContainer | null;
}

export class TargetSide {
  private readonly incoming = new Map<string, Incoming>();

  constructor(private readonly agent: TargetAgent) {}

  private enter(m: Incoming, phase: TargetPhase, changes: Partial<Pick<JournalRecord, 'error' | 'restored'>> = {}): void {
    m.record = this.agent.journal.advance(m.record, phase, changes);
  }

  private get(id: string): Incoming {
    const m = this.incoming.get(id);
    if (!m) throw new MigrationError('UNKNOWN_MIGRATION', `${this.agent.name} has no migration ${id} in progress`);
    return m;
  }

  /** Checks that this host can take the container, and gets ready to receive its image. */
  async prepare(id: string, needs: HostNeeds, source: { host: string; address: string }): Promise<void> {
    if (this.incoming.has(id)) throw new MigrationError('BUSY', `migration ${id} is already in progress on ${this.agent.name}`);
    const busy = [...this.incoming.values()].find((m) => m.record.container === needs.container);
    const problems = checkTarget(needs, this.agent.name, {
      memoryReserveBytes: this.agent.memoryReserveBytes,
      containerRunning: (name) => busy !== undefined || isRunning(name),
    });
    if (problems.length) {
      throw new MigrationError('CHECK_FAILED', `${this.agent.name} cannot take container "${needs.container}":\n${problems.map((p) => `  ${p}`).join('\n')}`, problems);
    }
    const record = this.agent.journal.create({ id, role: 'target', container: needs.container, source, target: { host: this.agent.name, address: '' }, phase: 'receiving' });
    const image = await ReceivedImage.create(path.join(this.agent.stagingDir, id), `${this.agent.name} (migration ${id})`);
    this.incoming.set(id, { record, image, streams: [], restored: null });
  }

  /** One of the image's two data streams, as it arrives. */
  receive(id: string, file: 'entries.bin' | 'pages.bin', chunks: AsyncIterable<{ payload: Uint8Array }>): Promise<void> {
    const m = this.get(id);
    const done = (async () => {
      for await (const { payload } of chunks) {
        await m.image.append(file, [payload]);
        await faultPoint('target-during-stream', this.agent.log);
      }
    })();
    done.catch(() => {});
    m.streams.push(done);
    return done;
  }

  /** The manifest ends the image: both files are checked against it. */
  async complete(id: string, manifest: Manifest): Promise<void> {
    const m = this.get(id);
    await Promise.all(m.streams);
    await m.image.finish(manifest);
  }

  /** Restores the received image, frozen; the source commits or rolls back next. */
  async restore(id: string): Promise<{ pid: number; pids: number[]; restoreMs: number }> {
    const m = this.get(id);
    this.enter(m, 'restoring');
    const summary = await this.agent.tracer.call<RestoreSummary>('restore', m.image.dir, { frozen: true });
    if (!summary.container) throw new MigrationError('FAILED', `the image of migration ${id} holds no container`);
    m.restored = summary.container;
    this.enter(m, 'restored', { restored: { pid: summary.pid, container: summary.container } });
    await faultPoint('target-after-restore', this.agent.log);
    return { pid: summary.pid, pids: summary.pids, restoreMs: summary.restoreMs };
  }

  /** The source committed: the copy runs from here on. Idempotent, since the source retries until it hears back. */
  async resume(id: string): Promise<void> {
    const m = this.incoming.get(id);
    if (!m) {
      const record = this.agent.journal.read(id);
      if (record?.phase === 'resumed') return;
      if (record?.phase === 'restored') return this.resumeRecorded(record);
      throw new MigrationError('UNKNOWN_MIGRATION', `${this.agent.name} holds no restored copy for migration ${id}`);
    }
    if (!m.restored) throw new MigrationError('FAILED', `migration ${id} has not been restored on ${this.agent.name}`);
    this.resumeContainer(m.restored, m.record.restored!.pid);
    this.enter(m, 'resumed');
    this.incoming.delete(id);
    await m.image.discard();
  }

  /** The migration is off: whatever this host received or restored for it goes. Idempotent. */
  async discard(id: string, reason: string): Promise<void> {
    const m = this.incoming.get(id);
    if (!m) {
      const record = this.agent.journal.read(id);
      if (record && record.phase !== 'resumed' && record.phase !== 'discarded') this.discardRecorded(record, reason);
      return;
    }
    this.incoming.delete(id);
    if (m.restored) endRestored(m.restored.cgroup);
    await m.image.abort();
    this.enter(m, 'discarded', { error: reason });
    this.agent.log(`migration ${id} of ${m.record.container} discarded: ${reason}`);
  }

  /**
   * The source's channel closed. An image still arriving cannot be
   * committed, so it goes. A restored copy (or one being restored) waits
   * for the source's verdict, which `askSource` fetches.
   */
  async sourceLost(id: string, why: string, askSource: (id: string) => Promise<void>): Promise<void> {
    const m = this.incoming.get(id);
    if (!m) return;
    if (m.record.phase === 'receiving') return this.discard(id, `the source went away: ${why}`);
    if (m.record.phase === 'restoring' || m.record.phase === 'restored') return askSource(id);
  }

  resumeRecorded(record: JournalRecord): void {
    this.resumeContainer(record.restored!.container, record.restored!.pid);
    this.agent.journal.advance(record, 'resumed');
    fs.rmSync(path.join(this.agent.stagingDir, record.id), { recursive: true, force: true });
  }

  discardRecorded(record: JournalRecord, reason: string): void {
    if (record.restored) endRestored(record.restored.container.cgroup);
    else if (record.phase === 'restoring') endUnrecorded(record.container);
    fs.rmSync(path.join(this.agent.stagingDir, record.id), { recursive: true, force: true });
    this.agent.journal.advance(record, 'discarded', { error: reason });
    this.agent.log(`migration ${record.id} of ${record.container} discarded: ${reason}`);
  }

  /** The copy runs from here on: recorded, its network unlocked (the restore left the checkpoint's locks for whoever thaws it), thawed. */
  private resumeContainer(c: RestoredContainer, pid: number): void {
    recordRestored(c, pid);
    unlockNetwork(pid);
    thaw(c.cgroup);
  }
}

function isRunning(name: string): boolean {
  const state = readState(name);
  return state !== null && containerStatus(state) !== 'exited';
}

/** A restore cut short by the agent's death left processes in the container's cgroup that no record owns: they go, unless a container of that name runs there on record. */
function endUnrecorded(name: string): void {
  if (isRunning(name)) return;
  endRestored(cgroupAt(`${cgroupParent()}/${name}`, CONTAINER_CONTROLLERS));
}

function endRestored(cgroup: Cgroup): void {
  if (!cgroupExists(cgroup)) return;
  killAll(cgroup);
  removeCgroup(cgroup);
}
