/**
 * Waiting for a condition the kernel offers no event for (a process gone,
 * a port listening): poll it often at first, then every 50 ms.
 */

/** Polls `condition` with a backoff up to 50 ms; false if it still fails after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let pause = 1;
  for (;;) {
    if (condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 50);
  }
}
