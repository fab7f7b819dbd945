import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError, formatErrorLine } from '../src/cli/errors.js';
import { EXIT_CODE_MEANINGS, ExitCode } from '../src/cli/exit-codes.js';
import { formatTable } from '../src/cli/output.js';
import { NativeError } from '../src/native/errors.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const migrateBin = join(repoRoot, 'bin', 'migrate');

function migrate(args: string[], wrapper: string[] = []): SpawnSyncReturns<string> {
  const command = [...wrapper, process.execPath, migrateBin, ...args];
  return spawnSync(command[0]!, command.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface DoctorReport {
  ok: boolean;
  checks: Array<{ name: string; ok: boolean; required: boolean; detail: string }>;
}

describe('migrate CLI', () => {
  it('--help lists the commands and every exit code', () => {
    const result = migrate(['--help']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^\s+doctor\s/m);
    for (const [code, meaning] of EXIT_CODE_MEANINGS) assert.ok(result.stdout.includes(`${code}  ${meaning}`), meaning);
  });

  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const result = migrate(['--version']);
    assert.equal(result.status, 0);
    assert.equal(result.stdout.trim(), version);
  });

  it('an unknown command is a usage error that names the command', () => {
    const result = migrate(['teleport']);
    assert.equal(result.status, ExitCode.Usage);
    assert.match(result.stderr, /^migrate: unknown command 'teleport'/m);
    assert.equal(result.stdout, '');
  });

  it('with --json a usage error is one JSON object on stdout', () => {
    const result = migrate(['--json', 'teleport']);
    assert.equal(result.status, ExitCode.Usage);
    const { error } = JSON.parse(result.stdout) as { error: Record<string, unknown> };
    assert.deepEqual(error, { message: "unknown command 'teleport'", code: 'USAGE', errno: null, call: null });
  });

  it('no command at all is a usage error that shows the help', () => {
    const result = migrate([]);
    assert.equal(result.status, ExitCode.Usage);
    assert.match(result.stderr, /Usage: migrate/);
  });

  it('doctor --json reports every check and passes on this host', () => {
    const result = migrate(['doctor', '--json']);
    assert.equal(result.status, ExitCode.Ok, result.stdout + result.stderr);
    const report = JSON.parse(result.stdout) as DoctorReport;
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.checks.map((check) => check.name),
      ['kernel', 'architecture', 'root', 'CAP_CHECKPOINT_RESTORE', 'CAP_SYS_PTRACE', 'ptrace_scope', 'cgroup freezer', 'userfaultfd', 'pid_max', 'gcc'],
    );
    for (const check of report.checks) assert.ok(check.ok || !check.required, `${check.name}: ${check.detail}`);
  });

  it('doctor prints a table a person can read', () => {
    const result = migrate(['doctor']);
    assert.equal(result.status, ExitCode.Ok, result.stderr);
    assert.match(result.stdout, /^check\s+status\s+detail$/m);
    assert.match(result.stdout, /^kernel\s+ok\s+\d+\.\d+/m);
    assert.match(result.stdout, /this host can run Ferry/);
  });

  it('doctor exits 3 and names the check when CAP_CHECKPOINT_RESTORE is missing', () => {
    const result = migrate(['doctor', '--json'], ['setpriv', '--bounding-set', '-checkpoint_restore']);
    assert.equal(result.status, ExitCode.Unsupported, result.stderr);
    const report = JSON.parse(result.stdout) as DoctorReport;
    assert.equal(report.ok, false);
    const failed = report.checks.filter((check) => !check.ok).map((check) => check.name);
    assert.deepEqual(failed, ['CAP_CHECKPOINT_RESTORE']);
  });

  it('says how to build when dist/ is missing, and exits 3', () => {
    const unbuilt = mkdtempSync(join(tmpdir(), 'ferry-unbuilt-'));
    try {
      mkdirSync(join(unbuilt, 'bin'));
      copyFileSync(migrateBin, join(unbuilt, 'bin', 'migrate'));
      const result = spawnSync(process.execPath, [join(unbuilt, 'bin', 'migrate'), 'doctor'], { encoding: 'utf8' });
      assert.equal(result.status, ExitCode.Unsupported);
      assert.equal(result.stderr.trim(), 'ferry is not built: run `npm ci` (or `npm run build`)');
    } finally {
      rmSync(unbuilt, { recursive: true, force: true });
    }
  });
});

describe('CLI error reports', () => {
  it('carry errno, code and call from native errors', () => {
    const nativeError = Object.assign(new Error('cannot attach to pid 4242'), {
      errno: 3,
      code: 'ESRCH',
      call: 'ptrace(PTRACE_SEIZE)',
    });
    const report = describeError(nativeError);
    assert.deepEqual(report, { message: 'cannot attach to pid 4242', code: 'ESRCH', errno: 3, call: 'ptrace(PTRACE_SEIZE)' });
    assert.equal(formatErrorLine(report), 'migrate: cannot attach to pid 4242 (call ptrace(PTRACE_SEIZE), errno 3 ESRCH)');
  });

  it('do not repeat the call and code a NativeError already names', () => {
    const report = describeError(new NativeError('ptrace(PTRACE_SEIZE)', 3, 'pid 4242'));
    assert.equal(report.code, 'ESRCH');
    assert.equal(report.call, 'ptrace(PTRACE_SEIZE)');
    assert.equal(formatErrorLine(report), `migrate: ${report.message} (errno 3)`);
  });

  it('read Node system errors the same way', () => {
    const nodeError = Object.assign(new Error("ENOENT: no such file or directory, open '/nonexistent'"), {
      errno: -2,
      code: 'ENOENT',
      syscall: 'open',
    });
    assert.deepEqual(describeError(nodeError), { message: nodeError.message, code: 'ENOENT', errno: 2, call: 'open' });
  });

  it('are just the message for plain errors', () => {
    assert.equal(formatErrorLine(describeError(new Error('image is corrupt'))), 'migrate: image is corrupt');
  });
});

describe('formatTable', () => {
  it('pads every column but the last', () => {
    const table = formatTable(['check', 'status', 'detail'], [['kernel', 'ok', '6.18'], ['root', 'FAIL', 'euid 1000']]);
    assert.equal(table, ['check   status  detail', 'kernel  ok      6.18', 'root    FAIL    euid 1000'].join('\n'));
  });
});
