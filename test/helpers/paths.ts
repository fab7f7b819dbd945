import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/...). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function workloadBin(name: string): string {
  return path.join(ROOT, 'test/workloads/bin', name);
}
