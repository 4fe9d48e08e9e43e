/** Samples, medians and percentiles, and the result tables. */
export const RAW = 'raw QMP';

export interface Series {
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
  /** This line's median over the raw QMP median of the same operation, measured in this run. */
  ratioToRaw: number | null;
  /** The target in words, and whether it was met (null: no target for this line). */
  target: string;
  met: boolean | null;
}

export function quantile(sorted: readonly number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return sorted[Math.max(0, i)];
}

export const median = (xs: readonly number[]): number => quantile([...xs].sort((a, b) => a - b), 0.5);

/** Collects samples by layer and operation, in first-seen order. */
export class Recorder {
  private readonly byKey = new Map<string, Series>();

  series(layer: string, op: string): Series {
    const key = `${layer}|${op}`;
    let s = this.byKey.get(key);
    if (!s) {
      s = { layer, op, samplesMs: [] };
      this.byKey.set(key, s);
    }
    return s;
  }

  add(layer: string, op: string, ms: number): void {
    this.series(layer, op).samplesMs.push(ms);
  }

  /** Times `fn` and records it. */
  async time(layer: string, op: string, fn: () => Promise<unknown>): Promise<number> {
    const ms = await time(fn);
    this.add(layer, op, ms);
    return ms;
  }

  all(): Series[] {
    return [...this.byKey.values()];
  }
}

export function summarize(series: readonly Series[]): Summary[] {
  const rawMedian = new Map(series.filter((s) => s.layer === RAW).map((s) => [s.op, median(s.samplesMs)]));
  return series.map((s) => {
    const sorted = [...s.samplesMs].sort((a, b) => a - b);
    const med = quantile(sorted, 0.5);
    const raw = rawMedian.get(s.op);
    return {
      layer: s.layer, op: s.op, n: sorted.length, medianMs: med, p95Ms: quantile(sorted, 0.95), maxMs: sorted[sorted.length - 1],
      ratioToRaw: raw ? med / raw : null, target: '', met: null,
    };
  });
}

export function metText(met: boolean | null): string {
  return met === null ? '' : met ? 'yes' : 'NO';
}

/** A plain text table: the first `leftCols` columns left-aligned, the rest right-aligned. */
export function textTable(head: string[], body: string[][], leftCols: number): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < leftCols || i >= head.length - 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

export function table(rows: readonly Summary[]): string {
  const head = ['operation', 'layer', 'n', 'median ms', 'p95 ms', 'max ms', 'x raw', 'target', 'met'];
  const body = rows.map((r) => [
    r.op, r.layer, String(r.n), r.medianMs.toFixed(2), r.p95Ms.toFixed(2), r.maxMs.toFixed(2),
    r.ratioToRaw === null ? '' : r.ratioToRaw.toFixed(2), r.target || '-', metText(r.met),
  ]);
  return textTable(head, body, 2);
}

export async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
