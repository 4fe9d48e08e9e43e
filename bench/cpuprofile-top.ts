/**
 * The functions with the most self time in V8 CPU profiles (node --cpu-prof),
 * e.g. the daemons' profiles from a run with GNT_BENCH_PROFILE_DIR=DIR:
 *   node dist/bench/cpuprofile-top.js DIR/*.cpuprofile
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function where(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url ? path.basename(f.url.replace(/^file:\/\//, '')) : '';
  return `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : ''}`.trim();
}

function top(file: string, count: number): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const node = byId.get(id);
    if (node) self.set(where(node), (self.get(where(node)) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  });
  const total = (p.endTime - p.startTime) / 1000;
  const busy = [...self.entries()].filter(([k]) => !k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, count);
  return [`${path.basename(file)}: ${total.toFixed(0)} ms wall, ${busy.toFixed(0)} ms on the CPU`,
    ...rows.map(([k, v]) => `  ${v.toFixed(1).padStart(9)} ms  ${k}`)].join('\n');
}

for (const f of process.argv.slice(2)) console.log(top(f, Number(process.env.TOP ?? 15)) + '\n');
