/** The targets, judged per line against numbers from the same run. */
import { API, CLI } from './master-layer';
import { NODE_STARTUP, NODE_STARTUP_OP } from './references';
import { NODED } from './noded-layer';
import { OPS } from './ops';
import { LEVELS, scalingOp } from './scaling';
import { listOp } from './list-bench';
import type { Summary } from './stats';

type Judge = (r: Summary, find: (layer: string, op: string) => Summary | undefined) => { target: string; limit: number } | undefined;

const isOp = (op: string): boolean => (OPS as readonly string[]).includes(op);
const raw = (r: Summary): number | undefined => (r.ratioToRaw ? r.medianMs / r.ratioToRaw : undefined);

const JUDGES: Judge[] = [
  (r) => {
    const floor = raw(r);
    if (r.layer !== NODED || !isOp(r.op) || floor === undefined) return undefined;
    return { target: '<= 1.3x raw + 2 ms', limit: 1.3 * floor + 2 };
  },
  (r) => {
    const floor = raw(r);
    if (r.layer !== API || !isOp(r.op) || floor === undefined) return undefined;
    return { target: '<= 2x raw + 10 ms', limit: 2 * floor + 10 };
  },
  (r, find) => {
    const api = find(API, r.op);
    const node = find(NODE_STARTUP, NODE_STARTUP_OP);
    if (r.layer !== CLI || !isOp(r.op) || !api || !node) return undefined;
    return { target: '<= API + node start-up', limit: api.medianMs + node.medianMs };
  },
  (r, find) => {
    const base = find(NODED, scalingOp(0));
    const level = LEVELS.find((n) => n > 0 && r.op === scalingOp(n));
    if (r.layer !== NODED || level === undefined || !base) return undefined;
    return { target: '<= 1.2x the 0-device median', limit: 1.2 * base.medianMs };
  },
  (r) => ((r.layer === API || r.layer === CLI) && r.op === listOp(10_000) ? { target: '< 200 ms', limit: 200 } : undefined),
];

export function judgeTargets(rows: Summary[]): Summary[] {
  const find = (layer: string, op: string): Summary | undefined => rows.find((x) => x.layer === layer && x.op === op);
  return rows.map((r) => {
    for (const j of JUDGES) {
      const t = j(r, find);
      if (t) return { ...r, target: `${t.target} (${t.limit.toFixed(1)})`, met: r.medianMs <= t.limit };
    }
    return r;
  });
}
