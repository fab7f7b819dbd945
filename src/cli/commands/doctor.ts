import type { Command } from 'commander';
import {
  cgroupFreezers,
  effectiveCapabilities,
  effectiveUid,
  findExecutable,
  hasUserfaultfd,
  kernelRelease,
  kernelVersionAtLeast,
  machineArchitecture,
  pidMax,
  ptraceScope,
} from '../../native/host.js';
import { ExitCode } from '../exit-codes.js';
import { formatTable, printResult } from '../output.js';

interface Check {
  name: string;
  ok: boolean;
  /** A failed required check means Ferry cannot work here; a failed optional one costs a feature. */
  required: boolean;
  detail: string;
}

interface DoctorReport {
  /** Every required check passed. */
  ok: boolean;
  checks: Check[];
}

export function register(program: Command): void {
  program
    .command('doctor')
    .description('check that this host can run Ferry')
    .addHelpText('after', '\nExits 3 when a required check fails; "warn" marks a missing optional feature.')
    .action(() => {
      const checks = runChecks();
      const report: DoctorReport = { ok: checks.every((check) => check.ok || !check.required), checks };
      printResult(report, renderReport);
      if (!report.ok) process.exitCode = ExitCode.Unsupported;
    });
}

function runChecks(): Check[] {
  const capabilities = effectiveCapabilities();
  const hasCapability = (name: string, purpose: string): Check => ({
    name,
    ok: capabilities.has(name),
    required: true,
    detail: capabilities.has(name) ? purpose : `not in the effective set: needed to ${purpose}`,
  });
  return [
    checkKernel(),
    checkArchitecture(),
    checkRoot(),
    hasCapability('CAP_CHECKPOINT_RESTORE', 'restore pids and mm fields'),
    hasCapability('CAP_SYS_PTRACE', 'attach to any process'),
    checkPtraceScope(capabilities.has('CAP_SYS_PTRACE')),
    checkCgroupFreezer(),
    checkUserfaultfd(),
    checkPidMax(),
    checkGcc(),
  ];
}

function checkKernel(): Check {
  const ok = kernelVersionAtLeast(6, 7);
  const release = kernelRelease();
  return { name: 'kernel', ok, required: true, detail: ok ? release : `${release}: need 6.7 or later (PAGEMAP_SCAN)` };
}

function checkArchitecture(): Check {
  const architecture = machineArchitecture();
  const ok = architecture === 'x86_64';
  return { name: 'architecture', ok, required: true, detail: ok ? architecture : `${architecture}: Ferry supports x86_64 only` };
}

function checkRoot(): Check {
  const uid = effectiveUid();
  return { name: 'root', ok: uid === 0, required: true, detail: uid === 0 ? 'euid 0' : `euid ${uid}: run as root` };
}

function checkPtraceScope(hasSysPtrace: boolean): Check {
  const scope = ptraceScope();
  const name = 'ptrace_scope';
  if (scope === null) return { name, ok: true, required: true, detail: 'no Yama: classic ptrace rules' };
  if (scope <= 1) return { name, ok: true, required: true, detail: String(scope) };
  // Scope 2 lets only CAP_SYS_PTRACE holders attach, which Ferry already requires.
  if (scope === 2) {
    return {
      name,
      ok: hasSysPtrace,
      required: true,
      detail: hasSysPtrace ? '2: admin-only attach, allowed by CAP_SYS_PTRACE' : '2: admin-only attach, and CAP_SYS_PTRACE is missing',
    };
  }
  return { name, ok: false, required: true, detail: `${scope}: ptrace is disabled until reboot` };
}

function checkCgroupFreezer(): Check {
  const { v1, v2 } = cgroupFreezers();
  const found = [v2 !== null ? `cgroup2 at ${v2}` : null, v1 !== null ? `v1 freezer at ${v1}` : null].filter(
    (entry): entry is string => entry !== null,
  );
  return {
    name: 'cgroup freezer',
    ok: found.length > 0,
    required: true,
    detail: found.length > 0 ? found.join(', ') : 'neither a cgroup2 mount nor a v1 freezer hierarchy',
  };
}

function checkUserfaultfd(): Check {
  const ok = hasUserfaultfd();
  return {
    name: 'userfaultfd',
    ok,
    required: false,
    detail: ok ? 'dirty tracking with uffd-wp' : 'missing: pre-copy falls back to soft-dirty or page hashing',
  };
}

function checkPidMax(): Check {
  return { name: 'pid_max', ok: true, required: false, detail: `${pidMax()}: restored pids must stay below it` };
}

function checkGcc(): Check {
  const gcc = findExecutable('gcc');
  return {
    name: 'gcc',
    ok: gcc !== null,
    required: false,
    detail: gcc ?? 'missing: only the tests need it (bash scripts/setup.sh)',
  };
}

function renderReport(report: DoctorReport): string {
  const rows = report.checks.map((check) => [check.name, statusWord(check), check.detail]);
  const failed = report.checks.filter((check) => check.required && !check.ok).map((check) => check.name);
  const verdict = report.ok ? 'this host can run Ferry' : `this host cannot run Ferry: ${failed.join(', ')}`;
  return `${formatTable(['check', 'status', 'detail'], rows)}\n\n${verdict}`;
}

function statusWord(check: Check): string {
  if (check.ok) return 'ok';
  return check.required ? 'FAIL' : 'warn';
}
