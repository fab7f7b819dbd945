/**
 * The husk: the smallest static x86_64 ELF that Linux runs. One RWX PT_LOAD at
 * `base` holds the headers and a loop that calls pause() forever:
 *
 *   entry:   mov eax, 34        ; __NR_pause
 *   gadget:  syscall            ; injected syscalls are single-stepped here
 *            jmp entry
 *
 * The husk is spawned, seized and then driven purely by injected syscalls;
 * its pause() only keeps it harmless until a tracer takes over.
 */
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const CODE_OFFSET = EHDR_SIZE + PHDR_SIZE;
const CODE = Buffer.from([0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7, 0xcc]);
const GADGET_OFFSET = CODE_OFFSET + 5;

export const HUSK_SIZE = CODE_OFFSET + CODE.length;

export interface HuskLayout {
  base: number;
  entry: number;
  /** Address of the husk's `syscall` instruction. */
  gadget: number;
  /** The page range the kernel maps for it. */
  start: number;
  end: number;
}

export function huskLayout(base: number): HuskLayout {
  if (base % 4096 !== 0 || base <= 0 || base >= 2 ** 47 - 4096) throw new RangeError(`husk base 0x${base.toString(16)} must be page-aligned user-space address`);
  return { base, entry: base + CODE_OFFSET, gadget: base + GADGET_OFFSET, start: base, end: base + 4096 };
}

export function writeHuskElf(base: number): Buffer {
  const { entry } = huskLayout(base);
  const elf = Buffer.alloc(HUSK_SIZE);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // magic, 64-bit, little-endian, version 1, SysV
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(62, 18); // EM_X86_64
  elf.writeUInt32LE(1, 20); // EV_CURRENT
  elf.writeBigUInt64LE(BigInt(entry), 24);
  elf.writeBigUInt64LE(BigInt(EHDR_SIZE), 32); // e_phoff
  elf.writeBigUInt64LE(0n, 40); // e_shoff: no sections
  elf.writeUInt32LE(0, 48); // e_flags
  elf.writeUInt16LE(EHDR_SIZE, 52);
  elf.writeUInt16LE(PHDR_SIZE, 54);
  elf.writeUInt16LE(1, 56); // e_phnum
  const ph = EHDR_SIZE;
  elf.writeUInt32LE(1, ph); // PT_LOAD
  elf.writeUInt32LE(7, ph + 4); // PF_R | PF_W | PF_X
  elf.writeBigUInt64LE(0n, ph + 8); // p_offset
  elf.writeBigUInt64LE(BigInt(base), ph + 16); // p_vaddr
  elf.writeBigUInt64LE(BigInt(base), ph + 24); // p_paddr
  elf.writeBigUInt64LE(BigInt(HUSK_SIZE), ph + 32); // p_filesz
  elf.writeBigUInt64LE(BigInt(HUSK_SIZE), ph + 40); // p_memsz
  elf.writeBigUInt64LE(0x1000n, ph + 48); // p_align
  CODE.copy(elf, CODE_OFFSET);
  return elf;
}
