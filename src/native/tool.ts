/**
 * The Debian tools Ferry drives instead of reimplementing them (ip from
 * iproute2, nsenter and unshare from util-linux, nft from nftables), run
 * synchronously with their failures turned into errors that name the
 * command and repeat what it printed.
 */
import { spawnSync } from 'node:child_process';

/** Where each tool comes from, for the message when it is missing. */
const PACKAGES: Record<string, string> = { ip: 'iproute2', nsenter: 'util-linux', unshare: 'util-linux', nft: 'nftables' };

export class ToolError extends Error {
  readonly code = 'TOOL_FAILED';
  readonly call: string;

  constructor(
    readonly argv: readonly string[],
    readonly status: number | null,
    readonly stderr: string,
  ) {
    const how = status === null ? 'was killed' : `exited with ${status}`;
    super(`${argv.join(' ')} ${how}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
    this.name = 'ToolError';
    this.call = argv[0]!;
  }
}

/** The error for a tool that is not installed, saying which package brings it. */
export function missingTool(name: string): Error {
  const pkg = PACKAGES[name];
  return new Error(`${name} is not installed${pkg ? ` (Debian package ${pkg}; scripts/setup.sh installs it)` : ''}`);
}

/** Runs argv to completion and returns its stdout; a non-zero exit throws ToolError. */
export function runTool(argv: readonly string[], options: { input?: string } = {}): string {
  const result = spawnSync(argv[0]!, argv.slice(1), {
    input: options.input,
    encoding: 'utf8',
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (result.error) {
    if ((result.error as NodeJS.ErrnoException).code === 'ENOENT') throw missingTool(argv[0]!);
    throw result.error;
  }
  if (result.status !== 0) throw new ToolError(argv, result.status, result.stderr);
  return result.stdout;
}
