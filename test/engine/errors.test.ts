import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ErrorReport } from '../../src/cli/errors.js';
import { ExitCode } from '../../src/cli/exit-codes.js';
import { manifestDigest } from '../../src/image/format.js';
import { close, socket } from '../../src/native/process.js';
import type { Tracer } from '../../src/native/tracer.js';
import { jsonOf, migrate } from '../helpers/cli.js';
import { checkpoint, cleanupImages, imageDir, restore, startEngine } from '../helpers/engine.js';
import { workloadBin } from '../helpers/paths.js';
import { Workload } from '../helpers/workload.js';

/** A TCP socket: Ferry does not migrate TCP yet (the network issue), so it must be refused. */
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

/** Husks this process's tracer spawned that are still around. Husks of other test runs on the machine are not ours to judge. */
function ourHusks(): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm === 'ferry-husk' && ppid === process.pid) found.push(Number(entry));
    } catch {
      // ended while we looked
    }
  }
  return found;
}

/** A failed restore leaves nothing behind: no husk, and the image's pid still free. */
function assertNothingLeft(pid: number): void {
  assert.deepEqual(ourHusks(), [], 'no husk is left');
  assert.equal(fs.existsSync(`/proc/${pid}`), false, `pid ${pid} is not taken`);
}

function copyImage(from: string): string {
  const to = imageDir();
  fs.cpSync(from, to, { recursive: true });
  return to;
}

function cliError(result: { status: number | null; stdout: string; stderr: string }): ErrorReport {
  return jsonOf<{ error: ErrorReport }>(result).error;
}

describe('errors a user can hit in checkpoint and restore', function () {
  let tracer: Tracer;
  const tempDirs: string[] = [];

  function tempDir(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-errors-'));
    tempDirs.push(dir);
    return dir;
  }

  before(async () => {
    tracer = await startEngine();
  });
  after(async () => {
    await tracer.close();
  });
  afterEach(async () => {
    await Workload.cleanupAll();
    cleanupImages();
    for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('checkpoint', () => {
    it('of a pid that does not exist says "no such process" and writes nothing', async () => {
      // A pid that just ended and was reaped: as sure to be free as a pid can be.
      const pid = spawnSync('true').pid!;
      const dir = imageDir();
      await assert.rejects(checkpoint(tracer, pid, dir), { code: 'ESRCH', message: /no such process/ });
      assert.equal(fs.existsSync(dir), false, 'no image directory');

      const human = await migrate(['checkpoint', String(pid), '-D', dir]);
      assert.equal(human.status, ExitCode.Failed);
      assert.match(human.stderr, /^migrate: .*no such process/);
      const json = await migrate(['checkpoint', String(pid), '-D', dir, '--json']);
      assert.equal(json.status, ExitCode.Failed);
      assert.equal(cliError(json).code, 'ESRCH');
      assert.equal(fs.existsSync(dir), false, 'no image directory');
    });

    it('into a directory that is not empty names the directory and leaves the process alone', async () => {
      const w = await Workload.start(tracer, 'counter');
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
      const result = await migrate(['checkpoint', String(w.pid), '-D', dir, '--json']);
      assert.equal(result.status, ExitCode.Failed, result.stdout + result.stderr);
      const error = cliError(result);
      assert.equal(error.reason, 'exists');
      assert.ok(error.message.includes(dir), error.message);
      assert.deepEqual(fs.readdirSync(dir), ['notes.txt']);
      assert.equal(await w.finish(), 'PASS');
    });

    it('of a process holding a TCP socket is refused, naming the pid and the fd, and the process runs on untouched', async () => {
      const sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
      const w = await Workload.start(tracer, 'counter', [], {}, { stdin: { fd: sock } }).finally(() => close(sock));
      const dir = imageDir();
      const isFd0 = (r: { pid: number; resource: string }) => r.pid === w.pid && /\bfd 0\b/.test(r.resource);

      await assert.rejects(checkpoint(tracer, w.pid, dir), (e: Error & { refusals?: Array<{ pid: number; resource: string; reason: string }> }) => {
        assert.equal(e.name, 'CheckpointRefused');
        assert.ok(e.refusals?.some(isFd0), `a refusal names fd 0 of pid ${w.pid}: ${e.message}`);
        assert.ok(e.refusals?.some((r) => isFd0(r) && /socket/i.test(r.reason)), `and says it is a socket: ${e.message}`);
        return true;
      });
      assert.equal(fs.existsSync(dir), false, 'no image directory');

      const refused = await migrate(['checkpoint', String(w.pid), '-D', dir, '--json']);
      assert.equal(refused.status, ExitCode.Refused, refused.stdout + refused.stderr);
      assert.ok(cliError(refused).refusals?.some(isFd0), refused.stdout);
      const inspected = await migrate(['inspect', String(w.pid)]);
      assert.equal(inspected.status, ExitCode.Refused, inspected.stdout + inspected.stderr);
      assert.match(inspected.stdout, new RegExp(`^${w.pid}\\s+fd 0\\b`, 'm'));

      assert.equal(await w.finish(), 'PASS');
    });
  });

  describe('restore', () => {
    // One checkpoint that each damage test copies and damages its own way; kept apart from the directories afterEach removes.
    let image = '';
    let pid: number;

    before(async () => {
      const w = await Workload.start(tracer, 'counter');
      pid = w.pid;
      image = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-errors-image-')), 'image');
      await checkpoint(tracer, pid, image);
    });
    after(async () => {
      // afterEach does not run when this before() fails halfway, so the workload is cleaned up here too.
      await Workload.cleanupAll();
      if (image) fs.rmSync(path.dirname(image), { recursive: true, force: true });
    });

    const damages: Array<{ what: string; reason: string; message: RegExp; damage(dir: string): void }> = [
      {
        what: 'a truncated pages.bin',
        reason: 'truncated',
        message: /pages\.bin .*truncated/,
        damage: (dir) => fs.truncateSync(path.join(dir, 'pages.bin'), fs.statSync(path.join(dir, 'pages.bin')).size - 4096),
      },
      {
        what: 'a flipped byte in entries.bin',
        reason: 'checksum-mismatch',
        message: /entries\.bin .*corrupt/,
        damage: (dir) => {
          const file = path.join(dir, 'entries.bin');
          const bytes = fs.readFileSync(file);
          bytes[bytes.length >> 1] ^= 0x01;
          fs.writeFileSync(file, bytes);
        },
      },
      {
        what: 'no manifest.json',
        reason: 'not-an-image',
        message: /no manifest\.json/,
        damage: (dir) => fs.rmSync(path.join(dir, 'manifest.json')),
      },
      {
        what: 'a newer format version',
        reason: 'unsupported-version',
        message: /"ferry-image" version 2\b.*reads only "ferry-image" version 1/,
        damage: (dir) => {
          // As a newer Ferry would write it: a consistent manifest, just a version this one does not know.
          const file = path.join(dir, 'manifest.json');
          const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
          manifest.formatVersion = 2;
          manifest.sha256 = manifestDigest(manifest);
          fs.writeFileSync(file, JSON.stringify(manifest));
        },
      },
    ];

    for (const { what, reason, message, damage } of damages) {
      it(`of an image with ${what} fails with ImageError '${reason}' and leaves nothing behind`, async () => {
        const dir = copyImage(image);
        damage(dir);
        await assert.rejects(restore(tracer, dir), { name: 'ImageError', reason, message });
        assertNothingLeft(pid);

        const result = await migrate(['restore', '-D', dir, '--json']);
        assert.equal(result.status, ExitCode.Failed, result.stdout + result.stderr);
        const error = cliError(result);
        assert.equal(error.reason, reason);
        assert.match(error.message, message);
        assert.equal(fs.existsSync(`/proc/${pid}`), false, `pid ${pid} is not taken`);
      });
    }

    it('taken on another kernel build is refused before anything is created, naming both kernels', async () => {
      const dir = copyImage(image);
      const file = path.join(dir, 'manifest.json');
      const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as { host: Record<string, string>; sha256: string };
      manifest.host.kernelBuild = '#1 SMP PREEMPT_DYNAMIC some other build';
      manifest.sha256 = manifestDigest(manifest);
      fs.writeFileSync(file, JSON.stringify(manifest));
      await assert.rejects(restore(tracer, dir), (e: Error & { problems?: string[] }) => {
        assert.equal(e.name, 'RestoreRefused');
        assert.ok(e.problems?.some((p) => p.includes('some other build') && p.includes(os.version())), e.message);
        return true;
      });
      assertNothingLeft(pid);
    });

    it('while the pid is taken is refused naming the pid, and the process holding it runs on', async () => {
      const w = await Workload.start(tracer, 'counter');
      const dir = imageDir();
      await checkpoint(tracer, w.pid, dir, { leaveRunning: true });

      await assert.rejects(restore(tracer, dir), (e: Error & { problems?: string[] }) => {
        assert.equal(e.name, 'RestoreRefused');
        assert.ok(e.problems?.some((p) => p.startsWith(`pid ${w.pid} is in use`)), e.message);
        return true;
      });
      assert.deepEqual(ourHusks(), [], 'no husk is left');

      const result = await migrate(['restore', '-D', dir, '--json']);
      assert.equal(result.status, ExitCode.Refused, result.stdout + result.stderr);
      assert.ok(cliError(result).problems?.some((p) => p.startsWith(`pid ${w.pid} is in use`)), result.stdout);
      assert.equal(await w.finish(), 'PASS');
    });

    it('of an image whose program file changed since the checkpoint is refused naming the file', async () => {
      const binary = path.join(tempDir(), 'counter');
      fs.copyFileSync(workloadBin('counter'), binary);
      const w = await Workload.start(tracer, 'counter', [], {}, { binary });
      const dir = imageDir();
      await checkpoint(tracer, w.pid, dir);
      fs.appendFileSync(binary, Buffer.from([0]));

      await assert.rejects(restore(tracer, dir), (e: Error & { problems?: string[] }) => {
        assert.equal(e.name, 'RestoreRefused');
        assert.ok(e.problems?.some((p) => p.includes(binary)), e.message);
        return true;
      });
      assertNothingLeft(w.pid);

      const result = await migrate(['restore', '-D', dir]);
      assert.equal(result.status, ExitCode.Refused, result.stdout + result.stderr);
      assert.ok(result.stderr.includes(binary), result.stderr);
      assert.equal(fs.existsSync(`/proc/${w.pid}`), false, `pid ${w.pid} is not taken`);
    });
  });
});
