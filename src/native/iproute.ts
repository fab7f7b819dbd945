/**
 * Network links and addresses through iproute2's `ip`, in our network
 * namespace or in the one of a given process (entered with nsenter).
 */
import { nsenterArgv } from './nsenter.js';
import { ToolError, runTool } from './tool.js';

function ipArgv(args: readonly string[], netnsOf?: number): string[] {
  return [...(netnsOf === undefined ? [] : nsenterArgv(netnsOf, ['net'])), 'ip', ...args];
}

/** `ip <args>`, in our network namespace or in that of process `netnsOf`; returns what it printed. */
export function ip(args: readonly string[], netnsOf?: number): string {
  return runTool(ipArgv(args, netnsOf));
}

/** Several `ip` commands (one per line, without the leading `ip`) in one process; the first failure stops the rest. */
export function ipBatch(commands: readonly string[], netnsOf?: number): void {
  runTool(ipArgv(['-batch', '-'], netnsOf), { input: `${commands.join('\n')}\n` });
}

/** The names of the network interfaces of our network namespace. */
export function linkNames(): string[] {
  return (JSON.parse(ip(['-json', 'link', 'show'])) as Array<{ ifname: string }>).map((link) => link.ifname);
}

export function linkExists(name: string): boolean {
  return linkNames().includes(name);
}

/**
 * Deletes a link (both ends, for a veth); false when there was none. A
 * link that vanishes while we delete it (a veth whose other end's
 * namespace is being torn down) counts as none.
 */
export function deleteLink(name: string): boolean {
  if (!linkExists(name)) return false;
  try {
    ip(['link', 'delete', name]);
    return true;
  } catch (e) {
    if (e instanceof ToolError && !linkExists(name)) return false;
    throw e;
  }
}

/** `ip -json <args>` parsed, in our network namespace or in that of process `netnsOf`. */
export function ipJson<T>(args: readonly string[], netnsOf?: number): T {
  const out = ip(['-json', ...args], netnsOf).trim();
  // Some versions print nothing at all, not [], for an empty list.
  return (out ? JSON.parse(out) : []) as T;
}

const END_OF_OUTPUT = '--ferry-ip-json-end--';

/**
 * Several `ip -json` commands (each an argv without the leading `ip
 * -json`) run by one shell, in our network namespace or in that of
 * process `netnsOf`; their parsed outputs, in order. One process start
 * instead of one per command: it counts while a container is frozen.
 */
export function ipJsonEach(commands: ReadonlyArray<readonly string[]>, netnsOf?: number): unknown[] {
  const quote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
  const script = commands.map((argv) => `ip -json ${argv.map(quote).join(' ')} && echo ${END_OF_OUTPUT}`).join(' && ');
  const out = runTool([...(netnsOf === undefined ? [] : nsenterArgv(netnsOf, ['net'])), 'sh', '-c', script]);
  const parts = out.split(`${END_OF_OUTPUT}\n`).slice(0, commands.length);
  if (parts.length !== commands.length) throw new Error(`ip printed ${parts.length} results for ${commands.length} commands: ${out.slice(0, 200)}`);
  return parts.map((p) => (p.trim() ? JSON.parse(p) : []));
}
