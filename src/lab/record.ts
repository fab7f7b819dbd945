/**
 * What `lab up` made, in $FERRY_STATE_DIR/lab/lab.json: which hosts, their
 * inits (pid and start time), their agents, their environment. `lab ls`
 * and `lab exec` go by it; `lab down` uses it when it is there and valid,
 * and finds everything by name when it is not.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { LabError } from './errors.js';
import { HOST_NAME, labDir } from './layout.js';

const Process = z.strictObject({ pid: z.number().int().positive(), startTime: z.number().int().nonnegative() });

const HostRecord = z.strictObject({
  name: z.string().regex(HOST_NAME),
  ip: z.string(),
  init: Process,
  /** null when the lab was made with --no-agents. */
  agent: Process.nullable(),
  /** FERRY_* variables of everything that runs in the host. */
  env: z.record(z.string(), z.string()),
});

const LabRecordSchema = z.strictObject({
  version: z.literal(1),
  /** ISO 8601. */
  created: z.string(),
  bridge: z.strictObject({ name: z.string(), address: z.string() }),
  agents: z.boolean(),
  /** The inventory file the hosts were added to. */
  inventory: z.string(),
  hosts: z.array(HostRecord),
});

export type HostRecord = z.infer<typeof HostRecord>;
export type LabRecord = z.infer<typeof LabRecordSchema>;

export function recordPath(): string {
  return path.join(labDir(), 'lab.json');
}

/** The record, or null when there is none; a damaged one is a BAD_RECORD error. */
export function readRecord(): LabRecord | null {
  const file = recordPath();
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LabError('BAD_RECORD', `${file}: not valid JSON (${(e as Error).message}); \`migrate lab down\` cleans up without it`);
  }
  const parsed = LabRecordSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new LabError('BAD_RECORD', `${file}: not a lab record this Ferry reads (${issue.path.map(String).join('.') || 'top level'}: ${issue.message}); \`migrate lab down\` cleans up without it`);
  }
  return parsed.data;
}

/** Replaces the record in one step (temp file, fsync, rename). */
export function writeRecord(record: LabRecord): void {
  const file = recordPath();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o644);
  try {
    fs.writeFileSync(fd, `${JSON.stringify(record, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
