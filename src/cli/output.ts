/**
 * Everything a command prints as its result goes through here, so `--json`
 * means the same for every command: exactly one JSON object on stdout.
 */
let jsonOutput = false;

export function setJsonOutput(enabled: boolean): void {
  jsonOutput = enabled;
}

export function isJsonOutput(): boolean {
  return jsonOutput;
}

/** Prints `data` as one line of JSON under --json, otherwise what `renderHuman` makes of it. */
export function printResult<T>(data: T, renderHuman: (data: T) => string): void {
  const text = jsonOutput ? JSON.stringify(data) : renderHuman(data);
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Left-aligned columns separated by two spaces, headed by `headers`. */
export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const formatRow = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [formatRow(headers), ...rows.map(formatRow)].join('\n');
}

/** One record as "name  value" lines, the values aligned. */
export function formatFields(fields: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(0, ...fields.map(([name]) => name.length));
  return fields.map(([name, value]) => `${name.padEnd(width)}  ${value}`).join('\n');
}
