import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { workloadBin } from './paths.js';
import { waitFor } from './wait.js';
import type { Tracer } from '../../src/native/tracer.js';
import type { StdioSpec } from '../../src/native/process.js';

const SIGTERM = 15;
const SIGKILL = 9;
const live = new Set<Workload>();

/**
 * A C workload from test/workloads, started by the tracer thread (so libuv
 * is not its parent and cannot steal ptrace stops) and reaped by us. It
 * follows the workload protocol: READY file, SIGTERM, PASS/FAIL file.
 */
export class Workload {
  readonly dir: string;
  readonly resultFile: string;
  pid = 0;

  private constructor(private readonly tracer: Tracer, readonly name: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `ferry-wl-${name}-`));
    this.resultFile = path.join(this.dir, 'result');
  }

  /** `spawn.binary` runs a copy of the workload from elsewhere; `spawn.stdin` hands it an fd of ours as fd 0 (the only inherited fd a workload keeps); `spawn.netns` starts it in that network namespace (a file such as /run/netns/NAME). */
  static async start(
    tracer: Tracer,
    name: string,
    args: string[] = [],
    env: Record<string, string> = {},
    spawn: { binary?: string; stdin?: StdioSpec; netns?: string } = {},
  ): Promise<Workload> {
    const w = new Workload(tracer, name);
    live.add(w);
    w.pid = await tracer.call<number>('spawn', spawn.binary ?? workloadBin(name), {
      argv: [name, w.resultFile, ...args],
      env: { PATH: '/usr/bin:/bin', ...env },
      cwd: w.dir,
      stdin: spawn.stdin ?? 'null',
      stdout: { path: path.join(w.dir, 'stdout') },
      stderr: { path: path.join(w.dir, 'stderr') },
      ...(spawn.netns ? { netns: spawn.netns } : {}),
    });
    await waitFor(`${name} (pid ${w.pid}) to report READY`, () => fs.existsSync(w.resultFile + '.ready') || fs.existsSync(w.resultFile));
    if (fs.existsSync(w.resultFile)) throw new Error(`${name} failed during setup: ${w.result()}`);
    return w;
  }

  get stderr(): string {
    return readOr(path.join(this.dir, 'stderr'));
  }

  result(): string {
    return readOr(this.resultFile).trim();
  }

  alive(): boolean {
    try {
      const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      return !/^\d+ \(.*\) [ZX]/.test(stat);
    } catch {
      return false;
    }
  }

  /** Sends SIGTERM, waits for the verdict, reaps the process; returns "PASS" or "FAIL <reason>". */
  async finish(timeoutMs = 20_000): Promise<string> {
    await this.tracer.call('kill', this.pid, SIGTERM);
    await waitFor(`${this.name} (pid ${this.pid}) to write its verdict`, () => fs.existsSync(this.resultFile), timeoutMs);
    await this.tracer.call('reap', this.pid, timeoutMs);
    return this.result();
  }

  /** Kills and reaps whatever is left and removes the directory; safe to call twice. */
  async cleanup(): Promise<void> {
    live.delete(this);
    if (this.pid && this.alive()) {
      try {
        await this.tracer.call('kill', this.pid, SIGKILL);
        await this.tracer.call('reap', this.pid, 5_000);
      } catch {
        // gone already, or not our child any more
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  static async cleanupAll(): Promise<void> {
    for (const w of [...live]) await w.cleanup();
  }
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Kills a process and every descendant it has now, and reaps whichever are
 * ours. A test that starts a program which forks (a shell pipeline, Python
 * multiprocessing) must not leave its children behind when it fails: they
 * would run on, orphaned, and load the machine for every later test.
 */
export async function killTree(tracer: Tracer, root: number): Promise<void> {
  const all: number[] = [];
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift()!;
    all.push(pid);
    try {
      for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
        queue.push(...fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
      }
    } catch {
      // gone already
    }
  }
  for (const pid of all) await tracer.call('kill', pid, SIGKILL).catch(() => undefined);
  for (const pid of all) await tracer.call('reap', pid, 5_000).catch(() => undefined);
}
