/**
 * When to stop copying and freeze. Each round measures what it sent and how
 * long that took (the bandwidth) and how much the workload wrote meanwhile
 * (the dirty rate). Freezing now would cost the pages still dirty, at that
 * bandwidth, plus what the freeze costs whatever the memory (the other
 * state, the restore, the resume). The policy freezes when that prediction
 * fits the budget; when the dirty set stops shrinking it first slows the
 * workload down through its cgroup (auto-converge), step by step, unless
 * told not to; at the round limit, or out of steps, it freezes anyway and
 * says the budget is missed, or aborts when the budget is strict.
 */
import { PAGE_SIZE } from '../image/constants.js';

export interface PolicyOptions {
  maxDowntimeMs: number;
  maxRounds: number;
  /** Rounds to run before the freeze whatever the predictions say (warming a cache of pages on the target, tests). */
  minRounds: number;
  /** Slow the workload down when it writes faster than the link carries. */
  throttle: boolean;
  /** Abort rather than freeze over the budget. */
  strictDowntime: boolean;
  /** What a freeze costs beyond the dirty pages: measured or estimated by the caller. */
  fixedFreezeMs: number;
}

/** One round, as measured. */
export interface RoundMeasure {
  round: number;
  /** Pages this round sent (data and zero). */
  pages: number;
  /** Bytes this round put on the wire. */
  bytes: number;
  ms: number;
  /** Pages written while this round ran: what the next round (or the freeze) must send. */
  dirtiedPages: number;
}

export type Decision =
  | { action: 'round'; predictedMs: number; reason: string }
  | { action: 'throttle'; cpuFraction: number; predictedMs: number; reason: string }
  | { action: 'freeze'; predictedMs: number; fits: boolean; reason: string }
  | { action: 'abort'; predictedMs: number; reason: string };

/** The CPU shares auto-converge steps through, as fractions of what the container had. */
export const THROTTLE_STEPS = [0.5, 0.25, 0.1, 0.05];

/** Below this, sending the last dirty pages is not worth another round. */
const WORTHWHILE_MS = 10;

/** A dirty set this much smaller than the previous one still counts as shrinking. */
const SHRINK = 0.9;

export class ConvergencePolicy {
  private readonly rounds: RoundMeasure[] = [];
  private throttleStep = -1;
  private stalls = 0;

  constructor(readonly opts: PolicyOptions) {}

  /**
   * Bytes per millisecond over every round so far: a small late round
   * measures its fixed costs more than the link, so the rounds are
   * weighted by what they carried.
   */
  get bandwidth(): number {
    const bytes = this.rounds.reduce((n, r) => n + r.bytes, 0);
    const ms = this.rounds.reduce((n, r) => n + r.ms, 0);
    return ms > 0 ? bytes / ms : 0;
  }

  /** Bytes the workload wrote per millisecond during the last round. */
  get dirtyRate(): number {
    const last = this.rounds.at(-1);
    return last && last.ms > 0 ? (last.dirtiedPages * PAGE_SIZE) / last.ms : 0;
  }

  get cpuFraction(): number | null {
    return this.throttleStep < 0 ? null : THROTTLE_STEPS[this.throttleStep]!;
  }

  /** The frozen time if the freeze came now, with `dirtyPages` still to send. */
  predict(dirtyPages: number): number {
    const bw = this.bandwidth;
    const transfer = dirtyPages === 0 ? 0 : bw > 0 ? (dirtyPages * PAGE_SIZE) / bw : Infinity;
    return transfer + this.opts.fixedFreezeMs;
  }

  /** Records a round and decides what comes next. */
  next(round: RoundMeasure): Decision {
    const previous = this.rounds.at(-1);
    this.rounds.push(round);
    const predictedMs = this.predict(round.dirtiedPages);
    const budget = this.opts.maxDowntimeMs;
    if (round.round + 1 < this.opts.minRounds) return { action: 'round', predictedMs, reason: `${this.opts.minRounds} rounds at least were asked for` };
    if (predictedMs <= budget) return { action: 'freeze', predictedMs, fits: true, reason: `the rest fits the ${budget} ms budget` };
    // When what a freeze costs anyway is over the budget by itself, more rounds (or a slower workload) cannot help once the pages left are few.
    const transferMs = predictedMs - this.opts.fixedFreezeMs;
    if (transferMs <= Math.max(WORTHWHILE_MS, budget - this.opts.fixedFreezeMs)) {
      return this.giveUp(predictedMs, `sending the rest takes only ${Math.round(transferMs)} ms; the freeze costs about ${Math.round(this.opts.fixedFreezeMs)} ms whatever the memory`);
    }
    const shrinking = previous === undefined || round.dirtiedPages < previous.dirtiedPages * SHRINK;
    this.stalls = shrinking ? 0 : this.stalls + 1;
    if (round.round + 1 >= this.opts.maxRounds) return this.giveUp(predictedMs, `the round limit (${this.opts.maxRounds}) is reached`);
    if (this.stalls === 0) return { action: 'round', predictedMs, reason: 'the dirty set is shrinking' };
    if (this.opts.throttle && this.throttleStep + 1 < THROTTLE_STEPS.length) {
      this.throttleStep++;
      this.stalls = 0;
      const cpuFraction = THROTTLE_STEPS[this.throttleStep]!;
      return { action: 'throttle', cpuFraction, predictedMs, reason: `the workload writes ${mbps(this.dirtyRate)} MB/s against ${mbps(this.bandwidth)} MB/s of link: slowing it to ${cpuFraction * 100}% of its CPU` };
    }
    return this.giveUp(predictedMs, this.opts.throttle ? 'the dirty set stopped shrinking even at the lowest CPU share' : 'the dirty set stopped shrinking (throttling is off)');
  }

  private giveUp(predictedMs: number, why: string): Decision {
    const over = `${why}; the freeze will take about ${Math.round(predictedMs)} ms, over the ${this.opts.maxDowntimeMs} ms budget`;
    if (this.opts.strictDowntime) return { action: 'abort', predictedMs, reason: over };
    return { action: 'freeze', predictedMs, fits: false, reason: over };
  }
}

function mbps(bytesPerMs: number): string {
  return ((bytesPerMs * 1000) / 1e6).toFixed(0);
}
