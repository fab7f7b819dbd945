import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tracer } from '../../src/native/tracer.js';
import type { CheckpointSummary, CheckpointOptions } from '../../src/source/checkpoint.js';
import type { RestoreSummary } from '../../src/target/restore.js';
import { Workload } from './workload.js';

const ENGINE_MODULES = [new URL('../../src/source/checkpoint.js', import.meta.url), new URL('../../src/target/restore.js', import.meta.url)];

/** A tracer thread with the checkpoint and restore operations loaded. */
export function startEngine(): Promise<Tracer> {
  return Tracer.start(ENGINE_MODULES);
}

const imageDirs = new Set<string>();

/**
 * The hooks every suite that drives processes needs, registered in the
 * calling describe: a tracer thread for the suite (with `modules` loaded),
 * and after every test, passed or failed, each workload killed and reaped
 * and each image removed.
 */
export function useTracer(modules: URL[] = []): { readonly tracer: Tracer } {
  let tracer: Tracer | null = null;
  before(async () => {
    tracer = await Tracer.start(modules);
  });
  after(async () => {
    await tracer?.close();
  });
  afterEach(async () => {
    await Workload.cleanupAll();
    cleanupImages();
  });
  return {
    get tracer(): Tracer {
      if (!tracer) throw new Error('the tracer is not started yet (use it inside a test or hook)');
      return tracer;
    },
  };
}

/** useTracer with the checkpoint and restore operations loaded. */
export function useEngine(): { readonly tracer: Tracer } {
  return useTracer(ENGINE_MODULES);
}

/** A fresh directory name for an image (not created: the writer creates it). Removed by cleanupImages(). */
export function imageDir(): string {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-image-')), 'image');
  imageDirs.add(path.dirname(dir));
  return dir;
}

export function cleanupImages(): void {
  for (const d of imageDirs) fs.rmSync(d, { recursive: true, force: true });
  imageDirs.clear();
}

export function checkpoint(tracer: Tracer, pid: number, dir: string, opts: CheckpointOptions = {}): Promise<CheckpointSummary> {
  return tracer.call<CheckpointSummary>('checkpoint', pid, dir, opts);
}

export function restore(tracer: Tracer, dir: string): Promise<RestoreSummary> {
  return tracer.call<RestoreSummary>('restore', dir);
}

/**
 * The round trip every engine test makes: checkpoint the workload (which
 * kills it), restore it from the image, and return its verdict.
 */
export async function roundTrip(tracer: Tracer, w: Workload): Promise<{ verdict: string; checkpoint: CheckpointSummary; restore: RestoreSummary }> {
  const dir = imageDir();
  const ck = await checkpoint(tracer, w.pid, dir);
  const rs = await restore(tracer, dir);
  if (rs.pid !== w.pid) throw new Error(`restored as pid ${rs.pid}, expected ${w.pid}`);
  return { verdict: await w.finish(), checkpoint: ck, restore: rs };
}
