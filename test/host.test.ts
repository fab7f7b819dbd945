import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  cgroupFreezers,
  effectiveCapabilities,
  effectiveUid,
  findExecutable,
  hasUserfaultfd,
  kernelRelease,
  kernelVersion,
  kernelVersionAtLeast,
  machineArchitecture,
  pidMax,
  ptraceScope,
} from '../src/native/host.js';

/** Output of a host tool, trimmed; the tools are the reference the probes are checked against. */
function run(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8' }).trim();
}

function sysctl(name: string): string | null {
  const result = spawnSync('sysctl', ['-n', name], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : null;
}

describe('native/host', () => {
  it('kernelRelease matches uname -r', () => {
    assert.equal(kernelRelease(), run('uname', ['-r']));
  });

  it('kernelVersionAtLeast compares major and minor numerically', () => {
    const { major, minor } = kernelVersion();
    assert.equal(run('uname', ['-r']).startsWith(`${major}.${minor}`), true);
    assert.equal(kernelVersionAtLeast(major, minor), true);
    assert.equal(kernelVersionAtLeast(major, minor + 1), false);
    assert.equal(kernelVersionAtLeast(major + 1, 0), false);
    assert.equal(kernelVersionAtLeast(major - 1, 99), true);
  });

  it('machineArchitecture matches uname -m', () => {
    assert.equal(machineArchitecture(), run('uname', ['-m']));
  });

  it('effectiveUid matches id -u', () => {
    assert.equal(effectiveUid(), Number(run('id', ['-u'])));
  });

  it('effectiveCapabilities matches what setpriv decodes', () => {
    const dump = run('setpriv', ['--dump', '--dump']);
    const line = dump.split('\n').find((candidate) => candidate.startsWith('Effective capabilities:'));
    assert.ok(line, `no effective capabilities in:\n${dump}`);
    const listed = line.slice('Effective capabilities:'.length).trim();
    const expected = listed === '[none]' ? [] : listed.split(',').map((name) => `CAP_${name.toUpperCase()}`);
    assert.deepEqual([...effectiveCapabilities()].sort(), expected.sort());
  });

  it('effectiveCapabilities sees a capability dropped from the bounding set', () => {
    const hostModule = new URL('../src/native/host.js', import.meta.url).href;
    const script = `import { effectiveCapabilities } from '${hostModule}'; console.log([...effectiveCapabilities()].join(' '));`;
    const names = run('setpriv', ['--bounding-set', '-checkpoint_restore', process.execPath, '--input-type=module', '-e', script]).split(' ');
    assert.equal(names.includes('CAP_CHECKPOINT_RESTORE'), false);
    assert.equal(names.includes('CAP_SYS_PTRACE'), true);
  });

  it('ptraceScope matches sysctl kernel.yama.ptrace_scope (null without Yama)', () => {
    const value = sysctl('kernel.yama.ptrace_scope');
    assert.equal(ptraceScope(), value === null ? null : Number(value));
  });

  it('pidMax matches sysctl kernel.pid_max', () => {
    assert.equal(pidMax(), Number(sysctl('kernel.pid_max')));
  });

  it('cgroupFreezers finds the mounts findmnt lists', () => {
    const mounts = run('findmnt', ['--raw', '--noheadings', '--output', 'TARGET,FSTYPE,OPTIONS'])
      .split('\n')
      .map((line) => line.split(' '))
      .map(([target, fsType, options]) => ({ target, fsType, options: (options ?? '').split(',') }));
    const v1 = mounts.find((mount) => mount.fsType === 'cgroup' && mount.options.includes('freezer'));
    const v2 = mounts.find((mount) => mount.fsType === 'cgroup2');
    assert.deepEqual(cgroupFreezers(), { v1: v1?.target ?? null, v2: v2?.target ?? null });
  });

  it('hasUserfaultfd agrees with calling userfaultfd(UFFD_USER_MODE_ONLY)', () => {
    const probe = 'import ctypes; print(ctypes.CDLL(None).syscall(323, 1) >= 0)';
    assert.equal(hasUserfaultfd(), run('python3', ['-c', probe]) === 'True');
  });

  it('findExecutable agrees with command -v', () => {
    assert.equal(findExecutable('sh'), run('sh', ['-c', 'command -v sh']));
    assert.equal(findExecutable('ferry-no-such-program'), null);
  });
});
