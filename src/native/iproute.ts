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
