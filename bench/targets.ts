/**
 * The targets (issue 14), judged per line against numbers from the
 * same run. Each rule prints as words plus its limit in ms for this run.
 */
import { API, CLI } from './master-layer';
import { NODE_STARTUP, NODE_STARTUP_OP } from './references';
import { NODED } from './noded-layer';
import { OPS, REMOVES } from './ops';
import { GUEST_EVENT } from './guest-visible';
import { LEVELS, scalingOp } from './scaling';
import { listOp } from './list-bench';
import type { Summary } from './stats';

type Find = (layer: string, op: string) => Summary | undefined;
type Judge = (r: Summary, find: Find) => { target: string; limit: number } | undefined;

const isOp = (op: string): boolean => (OPS as readonly string[]).includes(op);
const isRemove = (op: string): boolean => (REMOVES as readonly string[]).includes(op);
/** The raw QMP median of this line's operation in this run. */
const raw = (r: Summary): number | undefined => (r.ratioToRaw ? r.medianMs / r.ratioToRaw : undefined);

/** `factor` x raw + `plusMs`, for lines of `layer` whose operation `ops` accepts. */
const overRaw = (layer: string, ops: (op: string) => boolean, factor: number, plusMs: number): Judge => (r) => {
  const floor = raw(r);
  if (r.layer !== layer || !ops(r.op) || floor === undefined) return undefined;
  return { target: `<= ${factor}x raw + ${plusMs} ms`, limit: factor * floor + plusMs };
};

const under = (layer: string, op: string, ms: number): Judge => (r) =>
  (r.layer === layer && r.op === op ? { target: `< ${ms} ms`, limit: ms } : undefined);

const JUDGES: Judge[] = [
  // gnt-noded HotplugDevice / InstanceResize: adds within 1.3x raw + 2 ms, removes within 1.1x raw + 2 ms
  overRaw(NODED, (op) => isOp(op) && !isRemove(op), 1.3, 2),
  overRaw(NODED, isRemove, 1.1, 2),
  // the master API end to end (submit, job, wait for its end)
  overRaw(API, isOp, 1.5, 5),
  // a CLI process: the API, Node's own start-up and 15 ms
  (r, find) => {
    const api = find(API, r.op);
    const node = find(NODE_STARTUP, NODE_STARTUP_OP);
    if (r.layer !== CLI || !isOp(r.op) || !api || !node) return undefined;
    return { target: '<= API + node start-up + 15 ms', limit: api.medianMs + node.medianMs + 15 };
  },
  // a NIC add with 8, 16, 24 devices present, against raw at the same count
  overRaw(NODED, (op) => LEVELS.some((n) => n > 0 && op === scalingOp(n)), 1.3, 2),
  // the guest's own report of a hot-added NIC (its kernel's probe is the floor)
  (r) => {
    const floor = raw(r);
    if (r.layer !== GUEST_EVENT || r.op !== 'NIC add' || floor === undefined) return undefined;
    return { target: '<= raw + 30 ms', limit: floor + 30 };
  },
  under(API, listOp(10_000), 200),
  under(CLI, listOp(10_000), 300),
];

export function judgeTargets(rows: Summary[]): Summary[] {
  const find: Find = (layer, op) => rows.find((x) => x.layer === layer && x.op === op);
  return rows.map((r) => {
    for (const j of JUDGES) {
      const t = j(r, find);
      if (t) return { ...r, target: `${t.target} (${t.limit.toFixed(1)})`, met: r.medianMs <= t.limit };
    }
    return r;
  });
}
