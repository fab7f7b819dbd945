import fs from 'node:fs';

/**
 * bench/RESULTS.md is shared by every benchmark: each one owns the section
 * between its two markers and rewrites only that, so running one benchmark
 * keeps the others' last results.
 */

const start = (name: string) => `<!-- bench:${name}:start -->`;
const end = (name: string) => `<!-- bench:${name}:end -->`;
const SECTION = /<!-- bench:([\w-]+):start -->\n([\s\S]*?)<!-- bench:\1:end -->/g;

export function readSections(file: string): Map<string, string> {
  const out = new Map<string, string>();
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const m of text.matchAll(SECTION)) out.set(m[1]!, m[2]!);
  return out;
}

/**
 * Writes the file: the intro, then sections in `order` (names not in it,
 * from older runs, after them). Written under a temporary name and renamed,
 * so an interrupted run never leaves half a file.
 */
export function writeResults(file: string, intro: string, order: string[], updated: Map<string, string>): void {
  const sections = readSections(file);
  for (const [name, body] of updated) sections.set(name, body.endsWith('\n') ? body : body + '\n');
  const names = [...order.filter((n) => sections.has(n)), ...[...sections.keys()].filter((n) => !order.includes(n))];
  const text = [intro.trimEnd() + '\n', ...names.map((n) => `${start(n)}\n${sections.get(n)!}${end(n)}\n`)].join('\n');
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
