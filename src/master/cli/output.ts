/** Aligned tables, key/value blocks and JSON output. */

export type OutputFormat = 'table' | 'json';

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd())
    .join('\n') + '\n';
}

/** Indented "key: value" lines; nested arrays and objects are indented further. */
export function block(entries: [string, unknown][], indent = 0): string {
  const pad = ' '.repeat(indent);
  let out = '';
  for (const [k, v] of entries) {
    if (Array.isArray(v)) {
      out += `${pad}${k}:${v.length ? '' : ' none'}\n`;
      for (const item of v) out += typeof item === 'object' && item !== null ? block(Object.entries(item), indent + 4).replace(/^ {4}/, `${pad}  - `) : `${pad}  - ${String(item)}\n`;
    } else if (typeof v === 'object' && v !== null) {
      out += `${pad}${k}:\n${block(Object.entries(v), indent + 2)}`;
    } else out += `${pad}${k}: ${v === '' || v === undefined ? '-' : String(v)}\n`;
  }
  return out;
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}
