import assert from 'node:assert/strict';
import { writeHuskElf, huskLayout, HUSK_SIZE } from '../../src/native/elf.js';
import { decodeWaitStatus } from '../../src/native/wait.js';
import { Regs } from '../../src/native/regs.js';

describe('husk ELF writer', () => {
  it('writes a 64-bit little-endian x86_64 executable with one RWX PT_LOAD at the base', () => {
    const base = 0x7f0000000000;
    const elf = writeHuskElf(base);
    assert.equal(elf.length, HUSK_SIZE);
    assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    assert.equal(elf[4], 2, 'ELFCLASS64');
    assert.equal(elf.readUInt16LE(16), 2, 'ET_EXEC');
    assert.equal(elf.readUInt16LE(18), 62, 'EM_X86_64');
    assert.equal(Number(elf.readBigUInt64LE(24)), huskLayout(base).entry);
    assert.equal(elf.readUInt16LE(56), 1, 'one program header');
    assert.equal(elf.readUInt32LE(64), 1, 'PT_LOAD');
    assert.equal(elf.readUInt32LE(68), 7, 'RWX');
    assert.equal(Number(elf.readBigUInt64LE(64 + 16)), base);
    const gadget = huskLayout(base).gadget - base;
    assert.deepEqual([...elf.subarray(gadget, gadget + 2)], [0x0f, 0x05], 'the gadget is a syscall instruction');
  });

  it('refuses a base that is not page-aligned or not in user space', () => {
    assert.throws(() => huskLayout(0x10000010), /page-aligned/);
    assert.throws(() => huskLayout(2 ** 47), /page-aligned/);
  });
});

describe('wait status decoding', () => {
  it('tells exits, kills, ptrace stops with events and continues apart', () => {
    assert.deepEqual(decodeWaitStatus(5, 3 << 8), { kind: 'exited', pid: 5, code: 3 });
    assert.deepEqual(decodeWaitStatus(5, 9), { kind: 'killed', pid: 5, signal: 9, core: false });
    assert.deepEqual(decodeWaitStatus(5, 0x8b), { kind: 'killed', pid: 5, signal: 11, core: true });
    assert.deepEqual(decodeWaitStatus(5, (128 << 16) | (5 << 8) | 0x7f), { kind: 'stopped', pid: 5, signal: 5, event: 128 });
    assert.deepEqual(decodeWaitStatus(5, 0xffff), { kind: 'continued', pid: 5 });
  });
});

describe('register file', () => {
  it('keeps 64-bit values exact and reads them signed', () => {
    const r = new Regs();
    r.set('orig_rax', -1n).set('rip', 0x7fffdeadbeefn).set('rax', -516);
    assert.equal(r.get('orig_rax'), 0xffffffffffffffffn);
    assert.equal(r.signed('orig_rax'), -1n);
    assert.equal(r.signed('rax'), -516n);
    assert.equal(r.get('rip'), 0x7fffdeadbeefn);
    assert.equal(r.toJSON().rip, '0x7fffdeadbeef');
  });
});
