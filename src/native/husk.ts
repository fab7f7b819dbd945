import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { PTRACE_O } from './ptrace.js';
import { attachAndStop, waitForTrapStop } from './attach.js';
import { Injector } from './inject.js';
import { writeHuskElf, huskLayout, type HuskLayout } from './elf.js';
import { spawn, kill, becomeChildSubreaper } from './process.js';
import { waitpid, WAIT } from './wait.js';
import { nsPids, processExists } from './proc.js';

/** Where husks live unless the image needs the address: high enough to miss a typical non-PIE binary, low enough to miss mmap's top-down area. */
export const DEFAULT_HUSK_BASE = 0x10000000;

const SIGCHLD = 17;
const SIGKILL = 9;
const CLONE_VM = 0x100;
const CLONE_THREAD = 0x10000;
/** What a thread of a restored process is cloned with: everything a pthread shares. TLS comes with the registers. */
export const THREAD_CLONE_FLAGS = CLONE_VM | 0x200 /* FS */ | 0x400 /* FILES */ | 0x800 /* SIGHAND */ | CLONE_THREAD | 0x40000 /* SYSVSEM */;
const CLONE_ARGS_SIZE = 88;

/**
 * glibc keeps signals 32 and 33 for itself and will not reset them through
 * posix_spawn, so a husk inherits whatever disposition Ferry's process has
 * for them (ignored). Ignored signals survive execve and a restore only
 * re-installs handlers that were not default, so put them back to default.
 */
function resetReservedSignals(injector: Injector): void {
  const act = injector.put(Buffer.alloc(32));
  injector.batch('rt_sigaction(32, 33, SIG_DFL)', [32, 33].map((signo) => ({ nr: Sys.rt_sigaction, args: [signo, act, 0, 8] })));
  injector.reset();
}

/** Options every husk is traced with: husks must die with their tracer (a half-built restore never runs on its own), and children created inside them are traced automatically. */
const HUSK_PTRACE_OPTIONS = PTRACE_O.EXITKILL | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.TRACEVFORK | PTRACE_O.TRACESYSGOOD;

export interface CloneArgs {
  /** The pid the child must get: in its innermost namespace first, then outwards; levels left out are the kernel's choice. Empty lets the kernel choose every level. */
  setTid?: number[];
  /** CLONE_* flags; exit_signal is SIGCHLD for processes and 0 for threads. */
  flags?: number;
  stack?: number;
  tls?: number;
  /** The signal the parent gets when the child exits (SIGCHLD unless the original said otherwise). */
  exitSignal?: number;
}

/**
 * A restore placeholder: a process running only Ferry's tiny ELF, stopped
 * under ptrace and driven by injected syscalls until it becomes the saved
 * process. Must be used from the thread that spawned it (ptrace's rule).
 */
export class Husk {
  readonly pid: number;
  readonly layout: HuskLayout;
  readonly injector: Injector;
  /** Husks cloned from this one, so a failed restore can remove the whole tree. */
  readonly children: Husk[] = [];

  private constructor(pid: number, layout: HuskLayout, injector: Injector) {
    this.pid = pid;
    this.layout = layout;
    this.injector = injector;
  }

  static spawn(base = DEFAULT_HUSK_BASE, timeoutMs = 10_000, scratchHint: number | null = null): Husk {
    const layout = huskLayout(base);
    becomeChildSubreaper();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-husk-'));
    const file = path.join(dir, 'ferry-husk');
    let pid: number;
    try {
      fs.writeFileSync(file, writeHuskElf(base), { mode: 0o755 });
      pid = spawn(file, { argv: ['ferry-husk'], env: {}, newSession: true });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    try {
      attachAndStop(pid, { options: HUSK_PTRACE_OPTIONS, timeoutMs });
    } catch (e) {
      killQuietly(pid);
      throw e;
    }
    const injector = new Injector(pid, layout.gadget);
    injector.scratchHint = scratchHint;
    resetReservedSignals(injector);
    return new Husk(pid, layout, injector);
  }

  /**
   * Creates a child husk with clone3, with exactly the pid asked for
   * (CAP_CHECKPOINT_RESTORE lets set_tid choose it). The child shares
   * nothing with this husk but copies of its memory; its inherited copy of
   * the scratch mapping becomes the child's own scratch.
   */
  clone(args: CloneArgs = {}): Husk {
    const inj = this.injector;
    const flags = args.flags ?? 0;
    const setTid = args.setTid ?? [];
    inj.reset();
    let tidAddr = 0;
    if (setTid.length) {
      const tids = Buffer.alloc(setTid.length * 4);
      setTid.forEach((t, i) => tids.writeInt32LE(t, i * 4));
      tidAddr = inj.put(tids);
    }
    const ca = Buffer.alloc(CLONE_ARGS_SIZE);
    ca.writeBigUInt64LE(BigInt(flags), 0);
    ca.writeBigUInt64LE(BigInt(flags & CLONE_THREAD ? 0 : (args.exitSignal ?? SIGCHLD)), 32);
    ca.writeBigUInt64LE(BigInt(args.stack ?? 0), 40);
    ca.writeBigUInt64LE(BigInt(args.tls ?? 0), 56);
    ca.writeBigUInt64LE(BigInt(tidAddr), 64);
    ca.writeBigUInt64LE(BigInt(setTid.length), 72);
    const caAddr = inj.put(ca);
    const eventsBefore = inj.children.length;
    let returned: number;
    try {
      returned = inj.call(`clone3(set_tid=[${setTid.join(',')}])`, Sys.clone3, caAddr, CLONE_ARGS_SIZE);
    } finally {
      inj.reset();
    }
    // clone3 returns the pid the husk sees (inside a container, the inner one; for a new namespace's init, the host's); the fork event carries ours.
    const child = inj.children.length > eventsBefore ? inj.children[inj.children.length - 1]!.pid : returned;
    if (setTid.length) {
      const got = nsPids(child).slice(-setTid.length).reverse();
      if (got.join('/') !== setTid.join('/')) throw new NativeError('clone3', Errno.EINVAL, `asked for pid ${setTid.join('/')}, got ${got.join('/')}`);
    }
    waitForTrapStop(child, 10_000);
    const childInjector = new Injector(child, inj.gadget);
    if (flags & CLONE_VM) {
      childInjector.shareScratchOf(inj);
    } else {
      childInjector.scratchHint = inj.scratchHint;
      childInjector.dropInheritedScratch(inj.scratchRange);
    }
    const husk = new Husk(child, this.layout, childInjector);
    this.children.push(husk);
    return husk;
  }

  /** Every pid of this husk's tree, parents before children. */
  treePids(): number[] {
    return [this.pid, ...this.children.flatMap((c) => c.treePids())];
  }

  /**
   * Kills only this husk; its children are reparented to us (a subreaper),
   * so a restored process ends up as our child, not the husk's.
   */
  release(): void {
    killAndReap([this.pid]);
  }

  /** Kills the husk and everything cloned from it, and reaps them all. */
  kill(): void {
    killAndReap(this.treePids());
  }
}

function killQuietly(pid: number): void {
  killAndReap([pid]);
}

/**
 * SIGKILLs every pid, then collects each one until the kernel has no more to
 * tell us about it: first the tracer's exit notification, then, once its
 * parent is gone and it has been reparented to us (we are a subreaper), the
 * parent's. A pid that is not ours to reap (ECHILD) is left to its parent.
 */
export function killAndReap(pids: number[]): void {
  for (const pid of pids) {
    try {
      kill(pid, SIGKILL);
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5_000;
  const pending = new Set(pids);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (pending.size && Date.now() < deadline) {
    for (const pid of [...pending]) {
      try {
        waitpid(pid, WAIT.WNOHANG);
      } catch {
        // ECHILD: either fully reaped, or a zombie whose parent dies next and hands it to us
        if (!processExists(pid)) pending.delete(pid);
      }
    }
    if (pending.size) Atomics.wait(pause, 0, 0, 1);
  }
}
