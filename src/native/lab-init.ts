/**
 * The init of a simulated host: pid 1 of its own pid namespace, the
 * process that holds the host's pid, mount, uts, ipc and net namespaces
 * open, and the reaper of every orphan in them.
 *
 * The init is bash running a loop. It has to reap: once `migrate run`
 * exits inside a host, the container's init is reparented to the host's
 * pid 1, and so is an agent whose starter exited. A zombie holds its pid,
 * and a restore that needs that pid fails. bash reaps every child it gets
 * (its SIGCHLD handler waits for any pid, known job or not), pid 1 of a
 * namespace ignores the signals it has no handler for (so nothing inside
 * can kill the host by accident), and bash is in Debian's base system,
 * whereas tini or dumb-init would be one more package and a compiled init
 * of our own would need a compiler at run time. Node would do too, at ten
 * times the memory per host. The agent is not the init: the host must
 * survive its agent dying and being started again.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { nsPids, readStat } from './proc.js';
import { kill } from './process.js';
import { missingTool } from './tool.js';

/** $0 of every lab init: how a `lab down` that lost its record still finds them. */
const MARKER = 'ferry-lab-init';

/**
 * pid 1's program, $1 being the host name: its own /proc (the inherited one
 * shows the machine's pids), its own /dev/shm (what agents stage there in
 * memory is the host's, and goes with it), its hostname, then stdio
 * closed, which tells the starter that setup is done, then reaping
 * forever. `sleep` only gives `wait` something to wait on; every orphan's
 * exit interrupts it and is reaped, and if the sleep is killed the loop
 * starts another.
 */
const INIT_SCRIPT =
  'mount -t proc -o nosuid,nodev,noexec proc /proc && mount -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm && ' +
  'echo "$1" > /proc/sys/kernel/hostname && exec </dev/null >/dev/null 2>&1 && while :; do sleep infinity & wait; done';

/**
 * Runs in the machine's pid namespace with its children going into the new
 * one (unshare --pid without --fork), so its first child is pid 1 there.
 * It prints that child's pid as the machine sees it and exits, leaving the
 * init to be adopted by the machine's init (or the nearest subreaper):
 * nothing of ours has to stay behind. (`unshare --fork` would keep an
 * unshare process waiting as the init's parent for as long as it lives.)
 */
const LAUNCHER = `bash -c "$1" ${MARKER} "$2" & echo $!`;

/** A process as started: a later process with the same pid has another start time. */
export interface ProcessId {
  pid: number;
  /** /proc/PID/stat field 22, clock ticks after boot. */
  startTime: number;
}

/**
 * Starts the init of host `name` in new pid, mount (with private
 * propagation), uts, ipc and net namespaces, with `env` as its environment,
 * and resolves once its /proc and hostname are in place.
 */
export function startLabInit(name: string, env: NodeJS.ProcessEnv, timeoutMs = 10_000): Promise<ProcessId> {
  const argv = ['--pid', '--mount', '--uts', '--ipc', '--net', '--propagation', 'private', '--', 'bash', '-c', LAUNCHER, 'ferry-lab-launch', INIT_SCRIPT, name];
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', argv, { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const pidPrinted = (): number | null => (/^\d+\n/.test(stdout) ? Number.parseInt(stdout, 10) : null);
    const timer = setTimeout(() => {
      const pid = pidPrinted();
      if (pid !== null) killQuietly(pid);
      reject(new Error(`the init of lab host ${name} did not finish its setup within ${timeoutMs} ms${stderr ? `: ${stderr.trim()}` : ''}`));
    }, timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' ? missingTool('unshare') : e);
    });
    // The pipes close when the launcher has exited and the init has closed its stdio: setup is over, well or badly.
    child.on('close', (status) => {
      clearTimeout(timer);
      const pid = pidPrinted();
      const init = pid === null ? null : readInit(pid);
      if (status === 0 && init !== null && init.host === name) resolve({ pid: init.pid, startTime: init.startTime });
      else reject(new Error(`cannot start the init of lab host ${name}${stderr ? `: ${stderr.trim()}` : ` (unshare exited with ${status})`}`));
    });
  });
}

/** A running lab init as /proc shows it. */
export interface FoundLabInit extends ProcessId {
  host: string;
}

/** Every live lab init on the machine, found by its command line, whatever any record says. */
export function findLabInits(): FoundLabInit[] {
  const found: FoundLabInit[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const init = readInit(Number(entry));
    if (init) found.push(init);
  }
  return found.sort((a, b) => a.host.localeCompare(b.host, 'en', { numeric: true }));
}

/** The lab init with this pid, or null if the pid is something else (or gone, or a zombie, whose command line is empty). */
function readInit(pid: number): FoundLabInit | null {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (argv.length !== 6 || argv[1] !== '-c' || argv[2] !== INIT_SCRIPT || argv[3] !== MARKER) return null;
    // pid 1 of its namespace: not the launcher's child before it got that far, nor a copy of the command line elsewhere.
    if (nsPids(pid).at(-1) !== 1) return null;
    return { pid, host: argv[4]!, startTime: Number(readStat(pid).fields[22]) };
  } catch {
    return null;
  }
}

/** Whether the process still runs: not gone, not a zombie, not a newer process with its pid. */
export function stillRunning(p: ProcessId): boolean {
  try {
    const stat = readStat(p.pid);
    return stat.fields[3] !== 'Z' && stat.fields[3] !== 'X' && Number(stat.fields[22]) === p.startTime;
  } catch {
    return false;
  }
}

function killQuietly(pid: number): void {
  try {
    kill(pid, 9);
  } catch {
    // Already gone.
  }
}
