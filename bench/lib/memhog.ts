import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tracer } from '../../src/native/tracer.js';

/** The repository root (this file runs from dist/bench/lib/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const MEMHOG = path.join(ROOT, 'bench/workloads/bin/memhog');

const SIGKILL = 9;
const SIGUSR1 = 10;

export type Pattern = 'random' | 'sparse';

const live = new Set<Memhog>();

/** Polls until `cond` holds; fails with `what` after `timeoutMs`, or at once if `dead()` says the process is gone. */
async function until(what: string, cond: () => boolean, dead: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pause = 1;
  while (!cond()) {
    if (dead()) throw new Error(`${what}: the process is gone`);
    if (Date.now() > deadline) throw new Error(`${what}: timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 50);
  }
}

/**
 * bench/workloads/memhog: a process holding `mib` MiB of touched anonymous
 * memory, started by the tracer thread (posix_spawn, so libuv never waits
 * for it) and therefore our child: we reap it, and a restored copy comes
 * back to us too (the husk makes us a child subreaper).
 */
export class Memhog {
  /** Checksum of the block right after it was filled. */
  checksum = '';
  /** Where the block is in the process, and how long. */
  addr = 0;
  bytes = 0;

  private constructor(
    private readonly tracer: Tracer,
    readonly pid: number,
    readonly readyFile: string,
  ) {}

  static async start(tracer: Tracer, dir: string, mib: number, pattern: Pattern, timeoutMs = 180_000): Promise<Memhog> {
    if (!fs.existsSync(MEMHOG)) throw new Error(`${MEMHOG} is missing: run \`make -C bench/workloads\` (npm run bench does)`);
    const ready = path.join(dir, `memhog-${mib}-${pattern}-${Date.now()}.ready`);
    const pid = await tracer.call<number>('spawn', MEMHOG, {
      argv: ['memhog', String(mib), pattern, ready],
      env: { PATH: '/usr/bin:/bin' },
      cwd: dir,
      stderr: { path: `${ready}.stderr` },
    });
    const m = new Memhog(tracer, pid, ready);
    live.add(m);
    try {
      await until(`memhog ${mib} MiB ${pattern} (pid ${pid}) to get ready`, () => fs.existsSync(ready), () => !m.alive(), timeoutMs);
    } catch (e) {
      const err = readOr(`${ready}.stderr`).trim();
      await m.stop();
      throw err ? new Error(`${(e as Error).message}: ${err}`) : e;
    }
    const [word, sum, addr, bytes] = fs.readFileSync(ready, 'utf8').trim().split(' ');
    if (word !== 'READY' || !sum || !addr || !bytes) throw new Error(`memhog wrote an unexpected ready line to ${ready}`);
    m.checksum = sum;
    m.addr = parseInt(addr, 16);
    m.bytes = Number(bytes);
    return m;
  }

  alive(): boolean {
    try {
      return !/^\d+ \(.*\) [ZX]/.test(fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  }

  /** Asks the process to checksum its block again (SIGUSR1) and compares with the checksum it had when filled. */
  async verify(timeoutMs = 60_000): Promise<{ ok: boolean; ms: number }> {
    const check = `${this.readyFile}.check`;
    fs.rmSync(check, { force: true });
    const t = performance.now();
    await this.tracer.call('kill', this.pid, SIGUSR1);
    await until(`memhog ${this.pid} to checksum its memory`, () => fs.existsSync(check), () => !this.alive(), timeoutMs);
    const ms = performance.now() - t;
    const got = fs.readFileSync(check, 'utf8').trim().split(' ')[1];
    return { ok: got === this.checksum, ms };
  }

  /**
   * SIGKILL and reap. Quiet when the process is already gone (a checkpoint
   * kills and reaps it itself), and hands off a pid that has meanwhile gone
   * to some other program.
   */
  async stop(): Promise<void> {
    live.delete(this);
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    } catch {
      return;
    }
    const m = /^\d+ \((.*)\) (\S)/.exec(stat);
    if (!m || m[1] !== 'memhog') return;
    try {
      if (m[2] !== 'Z') await this.tracer.call('kill', this.pid, SIGKILL);
      await this.tracer.call('reap', this.pid, 10_000);
    } catch {
      // gone meanwhile, or not our child: its parent reaps it
    }
  }

  static async stopAll(): Promise<void> {
    for (const m of [...live]) await m.stop();
  }
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
