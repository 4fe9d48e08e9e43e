/**
 * The operation journal of one instance, kept inside its runtime file so
 * that an operation's record and the device change it made are written by
 * the same atomic save: after a crash the file never says "done" for a
 * change it does not hold, nor holds a change no record names.
 *
 * An operation is one HotplugDevice or InstanceResize request (its id is
 * the master's operation id), or a change the node made on its own (a
 * guest-initiated eject: no id). Its states:
 *
 *   running          the intent is recorded; QEMU or the host may be touched
 *   removal_pending  the guest has not released the device yet
 *   succeeded        done; `result` is the reply
 *   failed           nothing of it remains; `error` says why
 *
 * Every change to removal_pending, succeeded or failed takes the next
 * `revision` of the instance, so a reader (the master) can ask for what
 * changed after the last revision it applied. Settled records are pruned
 * beyond MAX_SETTLED, oldest first; running and pending ones never are.
 */
import { randomUUID } from 'node:crypto';
import { InvalidArgumentError } from './errors';

export type OperationState = 'running' | 'removal_pending' | 'succeeded' | 'failed';
export type OperationKind = 'nic' | 'disk' | 'resources';
export type OperationAction = 'add' | 'remove' | 'modify' | 'resize';
/** Who brought the operation to its state. */
export type SettledBy = 'request' | 'reconcile' | 'guest' | 'fence';

export interface OperationError {
  code: string;
  message: string;
}

export interface OperationRecord {
  /** The master's operation id; '' for a change the node made on its own. */
  id: string;
  kind: OperationKind;
  action: OperationAction;
  /** The device (NIC/disk uuid); '' for a resize. */
  uuid: string;
  state: OperationState;
  /** 0 while running; the instance's revision at the last change otherwise. */
  revision: number;
  settledBy?: SettledBy;
  error?: OperationError;
  /** The reply (a device record, or the resize result), as JSON. */
  result?: unknown;
  /** What was asked, where the outcome is judged against it (a resize). */
  request?: unknown;
  startedAt: string;
  finishedAt?: string;
}

export interface OperationJournal {
  /** Made when the journal is created: a reader that sees another one knows the journal started over. */
  epoch?: string;
  revision: number;
  records: OperationRecord[];
  /** The highest revision among pruned records: a reader behind it has missed changes. */
  prunedThrough?: number;
}

export const MAX_SETTLED = 64;

const OP_ID_RULE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** Checks an operation id from a request ('' means: no id, no idempotency). */
export function assertOperationId(id: string): string {
  if (id !== '' && !OP_ID_RULE.test(id))
    throw new InvalidArgumentError(`operation id "${id.slice(0, 64)}" is not valid: up to 128 letters, digits, ".", "_", ":" or "-"`);
  return id;
}

export const emptyJournal = (): OperationJournal => ({ epoch: randomUUID(), revision: 0, records: [] });

export function findOperation(j: OperationJournal, id: string): OperationRecord | undefined {
  return id ? j.records.find((r) => r.id === id) : undefined;
}

/** Records a new running operation (not saved: the caller's next save writes it with the intent). */
export function beginOperation(j: OperationJournal, id: string, kind: OperationKind, action: OperationAction, uuid: string): OperationRecord {
  if (findOperation(j, id)) throw new InvalidArgumentError(`operation ${id} is already recorded`);
  const rec: OperationRecord = { id, kind, action, uuid, state: 'running', revision: 0, startedAt: new Date().toISOString() };
  j.records.push(rec);
  return rec;
}

/** Moves an operation to a reported state with the next revision. */
export function settleOperation(
  j: OperationJournal,
  rec: OperationRecord,
  state: Exclude<OperationState, 'running'>,
  by: SettledBy,
  outcome: { result?: unknown; error?: OperationError } = {},
): void {
  rec.state = state;
  rec.settledBy = by;
  rec.revision = ++j.revision;
  if (outcome.result !== undefined) rec.result = outcome.result;
  if (outcome.error) rec.error = outcome.error;
  else delete rec.error;
  if (state !== 'removal_pending') rec.finishedAt = new Date().toISOString();
  prune(j);
}

/** Records a change the node made on its own (no operation id), already settled. */
export function recordNodeChange(
  j: OperationJournal,
  kind: OperationKind,
  action: OperationAction,
  uuid: string,
  by: SettledBy,
  result?: unknown,
): OperationRecord {
  const rec = beginOperation(j, '', kind, action, uuid);
  settleOperation(j, rec, 'succeeded', by, { result });
  return rec;
}

/** The operations not yet final for a device (running or removal pending). */
export function openOperationsOf(j: OperationJournal, uuid: string): OperationRecord[] {
  return j.records.filter((r) => r.uuid === uuid && (r.state === 'running' || r.state === 'removal_pending'));
}

/** Records whose state changed after `revision`, in revision order. */
export function changedSince(j: OperationJournal, revision: number): OperationRecord[] {
  return j.records.filter((r) => r.revision > revision).sort((a, b) => a.revision - b.revision);
}

/**
 * Whether the journal still holds every change after `revision`: no record
 * whose last change came after it was pruned. (Gaps in the revisions are
 * normal: a record that changed again carries only its newest revision.)
 */
export function reachesBack(j: OperationJournal, revision: number): boolean {
  return revision >= (j.prunedThrough ?? 0);
}

function prune(j: OperationJournal): void {
  const settled = j.records.filter((r) => r.state === 'succeeded' || r.state === 'failed');
  if (settled.length <= MAX_SETTLED) return;
  const drop = new Set(settled.sort((a, b) => a.revision - b.revision).slice(0, settled.length - MAX_SETTLED));
  j.prunedThrough = Math.max(j.prunedThrough ?? 0, ...[...drop].map((r) => r.revision));
  j.records = j.records.filter((r) => !drop.has(r));
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const STATES: readonly string[] = ['running', 'removal_pending', 'succeeded', 'failed'];

/** Parses the journal of a runtime file; `why` receives a description of what is wrong. */
export function journalFrom(raw: unknown, why: (msg: string) => Error): OperationJournal {
  if (raw === undefined) return emptyJournal();
  if (!isObject(raw) || typeof raw.revision !== 'number' || !Array.isArray(raw.records)) throw why('"operations" is not a valid operation journal');
  for (const r of raw.records) {
    const ok =
      isObject(r) &&
      typeof r.id === 'string' &&
      typeof r.kind === 'string' &&
      typeof r.action === 'string' &&
      typeof r.uuid === 'string' &&
      STATES.includes(String(r.state)) &&
      typeof r.revision === 'number';
    if (!ok) throw why('an operation record is malformed');
  }
  return raw as unknown as OperationJournal;
}
