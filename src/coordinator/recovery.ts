/**
 * What an agent does with the migrations its journal holds unfinished when
 * it starts (it died, or the machine did). Each is resolved to exactly one
 * running copy of the workload:
 *
 *   source, before `committed`   roll back: journal first, then thaw the
 *                                held copy; the target, asking us, discards
 *   source, `committed`          the target's copy is the workload: kill the
 *                                held copy, tell the target to resume
 *   target, `receiving`/`restoring`  the source cannot have committed (it
 *                                never heard `restored`): discard
 *   target, `restored`           ask the source's journal: committed →
 *                                resume, rolled back → discard; no answer →
 *                                stay frozen and ask again later
 */
import { killHeld, releaseHeld } from '../container/runtime.js';
import { readState } from '../container/state.js';
import { isFinal, type JournalRecord } from './journal.js';
import { resumeUntilDone, type SourceAgent } from './source.js';
import type { TargetSide } from './target.js';
import { DiscardRequest, Ok, OutcomeReply, OutcomeRequest } from './messages.js';

const RESTARTED = 'the agent restarted during the migration';

export async function recoverMigrations(agent: SourceAgent, target: TargetSide): Promise<void> {
  for (const record of agent.journal.list()) {
    if (isFinal(record.phase)) continue;
    agent.log(`migration ${record.id} (${record.container}, ${record.role}) was unfinished at ${record.phase}; resolving`);
    if (record.role === 'source') await recoverSource(agent, record);
    else if (record.phase === 'restored') void askSourceUntilResolved(agent, target, record.id);
    else target.discardRecorded(record, RESTARTED);
  }
}

async function recoverSource(agent: SourceAgent, record: JournalRecord): Promise<void> {
  const state = readState(record.container);
  if (record.phase === 'committed') {
    if (state) killHeld(state);
    void resumeUntilDone(null, agent, record).then(() => agent.journal.advance(record, 'done'));
    return;
  }
  const rolledBack = agent.journal.advance(record, 'rolled-back', { error: RESTARTED });
  if (state) releaseHeld(state);
  // Tell the target now rather than when it asks; it discards either way.
  try {
    const peer = await agent.connect(record.target.address);
    try {
      await peer.request(DiscardRequest.make({ id: record.id, reason: RESTARTED }), Ok, 10_000);
    } finally {
      void peer.close();
    }
  } catch (e) {
    agent.log(`migration ${rolledBack.id}: could not tell ${record.target.host} to discard (${e instanceof Error ? e.message : String(e)}); it will ask`);
  }
}

/**
 * A frozen restored copy waits for the source's verdict, however long the
 * source takes to answer: after a restart, or when the source's channel
 * closed before it said commit or discard.
 */
export async function askSourceUntilResolved(agent: SourceAgent, target: TargetSide, id: string): Promise<void> {
  let pause = 200;
  for (;;) {
    // The source may have settled it meanwhile, through target.resume or target.discard.
    const record = agent.journal.read(id);
    if (!record || isFinal(record.phase)) return;
    try {
      const peer = await agent.connect(record.source.address);
      let phase: string;
      try {
        ({ phase } = await peer.request(OutcomeRequest.make({ id }), OutcomeReply, 10_000));
      } finally {
        void peer.close();
      }
      if (phase === 'committed' || phase === 'done') return await target.resume(id);
      if (phase === 'rolled-back' || phase === 'unknown') return await target.discard(id, 'the source rolled the migration back');
      // Still in progress there: its own failure handling decides, and we hear it as target.resume or target.discard.
    } catch (e) {
      agent.log(`migration ${id}: no verdict from the source ${record.source.host} yet (${e instanceof Error ? e.message : String(e)}); the restored copy stays frozen`);
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 10_000);
  }
}
