/**
 * Fault injection for the tests that prove a migration survives its
 * parties failing, set in an agent's environment:
 *
 *   FERRY_CRASH_AT=<point>  the agent kills itself with SIGKILL on reaching
 *                           the point: no clean-up, no flushing, exactly like
 *                           a power cut of that process;
 *   FERRY_STALL_AT=<point>  it stops there for good (logging that it does),
 *                           like a peer whose network went away.
 *
 * Unset, each point costs two string comparisons.
 */
export type FaultPoint = 'source-after-freeze' | 'source-after-commit' | 'target-during-stream' | 'target-after-restore';

export async function faultPoint(point: FaultPoint, log: (line: string) => void): Promise<void> {
  if (process.env['FERRY_CRASH_AT'] === point) process.kill(process.pid, 'SIGKILL');
  if (process.env['FERRY_STALL_AT'] === point) {
    log(`FERRY_STALL_AT: stalling at ${point}`);
    await new Promise(() => {});
  }
}
