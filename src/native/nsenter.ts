/**
 * Entering another process's namespaces with util-linux's nsenter, for
 * programs that must run inside them (a command in a lab host, `ip` in its
 * network namespace).
 */
import { spawn } from 'node:child_process';
import { missingTool } from './tool.js';

/** The namespaces nsenter can enter, by its long option names. */
export type NsenterNamespace = 'mount' | 'uts' | 'ipc' | 'net' | 'pid';

/**
 * The argv prefix that runs a program in `pid`'s namespaces. Entering a pid
 * namespace makes nsenter fork (only children are born into it), so the
 * program runs as nsenter's child and nsenter exits with its status. With
 * the mount namespace entered, the working directory is `/` of that
 * namespace.
 */
export function nsenterArgv(pid: number, namespaces: readonly NsenterNamespace[]): string[] {
  const argv = ['nsenter', `--target=${pid}`, ...namespaces.map((ns) => `--${ns}`)];
  if (namespaces.includes('mount')) argv.push('--wdns=/');
  return [...argv, '--'];
}

export interface RunInOptions {
  env: NodeJS.ProcessEnv;
  /** 'inherit' passes our stdin, stdout and stderr through; 'capture' collects stdout and stderr (stdin is /dev/null). */
  stdio: 'inherit' | 'capture';
}

export interface RunInResult {
  /** The program's exit status (nsenter's own is 126/127 when it cannot run it); null when a signal ended it. */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `argv` inside `pid`'s namespaces and resolves when it has ended. */
export function runIn(pid: number, namespaces: readonly NsenterNamespace[], argv: readonly string[], options: RunInOptions): Promise<RunInResult> {
  const [command, ...args] = [...nsenterArgv(pid, namespaces), ...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(command!, args, { env: options.env, stdio: options.stdio === 'inherit' ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // Only nsenter itself can be missing here: a missing program inside is nsenter's exit 127.
    child.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? missingTool('nsenter') : e));
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}
