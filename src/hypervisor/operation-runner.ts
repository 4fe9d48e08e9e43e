/**
 * Runs an instance's requests at most once per operation id, on top of its
 * operation journal (operations.ts) and its queue. A repeat of a recorded id
 * gets the recorded outcome; a copy that arrives while the first runs waits
 * for it; a removal still pending runs again (it waits for the guest anew).
 * The record of a new operation is written by the same save as the intent
 * of the change it makes, and its outcome by the same save as the result:
 * the code that makes the change settles `current` before it saves.
 */
import { HypervisorError, OutcomeUnknownError, errorMessage, isOutcomeUnknown, type HypervisorErrorCode } from './errors';
import {
  assertOperationId,
  beginOperation,
  findOperation,
  openOperationsOf,
  settleOperation,
  type OperationAction,
  type OperationError,
  type OperationJournal,
  type OperationKind,
  type OperationRecord,
  type OperationState,
  type SettledBy,
} from './operations';

export type FinalState = Exclude<OperationState, 'running'>;
export interface Outcome {
  result?: unknown;
  error?: OperationError;
}

export interface RunnerHost {
  readonly name: string;
  journal(): OperationJournal;
  save(): void;
  /** Runs `fn` in the instance's queue. */
  serialize<T>(fn: () => Promise<T>): Promise<T>;
}

const ERROR_CODES: readonly HypervisorErrorCode[] = [
  'INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL',
];

/** The code of a recorded failure as a hypervisor error code (ABORTED and unknown ones: FAILED_PRECONDITION). */
function errorCode(code: string | undefined): HypervisorErrorCode {
  return ERROR_CODES.includes(code as HypervisorErrorCode) ? (code as HypervisorErrorCode) : 'FAILED_PRECONDITION';
}

export function operationError(err: unknown): OperationError {
  return { code: err instanceof HypervisorError ? err.code : 'INTERNAL', message: errorMessage(err) };
}

const copy = <T>(v: T): T => JSON.parse(JSON.stringify(v ?? null)) as T;

export class OperationRunner {
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** The identified operation the running queue entry works for. */
  current: OperationRecord | undefined;

  constructor(private readonly host: RunnerHost) {}

  private get journal(): OperationJournal {
    return this.host.journal();
  }

  /** Whether an identified operation is being worked on in this process now. */
  inFlightNow(id: string): boolean {
    return this.inFlight.has(id);
  }

  /** The recorded operation with this id (a copy), if any. */
  record(id: string): OperationRecord | undefined {
    const rec = findOperation(this.journal, assertOperationId(id));
    return rec ? copy(rec) : undefined;
  }

  run<T>(opId: string, kind: OperationKind, action: OperationAction, uuid: string, body: () => Promise<T>): Promise<T> {
    try {
      assertOperationId(opId);
    } catch (err) {
      return Promise.reject(err);
    }
    const flying = opId ? this.inFlight.get(opId) : undefined;
    if (flying) return flying as Promise<T>;
    const run = this.host.serialize(async () => {
      const known = findOperation(this.journal, opId);
      if (known) this.assertSameRequest(known, kind, action, uuid);
      if (known && known.state !== 'removal_pending') return this.replay<T>(known);
      const op = known ?? (opId ? beginOperation(this.journal, opId, kind, action, uuid) : undefined);
      this.current = op;
      try {
        return await body();
      } catch (err) {
        if (op && op.state === 'running' && !isOutcomeUnknown(err)) {
          this.settle(op, 'failed', 'request', { error: operationError(err) });
          this.host.save();
        }
        throw err;
      } finally {
        this.current = undefined;
      }
    });
    if (opId) {
      this.inFlight.set(opId, run);
      void run.catch(() => undefined).then(() => this.inFlight.delete(opId));
    }
    return run;
  }

  /**
   * An operation id names one change: a request that reuses it for another
   * kind, action or device is refused instead of being answered with the
   * other change's outcome. A fenced id answers its fence to anything.
   */
  private assertSameRequest(rec: OperationRecord, kind: OperationKind, action: OperationAction, uuid: string): void {
    if (rec.settledBy === 'fence' || (rec.kind === kind && rec.action === action && rec.uuid === uuid)) return;
    const what = (k: string, a: string, u: string): string => `${k} ${a}${u ? ` of ${u}` : ''}`;
    throw new HypervisorError(
      'INVALID_ARGUMENT',
      `operation id ${rec.id} on ${this.host.name} was used for ${what(rec.kind, rec.action, rec.uuid)}, not for ${what(kind, action, uuid)}: give a new change a new operation id`,
    );
  }

  private replay<T>(rec: OperationRecord): T {
    if (rec.state === 'succeeded') return copy(rec.result) as T;
    if (rec.state === 'failed') throw new HypervisorError(errorCode(rec.error?.code), rec.error?.message ?? `operation ${rec.id} failed`);
    throw new OutcomeUnknownError(
      `operation ${rec.id} on ${this.host.name} was interrupted and is not settled yet (QEMU's monitor could not be asked); ask again shortly`,
    );
  }

  /**
   * Records that the master gave up on an operation id this node never saw,
   * so a late copy of the request is refused; returns the record.
   */
  fence(id: string): Promise<OperationRecord> {
    try {
      assertOperationId(id);
      if (!id) throw new HypervisorError('INVALID_ARGUMENT', 'fencing needs an operation id');
    } catch (err) {
      return Promise.reject(err);
    }
    const flying = this.inFlight.get(id);
    return (flying ? flying.catch(() => undefined) : Promise.resolve()).then(() =>
      this.host.serialize(async () => {
        const known = findOperation(this.journal, id);
        if (known) return copy(known);
        const rec = beginOperation(this.journal, id, 'nic', 'add', '');
        this.settle(rec, 'failed', 'fence', { error: { code: 'ABORTED', message: `operation ${id} was fenced by the master before this node processed it` } });
        this.host.save();
        return copy(rec);
      }),
    );
  }

  /** Settles a record (no save: the caller saves it with the change it describes). */
  settle(op: OperationRecord, state: FinalState, by: SettledBy, outcome: Outcome = {}): void {
    settleOperation(this.journal, op, state, by, outcome);
  }

  /** Settles the request's operation if this step is what it asked for (a modify settles at its end). */
  settleCurrent(action: OperationAction, state: FinalState, outcome: Outcome): void {
    const op = this.current;
    if (op && op.action === action && op.state !== state) this.settle(op, state, 'request', outcome);
  }

  /** The records still open (running or removal pending) for a device, other than the current one. */
  openFor(uuid: string): OperationRecord[] {
    return openOperationsOf(this.journal, uuid).filter((op) => op !== this.current);
  }

  /** Fails every open operation of a device (its hot-add was rolled back). */
  failOpen(uuid: string, by: SettledBy, message: string): void {
    for (const op of openOperationsOf(this.journal, uuid)) this.settle(op, 'failed', by, { error: { code: 'ABORTED', message } });
  }
}
