import type { Op } from './tracer-protocol.js';
import { spawn, kill, type SpawnOptions } from './process.js';
import { attachAndStop, detach, type AttachOptions } from './attach.js';
import { Injector } from './inject.js';
import { Husk } from './husk.js';
import { getRegs, getSeccompFilter } from './ptrace.js';
import { reap, type WaitStatus } from './wait.js';
import { readMemory } from './memory.js';

/** One syscall to inject. Buffer arguments are copied into the task's scratch memory; `out` reserves an out-buffer whose content is returned. */
export interface InjectedCall {
  name?: string;
  nr: number;
  args?: Array<number | bigint | { data: Uint8Array } | { out: number }>;
}

export interface InjectedResult {
  /** The raw kernel result: a negative errno on failure. */
  result: number;
  outs: Uint8Array[];
}

export function runInjected(inj: Injector, calls: InjectedCall[]): InjectedResult[] {
  const results: InjectedResult[] = [];
  for (const call of calls) {
    inj.reset();
    const outs: Array<{ addr: number; size: number }> = [];
    const args = (call.args ?? []).map((a) => {
      if (typeof a === 'number' || typeof a === 'bigint') return a;
      if ('data' in a) return inj.put(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength));
      const addr = inj.reserve(a.out);
      outs.push({ addr, size: a.out });
      return addr;
    });
    const result = Number(inj.callRaw(call.nr, ...args));
    results.push({ result, outs: outs.map((o) => new Uint8Array(inj.read(o.addr, o.size))) });
  }
  inj.reset();
  return results;
}

const husks = new Map<number, Husk>();

function husk(pid: number): Husk {
  const h = husks.get(pid);
  if (!h) throw new Error(`no husk with pid ${pid} in this tracer`);
  return h;
}

/** Operations every tracer thread has; engine modules add their own. */
export const coreOps: Record<string, Op> = {
  spawn: (_ctx, path: string, options: SpawnOptions) => spawn(path, options),
  attach: (_ctx, pid: number, options: AttachOptions) => attachAndStop(pid, options),
  detach: (_ctx, pid: number) => detach(pid),
  regs: (_ctx, pid: number) => getRegs(pid).toJSON(),
  seccompFilter: (_ctx, pid: number, index: number) => {
    const f = getSeccompFilter(pid, index);
    return f ? new Uint8Array(f) : null;
  },
  inject: (_ctx, pid: number, calls: InjectedCall[]) => {
    const inj = new Injector(pid);
    try {
      return runInjected(inj, calls);
    } finally {
      inj.end();
    }
  },
  injectBatch: (_ctx, pid: number, calls: Array<{ nr: number; args?: number[] }>) => {
    const inj = new Injector(pid);
    try {
      return inj.batchRaw(calls).map(Number);
    } finally {
      inj.end();
    }
  },
  readMemory: (_ctx, pid: number, addr: number, len: number) => {
    const out = Buffer.alloc(len);
    readMemory(pid, addr, out);
    return new Uint8Array(out);
  },
  kill: (_ctx, pid: number, signal: number) => kill(pid, signal),
  reap: (_ctx, pid: number, timeoutMs?: number): WaitStatus => reap(pid, timeoutMs),
  'husk.spawn': (_ctx, base?: number) => {
    const h = Husk.spawn(base);
    husks.set(h.pid, h);
    return { pid: h.pid, ...h.layout };
  },
  'husk.clone': (_ctx, parent: number, args: { setTid?: number[]; flags?: number }) => {
    const child = husk(parent).clone(args);
    husks.set(child.pid, child);
    return child.pid;
  },
  'husk.inject': (_ctx, pid: number, calls: InjectedCall[]) => runInjected(husk(pid).injector, calls),
  'husk.kill': (_ctx, pid: number) => {
    const h = husk(pid);
    for (const p of h.treePids()) husks.delete(p);
    h.kill();
  },
};
