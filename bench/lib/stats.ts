/** Small statistics and formatting helpers shared by the benchmarks. */

export interface Summary {
  n: number;
  median: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of already sorted samples. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((s, x) => s + x, 0);
  return {
    n: sorted.length,
    median: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    min: sorted[0] ?? NaN,
    max: sorted[sorted.length - 1] ?? NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
  };
}

export function median(samples: readonly number[]): number {
  return summarize(samples).median;
}

/** Throughput in GB/s (10^9 bytes per second). */
export function gbps(bytes: number, ms: number): number {
  return bytes / (ms / 1000) / 1e9;
}

/** A number with about three significant digits, never in exponent notation. */
export function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 10 ** digits) return Math.round(x).toLocaleString('en-US');
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(abs)));
  return x.toFixed(Math.min(decimals, 6));
}

export function mib(bytes: number): string {
  return fmt(bytes / (1 << 20));
}

/** Bytes in the largest binary unit that keeps the number at least 1 (whole numbers without decimals). */
export function size(bytes: number): string {
  const units: Array<[number, string]> = [
    [2 ** 30, 'GiB'],
    [2 ** 20, 'MiB'],
    [2 ** 10, 'KiB'],
  ];
  for (const [unit, name] of units) {
    if (bytes < unit) continue;
    const n = bytes / unit;
    return `${Number.isInteger(n) ? n : fmt(n)} ${name}`;
  }
  return `${bytes} B`;
}

/** A markdown table; columns whose header starts with a letter are left-aligned, the rest (numbers) right-aligned. */
export function table(header: string[], rows: Array<Array<string | number>>, align?: Array<'l' | 'r'>): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const al = align ?? header.map((_, i) => (cells.every((r) => /^[-–\d.,\s×%]*$/.test(r[i] ?? '')) ? 'r' : 'l'));
  const widths = header.map((h, i) => Math.max(h.length, 3, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (al[i] === 'r' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ') + ' |';
  const rule = '|' + widths.map((w, i) => (al[i] === 'r' ? '-'.repeat(w + 1) + ':' : ':' + '-'.repeat(w + 1))).join('|') + '|';
  return [line(header), rule, ...cells.map(line)].join('\n');
}
