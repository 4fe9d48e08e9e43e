/**
 * Operations: one row per live change the master sends to a node
 * (HotplugDevice, InstanceResize), keyed by the operation id the request
 * carries. The row, with the configuration change to commit on success, is
 * inserted and committed before the node is called, so whatever is killed
 * when, the master knows which outcomes it still owes the configuration.
 *
 *   sent ──► succeeded | failed            (the node's answer, OperationStatus
 *     │                                     or a record of its OperationLog)
 *     └──► removal_pending ──► succeeded   (the guest released the device)
 *
 * settleOperation() is the one way an operation ends, for every path (the
 * job's own reply, the job's OperationStatus polling, the convergence loop,
 * an instance start): in one transaction it commits the configuration change
 * and marks the row final, and does nothing for a row that is already final,
 * so each change is committed exactly once. What a change is and how it is
 * committed belongs to its kind (jobs/device-changes/, one module per kind).
 */
import { randomUUID } from 'node:crypto';
import { nowIso } from '../config/db';
import type { ConfigStore, InstanceConfig } from '../config/config-store';
import { changeKind, type OpChange } from './device-changes/registry';

export type OpState = 'sent' | 'removal_pending' | 'succeeded' | 'failed';
export const FINAL_STATES: ReadonlySet<OpState> = new Set(['succeeded', 'failed']);

export type { OpChange } from './device-changes/registry';

export interface OperationRow {
  id: string;
  job_id: number | null;
  instance_uuid: string;
  instance_name: string;
  node_uuid: string;
  kind: OpChange['kind'];
  action: OpChange['action'];
  device_uuid: string;
  change_json: string;
  state: OpState;
  error_code: string;
  error: string;
  created_at: string;
  settled_at: string;
  settled_by: string;
}

export interface Resources {
  vcpus: number;
  memoryMib: number;
}

/** How an operation ended (or reached removal_pending), and who said so. */
export type Outcome =
  | { state: 'succeeded'; settledBy: string }
  | { state: 'removal_pending'; settledBy: string }
  | { state: 'failed'; settledBy: string; errorCode: string; error: string; resources?: Resources };

export interface SettleResult {
  /** The row after the call. */
  op: OperationRow;
  /** False when the row was already in that state or final: nothing was done. */
  applied: boolean;
  /** What happened, for job logs and the instance history. */
  summary: string;
}

export class OperationError extends Error {
  constructor(message: string, readonly code: 'NOT_FOUND' | 'FAILED_PRECONDITION' = 'NOT_FOUND') {
    super(message);
    this.name = 'OperationError';
  }
}

export const changeOf = (op: OperationRow): OpChange => JSON.parse(op.change_json) as OpChange;

/** The change in words, e.g. "hot-add of new NIC 3f.. (52:54:00:.. on br0)" (device-changes/). */
export function describeChange(c: OpChange): string {
  return changeKind(c.kind).describe(c);
}

export function getOperation(config: ConfigStore, id: string): OperationRow | undefined {
  return config.db.prepare('SELECT * FROM operations WHERE id = ?').get(id) as OperationRow | undefined;
}

/** Inserts (and, outside a transaction, commits) a 'sent' operation with a new id. Call before the node is called. */
export function createOperation(config: ConfigStore, jobId: number | null, inst: InstanceConfig, change: OpChange): OperationRow {
  const id = randomUUID();
  config.db
    .prepare(
      `INSERT INTO operations (id, job_id, instance_uuid, instance_name, node_uuid, kind, action, device_uuid, change_json, state, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'sent', ?)`,
    )
    .run(id, jobId, inst.uuid, inst.name, inst.node_uuid, change.kind, change.action, 'uuid' in change ? change.uuid : '', JSON.stringify(change), nowIso());
  return getOperation(config, id)!;
}

/** Operations not final yet (sent or removal_pending), oldest first; of one node when given. */
export function openOperations(config: ConfigStore, nodeUuid?: string): OperationRow[] {
  const sql = `SELECT * FROM operations WHERE state IN ('sent', 'removal_pending')${nodeUuid ? ' AND node_uuid = ?' : ''} ORDER BY created_at, rowid`;
  return config.db.prepare(sql).all(...(nodeUuid ? [nodeUuid] : [])) as OperationRow[];
}

/** Every operation of these jobs. */
export function operationsOfJobs(config: ConfigStore, jobIds: number[]): OperationRow[] {
  const q = config.db.prepare('SELECT * FROM operations WHERE job_id = ? ORDER BY created_at, rowid');
  return jobIds.flatMap((id) => q.all(id) as OperationRow[]);
}

function instanceByUuid(config: ConfigStore, uuid: string): InstanceConfig | undefined {
  const row = config.db.prepare('SELECT name FROM instances WHERE uuid = ?').get(uuid) as { name: string } | undefined;
  return row && config.findInstance(row.name);
}

function markState(config: ConfigStore, op: OperationRow, o: Outcome): void {
  const final = FINAL_STATES.has(o.state);
  const err = o.state === 'failed' ? o : { errorCode: '', error: '' };
  config.db
    .prepare('UPDATE operations SET state = ?, error_code = ?, error = ?, settled_at = ?, settled_by = ? WHERE id = ?')
    .run(o.state, err.errorCode, err.error, final ? nowIso() : '', o.settledBy, op.id);
}

/** Applies the outcome to the configuration, through the change's kind (device-changes/); returns the summary's tail. */
function applyOutcome(config: ConfigStore, op: OperationRow, inst: InstanceConfig | undefined, o: Outcome): string {
  const c = changeOf(op);
  if (!inst) return o.state === 'failed' ? `failed (${o.error}); the instance is no longer in the configuration` : `${o.state.replace('_', ' ')}; the instance is no longer in the configuration`;
  const kind = changeKind(c.kind);
  if (o.state === 'succeeded') {
    kind.commitSettled(config, inst, c);
    if (c.action === 'remove') settleSiblingRemovals(config, op, o.settledBy);
    return 'succeeded; committed to the configuration';
  }
  if (o.state === 'removal_pending') {
    kind.markRemovalPending(config, c, op.id);
    return 'is pending: the guest has not released the device yet; the removal completes when it does, with no command';
  }
  return kind.settleFailed(config, inst, c, op.id, o) ?? `failed (${o.error}); the configuration of this change is unchanged`;
}

/** Other open removals of the same device (a remove repeated while pending) end with it. */
function settleSiblingRemovals(config: ConfigStore, op: OperationRow, settledBy: string): void {
  const siblings = config.db
    .prepare(`SELECT * FROM operations WHERE device_uuid = ? AND action = 'remove' AND state IN ('sent', 'removal_pending') AND id != ?`)
    .all(op.device_uuid, op.id) as OperationRow[];
  for (const s of siblings) markState(config, s, { state: 'succeeded', settledBy });
}

/**
 * Ends (or moves to removal_pending) operation `id` with `outcome`: commits
 * the configuration change and the new state in one transaction. Does
 * nothing when the operation is already final, or already in that state.
 * Throws ConfigError (and changes nothing) when the change cannot be
 * committed, e.g. a MAC another NIC took meanwhile.
 */
export function settleOperation(config: ConfigStore, id: string, outcome: Outcome): SettleResult {
  return config.db.transaction((): SettleResult => {
    const op = getOperation(config, id);
    if (!op) throw new OperationError(`operation ${id} is unknown to the master`);
    const what = describeChange(changeOf(op));
    if (FINAL_STATES.has(op.state) || op.state === outcome.state)
      return { op, applied: false, summary: `${what}: already ${op.state.replace('_', ' ')}` };
    if (op.state === 'removal_pending' && outcome.state === 'failed' && outcome.settledBy === 'fence')
      throw new OperationError(`operation ${id} is pending removal on the node; it cannot be fenced`, 'FAILED_PRECONDITION');
    const inst = instanceByUuid(config, op.instance_uuid);
    const tail = applyOutcome(config, op, inst, outcome);
    markState(config, op, outcome);
    const by = outcome.settledBy === 'request' ? '' : ` (settled by ${outcome.settledBy})`;
    return { op: getOperation(config, id)!, applied: true, summary: `${what} ${tail}${by}` };
  })();
}

/**
 * After a start from the configuration (which leaves devices pending
 * removal out of the spec): the pending removals of the devices the node
 * does not have now are complete. Returns their summaries.
 */
export function settleRemovalsAbsentFrom(config: ConfigStore, instanceUuid: string, onNode: ReadonlySet<string>): string[] {
  const open = openOperations(config).filter((o) => o.instance_uuid === instanceUuid && o.state === 'removal_pending' && !onNode.has(o.device_uuid));
  return open
    .map((o) => settleOperation(config, o.id, { state: 'succeeded', settledBy: 'start' }))
    .filter((r) => r.applied)
    .map((r) => `${r.summary}: the instance started without the device`);
}
