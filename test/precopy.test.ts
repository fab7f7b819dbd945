import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { Tracer } from '../src/native/tracer.js';
import { NativeError } from '../src/native/errors.js';
import { readMemory } from '../src/native/memory.js';
import { readPagemapEntries, PM_ENTRY } from '../src/native/pagemap.js';
import { readStat } from '../src/native/proc.js';
import type { MethodChoice } from '../src/precopy/method.js';
import type { CollectResult, StartedTracker } from '../src/precopy/ops.js';
import type { LayoutChange, TrackerOptions } from '../src/precopy/tracker.js';
import type { DirtyRange } from '../src/precopy/dirty.js';
import { RangeSink } from '../src/precopy/dirty.js';
import { mergeRanges, subtractRanges } from '../src/precopy/layout.js';
import { Workload } from './helpers/workload.js';
import { useTracer } from './helpers/engine.js';
import { waitFor } from './helpers/wait.js';

const PAGE = 4096;
const SIGUSR1 = 10;
const SIGKILL = 9;
const OPS = [new URL('../src/precopy/ops.js', import.meta.url)];

interface Region {
  addr: number;
  pages: number;
}

/** test/workloads/dirtier, driven through its command file. */
class Dirtier {
  private seq = 0;

  private constructor(
    readonly w: Workload,
    private readonly tracer: Tracer,
  ) {}

  static async start(tracer: Tracer, mib = 4, threads = 0, ...options: string[]): Promise<Dirtier> {
    return new Dirtier(await Workload.start(tracer, 'dirtier', [String(mib), String(threads), ...options]), tracer);
  }

  get pid(): number {
    return this.w.pid;
  }

  /** Sends one command and returns its answer after OK (an ERR answer throws). */
  async cmd(text: string): Promise<string> {
    const seq = ++this.seq;
    const file = `${this.w.resultFile}.cmd`;
    fs.writeFileSync(`${file}.tmp`, `${seq} ${text}\n`);
    fs.renameSync(`${file}.tmp`, file);
    await this.tracer.call('kill', this.pid, SIGUSR1);
    let ack = '';
    await waitFor(`dirtier ${this.pid} to answer '${text}'`, () => {
      try {
        ack = fs.readFileSync(`${this.w.resultFile}.ack`, 'utf8');
      } catch {
        return false;
      }
      return ack.startsWith(`${seq} `);
    });
    const m = /^\d+ (OK|ERR) (.*)$/.exec(ack.trim());
    assert.ok(m, `unexpected answer ${ack}`);
    if (m[1] !== 'OK') throw new Error(`dirtier: ${text}: ${m[2]}`);
    return m[2]!;
  }

  async region(name: string, answer?: string): Promise<Region> {
    const text = answer ?? (await this.cmd(`addr ${name}`));
    const m = /addr=(0x[0-9a-f]+) pages=(\d+)/.exec(text);
    assert.ok(m, `no address in '${text}'`);
    return { addr: parseInt(m[1]!, 16), pages: Number(m[2]) };
  }

  async map(name: string, pages: number, opts = ''): Promise<Region> {
    return this.region(name, await this.cmd(`map ${name} ${pages} ${opts}`.trim()));
  }

  /** Waits until every thread sleeps in a syscall: from then on the process writes nothing until told to. */
  async idle(): Promise<void> {
    await waitFor(`dirtier ${this.pid} to be idle`, () => {
      for (const tid of fs.readdirSync(`/proc/${this.pid}/task`)) {
        const sc = fs.readFileSync(`/proc/${this.pid}/task/${tid}/syscall`, 'utf8');
        if (!/^\d+ /.test(sc) || readStat(this.pid, Number(tid)).fields[3] !== 'S') return false;
      }
      return true;
    });
  }
}

/** Page indexes (from the region's start) of the data ranges, or the zero ranges, that fall inside `r`. */
function pagesIn(ranges: DirtyRange[], r: Region, zero = false): number[] {
  const out: number[] = [];
  for (const d of ranges) {
    if (!!d.zero !== zero) continue;
    for (let i = 0; i < d.pages; i++) {
      const addr = d.addr + i * PAGE;
      if (addr >= r.addr && addr < r.addr + r.pages * PAGE) out.push((addr - r.addr) / PAGE);
    }
  }
  return out;
}

function overlaps(ranges: DirtyRange[], r: Region): DirtyRange[] {
  return ranges.filter((d) => d.addr < r.addr + r.pages * PAGE && d.addr + d.pages * PAGE > r.addr);
}

function seq(from: number, to: number, step = 1): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i += step) out.push(i);
  return out;
}

function uffdFds(pid: number | 'self'): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]') n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

/** Mappings whose VmFlags carry `uw` (registered for userfaultfd write-protection). */
function uwMappings(pid: number): string[] {
  const out: string[] = [];
  let head = '';
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) head = line;
    else if (line.startsWith('VmFlags:') && line.split(/\s+/).includes('uw')) out.push(head);
  }
  return out;
}

function minorFaults(pid: number): number {
  return Number(readStat(pid).fields[10]);
}

describe('dirty tracking for pre-copy (src/precopy)', function () {
  const session = useTracer(OPS);
  const started: number[] = [];

  afterEach(async () => {
    // Trackers hold userfaultfds in this process: never leave one behind a failed test.
    await session.tracer.call('precopyStopAll');
    started.length = 0;
  });

  async function start(pid: number, options: TrackerOptions = {}): Promise<StartedTracker> {
    const t = await session.tracer.call<StartedTracker>('precopyStart', pid, options);
    started.push(t.id);
    return t;
  }

  async function collect(t: StartedTracker): Promise<DirtyRange[]> {
    return (await session.tracer.call<CollectResult>('precopyCollect', t.id)).ranges;
  }

  it('chooses uffd-wp on this kernel and says why; soft-dirty is unavailable and says why', async () => {
    const choice = await session.tracer.call<MethodChoice>('precopyChoose');
    assert.equal(choice.method, 'uffd-wp');
    assert.match(choice.reason, /WP_ASYNC/);
    assert.match(choice.reason, /PAGEMAP_SCAN/);
    const byMethod = new Map(choice.candidates.map((c) => [c.method, c]));
    assert.deepEqual([...byMethod.keys()], ['uffd-wp', 'soft-dirty', 'hashing']);
    assert.equal(byMethod.get('soft-dirty')!.available, false);
    assert.match(byMethod.get('soft-dirty')!.reason, /CONFIG_MEM_SOFT_DIRTY|bit 55/);
    assert.equal(byMethod.get('hashing')!.available, true);
    const preflight = await session.tracer.call<MethodChoice & { lines: string[] }>('precopyPreflight');
    assert.match(preflight.lines[0]!, /^dirty tracking: uffd-wp$/);
    assert.equal(preflight.lines.length, 4);
  });

  it('reports nothing while the process does not write, exactly the pages it writes (never touched ones too), then nothing again', async () => {
    const d = await Dirtier.start(session.tracer, 4);
    const main = await d.region('main');
    const fresh = await d.map('fresh', 256);
    await d.idle();
    const t = await start(d.pid);
    assert.equal(t.method, 'uffd-wp');
    assert.deepEqual(t.fallbacks, []);

    assert.deepEqual(await collect(t), [], 'an idle process wrote nothing');
    assert.deepEqual(await collect(t), []);

    await d.cmd('write main 3,10-12,700,1023');
    await d.cmd('write fresh 0,77,200-255/5');
    await d.idle();
    const written = await collect(t);
    assert.deepEqual(pagesIn(written, main), [3, 10, 11, 12, 700, 1023]);
    assert.deepEqual(pagesIn(written, fresh), [0, 77, ...seq(200, 255, 5)], 'pages never touched before are reported when written');
    assert.deepEqual([...pagesIn(written, main, true), ...pagesIn(written, fresh, true)], [], 'nothing was discarded');
    assert.deepEqual(await collect(t), [], 'nothing since the last collect');

    // A first touch by reading is not a write (the mapping is protected where no page exists yet).
    await d.cmd('read fresh 100-150');
    await d.idle();
    assert.deepEqual(overlaps(await collect(t), fresh), []);

    await d.cmd('write main 3');
    await d.cmd('discard main 500-501');
    await d.idle();
    const later = await collect(t);
    assert.deepEqual(pagesIn(later, main), [3], 'a page is reported again when written again');
    assert.deepEqual(pagesIn(later, main, true), [500, 501], 'discarded pages are reported as zero');

    await session.tracer.call('precopyStop', t.id);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('follows mappings created, grown, moved, replaced and unmapped between rounds', async () => {
    const d = await Dirtier.start(session.tracer, 4);
    const main = await d.region('main');
    await d.idle();
    const t = await start(d.pid);

    // Created: registered by the next round, its written pages reported; the rest of it is new, hence zero.
    const a = await d.map('a', 64, 'room=64');
    await d.cmd('write a 1,2');
    await d.idle();
    const change = await session.tracer.call<LayoutChange>('precopyRefresh', t.id);
    assert.ok(change.added.some((r) => r.start <= a.addr && r.end >= a.addr + a.pages * PAGE), `the new mapping is added: ${JSON.stringify(change)}`);
    let got = await collect(t);
    assert.deepEqual(pagesIn(got, a), [1, 2]);
    assert.deepEqual(pagesIn(got, a, true), [0, ...seq(3, 63)]);
    assert.deepEqual(overlaps(await collect(t), a), []);

    // Grown in place: the new tail is covered.
    const grown = await d.region('a', await d.cmd('grow a 100'));
    assert.equal(grown.addr, a.addr, 'grown in place');
    await d.cmd('write a 90');
    await d.idle();
    got = await collect(t);
    assert.deepEqual(pagesIn(got, grown), [90]);
    assert.deepEqual(pagesIn(got, grown, true), seq(64, 99).filter((p) => p !== 90));
    assert.deepEqual(overlaps(await collect(t), grown), []);

    // Moved: the kernel drops the registration and protection of a moved mapping, so it comes back whole at its new address.
    const moved = await d.region('a', await d.cmd('move a'));
    assert.notEqual(moved.addr, grown.addr);
    await d.cmd('write a 5');
    await d.idle();
    got = await collect(t);
    assert.deepEqual(overlaps(got, grown), [], 'nothing at the old address');
    assert.deepEqual(pagesIn(got, moved), [1, 2, 5, 90], 'every page holding data, at the new address');
    assert.deepEqual(overlaps(await collect(t), moved), []);

    // Unmapped: never reported again, and the layout says it is gone.
    await d.cmd('unmap a');
    await d.cmd('write main 1');
    await d.idle();
    const removed = await session.tracer.call<LayoutChange>('precopyRefresh', t.id);
    assert.ok(removed.removed.some((r) => r.start <= moved.addr && r.end >= moved.addr + moved.pages * PAGE), `the mapping is removed: ${JSON.stringify(removed)}`);
    got = await collect(t);
    assert.deepEqual(overlaps(got, moved), []);
    assert.deepEqual(pagesIn(got, main), [1]);

    // Replaced: unmapped and mapped again, same size, at the same place; the maps look the same, the kernel knows better.
    const b = await d.map('b', 32, 'room=0');
    await d.cmd('write b 0-31');
    await d.idle();
    await collect(t);
    await d.cmd('unmap b');
    const c = await d.map('c', 32, 'room=0');
    await d.cmd('write c 7');
    await d.idle();
    got = await collect(t);
    assert.deepEqual(pagesIn(got, c), [7]);
    if (c.addr === b.addr) assert.deepEqual(pagesIn(got, c, true), seq(0, 31).filter((p) => p !== 7), 'the old pages are gone: zero');
    assert.deepEqual(overlaps(await collect(t), c), []);

    await session.tracer.call('precopyStop', t.id);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('tracks an address space written by several threads at once: copying what each round reports converges to the memory', async () => {
    const d = await Dirtier.start(session.tracer, 16, 4);
    const main = await d.region('main');
    await d.idle();
    const t = await start(d.pid);
    const shadow = Buffer.alloc(main.pages * PAGE);
    readMemory(d.pid, main.addr, shadow); // round 0
    const spun = new Set(seq(0, main.pages - 1, 3));
    await d.cmd(`spin main 0-${main.pages - 1}/3`);

    /** Reads what a round reported (the part inside the region: a range may go on into a neighbour) into the copy. */
    const copy = (ranges: DirtyRange[]) => {
      for (const r of overlaps(ranges, main)) {
        const start = Math.max(r.addr, main.addr);
        const end = Math.min(r.addr + r.pages * PAGE, main.addr + main.pages * PAGE);
        readMemory(d.pid, start, shadow.subarray(start - main.addr, end - main.addr));
      }
    };
    let rounds = 0;
    const gen = Buffer.alloc(8);
    for (let i = 0; i < 6; i++) {
      // Let the threads write before the next round: page 0's generation moves past the copy.
      await waitFor('the writer threads to write', () => {
        readMemory(d.pid, main.addr, gen);
        return !gen.equals(shadow.subarray(0, 8));
      });
      const got = await collect(t);
      const pages = pagesIn(got, main);
      assert.ok(pages.length > 0, 'the threads wrote');
      assert.deepEqual(pages.filter((p) => !spun.has(p)), [], 'only pages the threads write are reported');
      copy(got);
      rounds++;
    }
    const writes = Number(/writes=(\d+)/.exec(await d.cmd('stop'))![1]);
    assert.ok(writes > main.pages, `the threads kept writing between rounds (${writes} writes)`);
    await d.idle();
    copy(await collect(t));

    const actual = Buffer.alloc(main.pages * PAGE);
    readMemory(d.pid, main.addr, actual);
    for (let p = 0; p < main.pages; p++) {
      const want = actual.subarray(p * PAGE, (p + 1) * PAGE);
      if (!want.equals(shadow.subarray(p * PAGE, (p + 1) * PAGE))) assert.fail(`page ${p} of the copy is stale after ${rounds} rounds: generation ${shadow.readBigUInt64LE(p * PAGE)} copied, ${want.readBigUInt64LE(0)} in memory`);
    }
    await session.tracer.call('precopyStop', t.id);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('stop() leaves nothing in the process: no userfaultfd, no registration, no protected page, no extra faults', async () => {
    const ownBefore = uffdFds('self');
    const d = await Dirtier.start(session.tracer, 4);
    const main = await d.region('main');
    await d.idle();
    const t = await start(d.pid);
    assert.equal(uffdFds(d.pid), 0, 'the userfaultfd never stays in the process');
    for (const fd of fs.readdirSync(`/proc/${d.pid}/fdinfo`)) assert.doesNotMatch(fs.readFileSync(`/proc/${d.pid}/fdinfo/${fd}`, 'utf8'), /userfaultfd|pending:/);
    assert.equal(uffdFds('self'), ownBefore + 1, 'Ferry holds it');
    assert.ok(uwMappings(d.pid).length > 0, 'mappings are registered while tracking');

    // While tracked, the first write to each page after a round faults.
    await collect(t);
    let before = minorFaults(d.pid);
    await d.cmd('write main 0-199');
    assert.ok(minorFaults(d.pid) - before >= 200, `write faults while tracked: ${minorFaults(d.pid) - before}`);

    await session.tracer.call('precopyStop', t.id);
    assert.equal(uffdFds('self'), ownBefore, 'Ferry closed its userfaultfd');
    assert.deepEqual(uwMappings(d.pid), [], 'no mapping is registered any more');
    const protectedPages = readPagemapEntries(d.pid, main.addr, main.pages).filter((e) => (e & PM_ENTRY.UFFD_WP) !== 0n).length;
    assert.equal(protectedPages, 0, 'no page keeps its write-protect bit');
    before = minorFaults(d.pid);
    await d.cmd('write main 0-199');
    assert.ok(minorFaults(d.pid) - before < 10, `writes no longer fault: ${minorFaults(d.pid) - before} faults for 200 writes`);
    await assert.rejects(collect(t), /no dirty tracker/);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('leaves the memory workload intact: its own checks (maps, VmFlags, every byte, churn) pass after rounds of tracking', async () => {
    const w = await Workload.start(session.tracer, 'memory');
    const t = await start(w.pid);
    let pages = 0;
    for (let i = 0; i < 4; i++) {
      await waitFor('the churn to write', async () => {
        const got = await collect(t);
        pages += got.filter((r) => !r.zero).reduce((s, r) => s + r.pages, 0);
        return got.length > 0;
      });
    }
    assert.ok(pages > 0);
    await session.tracer.call('precopyStop', t.id);
    assert.equal(await w.finish(), 'PASS');
  });

  it('fails clearly, without hanging, for a process that dies while tracked', async () => {
    const d = await Dirtier.start(session.tracer, 4);
    await d.idle();
    const t = await start(d.pid);
    await d.cmd('write main 1');
    await session.tracer.call('kill', d.pid, SIGKILL);
    await waitFor('the process to die', () => !d.w.alive());
    await assert.rejects(collect(t), (e: unknown) => {
      assert.ok(e instanceof NativeError, `got ${String(e)}`);
      assert.equal(e.code, 'ESRCH');
      assert.match(e.message, new RegExp(`pid ${d.pid} failed because the process has ended`));
      return true;
    });
    await assert.rejects(collect(t), /is stopped/, 'the tracker stopped itself');
    await session.tracer.call('precopyStop', t.id);
    await session.tracer.call('reap', d.pid, 5000);
    await assert.rejects(start(d.pid), (e: unknown) => e instanceof NativeError && e.code === 'ESRCH' && /has ended/.test(e.message));
  });

  it('refuses to start on a zombie', async () => {
    const d = await Dirtier.start(session.tracer, 1);
    await session.tracer.call('kill', d.pid, SIGKILL);
    await waitFor('the process to be a zombie', () => readStat(d.pid).fields[3] === 'Z');
    await assert.rejects(start(d.pid), (e: unknown) => e instanceof NativeError && e.code === 'ESRCH');
  });

  it('hashing, the last resort, also finds exactly the written pages', async () => {
    const d = await Dirtier.start(session.tracer, 4);
    const main = await d.region('main');
    const fresh = await d.map('fresh', 64);
    await d.idle();
    const t = await start(d.pid, { method: 'hashing' });
    assert.equal(t.method, 'hashing');
    assert.deepEqual(await collect(t), [], 'nothing changed');
    await d.cmd('write main 0,511-513,1000');
    await d.cmd('write fresh 9,63');
    await d.idle();
    const got = await collect(t);
    assert.deepEqual(pagesIn(got, main), [0, 511, 512, 513, 1000]);
    assert.deepEqual(pagesIn(got, fresh), [9, 63], 'pages that hold data for the first time count as written');
    assert.deepEqual(await collect(t), []);
    await session.tracer.call('precopyStop', t.id);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('falls back to hashing, and says why, in a process whose seccomp filter forbids userfaultfd', async () => {
    const d = await Dirtier.start(session.tracer, 4, 0, 'no-userfaultfd');
    const main = await d.region('main');
    const choice = await session.tracer.call<MethodChoice>('precopyChoose', d.pid);
    assert.equal(choice.method, 'uffd-wp', 'the host has it');
    assert.match(choice.reason, /seccomp filter/, 'and the process may not allow it');
    await assert.rejects(start(d.pid, { method: 'uffd-wp' }), (e: unknown) => e instanceof NativeError && e.code === 'EPERM' && /userfaultfd/.test(e.message));
    await d.idle();
    const t = await start(d.pid);
    assert.equal(t.method, 'hashing');
    assert.equal(t.fallbacks.length, 1);
    assert.match(t.fallbacks[0]!, /^uffd-wp: userfaultfd \(injected into \d+\).*EPERM/);
    assert.match(t.reason, /not uffd-wp/);
    assert.equal(uffdFds(d.pid), 0);
    await d.cmd('write main 5');
    await d.idle();
    assert.deepEqual(pagesIn(await collect(t), main), [5]);
    await session.tracer.call('precopyStop', t.id);
    assert.equal(await d.w.finish(), 'PASS');
  });

  it('leaves uffd-wp alone in a process that has a userfaultfd of its own', async () => {
    const w = await Workload.start(session.tracer, 'unsupported', ['userfaultfd']);
    const t = await start(w.pid);
    assert.equal(t.method, 'hashing');
    assert.match(t.fallbacks[0]!, /uses userfaultfd itself \(fd 40\)/);
    await session.tracer.call('precopyStop', t.id);
    assert.equal(await w.finish(), 'PASS');
  });

  it('refuses a method this kernel lacks, with the reason', async () => {
    const d = await Dirtier.start(session.tracer, 1);
    await assert.rejects(start(d.pid, { method: 'soft-dirty' }), /soft-dirty is not available here: .*(CONFIG_MEM_SOFT_DIRTY|bit 55)/);
    assert.equal(await d.w.finish(), 'PASS');
  });

  describe('range bookkeeping', () => {
    it('joins adjacent pages of the same kind and sorts them', () => {
      const s = new RangeSink();
      s.add(3 * PAGE, 4 * PAGE);
      s.add(0, PAGE);
      s.add(PAGE, 2 * PAGE);
      s.add(4 * PAGE, 6 * PAGE, true);
      s.add(2 * PAGE, 3 * PAGE);
      assert.deepEqual(s.ranges(), [
        { addr: 0, pages: 4 },
        { addr: 4 * PAGE, pages: 2, zero: true },
      ]);
    });

    it('merges and subtracts address ranges', () => {
      const a = mergeRanges([
        { start: 10, end: 20 },
        { start: 0, end: 5 },
        { start: 5, end: 8 },
        { start: 15, end: 30 },
      ]);
      assert.deepEqual(a, [
        { start: 0, end: 8 },
        { start: 10, end: 30 },
      ]);
      assert.deepEqual(subtractRanges(a, [{ start: 2, end: 3 }, { start: 12, end: 40 }]), [
        { start: 0, end: 2 },
        { start: 3, end: 8 },
        { start: 10, end: 12 },
      ]);
    });
  });
});
