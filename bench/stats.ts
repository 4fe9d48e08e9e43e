/** Medians, percentiles and the result table. */
export interface Series {
  name: string;
  layer: string;
  op: string;
  samplesMs: number[];
}

export interface Summary {
  layer: string;
  op: string;
  n: number;
  medianMs: number;
  p95Ms: number;
  maxMs: number;
  ratioToRaw: number | null;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return sorted[Math.max(0, i)];
}

export function summarize(series: Series[]): Summary[] {
  const rawMedian = new Map<string, number>();
  const out = series.map((s) => {
    const sorted = [...s.samplesMs].sort((a, b) => a - b);
    const median = quantile(sorted, 0.5);
    if (s.layer === 'raw QMP') rawMedian.set(s.op, median);
    return { layer: s.layer, op: s.op, n: sorted.length, medianMs: median, p95Ms: quantile(sorted, 0.95), maxMs: sorted[sorted.length - 1], ratioToRaw: null as number | null };
  });
  for (const s of out) {
    const raw = rawMedian.get(s.op);
    s.ratioToRaw = raw ? s.medianMs / raw : null;
  }
  return out;
}

export function table(rows: Summary[]): string {
  const head = ['operation', 'layer', 'n', 'median ms', 'p95 ms', 'max ms', 'x raw'];
  const body = rows.map((r) => [r.op, r.layer, String(r.n), r.medianMs.toFixed(2), r.p95Ms.toFixed(2), r.maxMs.toFixed(2), r.ratioToRaw === null ? '' : r.ratioToRaw.toFixed(2)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

export async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}
