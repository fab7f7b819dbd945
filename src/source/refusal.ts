/** One thing about a process that Ferry cannot checkpoint so that it restores correctly. */
export interface Refusal {
  pid: number;
  /** The resource, as a person would find it: "fd 5", "mapping 7f00..-7f10.. /dev/dri/card0", "thread 1234". */
  resource: string;
  /** What it is and why Ferry refuses it. */
  reason: string;
}

/**
 * Thrown before the process is touched when anything in it cannot be
 * migrated correctly: a checkpoint that succeeds must restore.
 */
export class CheckpointRefused extends Error {
  readonly refusals: Refusal[];

  constructor(refusals: Refusal[]) {
    const lines = refusals.map((r) => `  pid ${r.pid} ${r.resource}: ${r.reason}`);
    super(`refusing to checkpoint: ${refusals.length} thing${refusals.length === 1 ? '' : 's'} Ferry cannot migrate\n${lines.join('\n')}`);
    this.name = 'CheckpointRefused';
    this.refusals = refusals;
  }
}
