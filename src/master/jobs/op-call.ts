/**
 * Sends one operation (a HotplugDevice or InstanceResize carrying its
 * operation id) and settles it, whatever the node or the network does:
 *
 *   - a reply: settled with it;
 *   - an error the node's handler answered (INVALID_ARGUMENT, NOT_FOUND,
 *     ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, QEMU gone,
 *     QEMU or the guest too slow, ...): the node's record of the operation
 *     is read once (settleAnswered); normally FAILED, so the operation is
 *     settled failed and the configuration of the change is unchanged;
 *   - an ambiguous error (connection dropped or never made, the call's own
 *     deadline, CANCELLED, UNKNOWN, INTERNAL): the node may have applied it,
 *     so it is never reported as unchanged. OperationStatus is asked with
 *     backoff for a bounded window: RUNNING waits, SUCCEEDED and
 *     REMOVAL_PENDING settle, FAILED fails with the node's error, UNKNOWN
 *     (the node never got it) sends the request again with the same id. A
 *     node that stays unreachable for the whole window ends the job with
 *     OutcomeUnknownError and the operation stays 'sent': the convergence
 *     loop (convergence.ts) settles it when the node answers.
 *
 * While a call runs its id is in the in-flight set, so the convergence loop
 * leaves the operation to the job.
 */
import type { ConfigStore } from '../config/config-store';
import { NodeRpcError, outcomeUnknown, type NodeRpc, type NodeTarget } from '../node-rpc';
import type { OperationRecord__Output } from '../../generated/gnt/node/v1/OperationRecord';
import { JobError } from './queue';
import { changeOf, describeChange, settleOperation, type OperationRow, type Outcome, type Resources, type SettleResult } from './operations';

export const DEFAULT_OUTCOME_WINDOW_MS = 60_000;

export interface OpCallDeps {
  config: ConfigStore;
  rpc: Pick<NodeRpc, 'operationStatus'>;
  /** Ids of operations a job is sending or resolving now. */
  inflight: Set<string>;
  /** How long to keep asking for the outcome after an ambiguous failure, ms. */
  windowMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** Runs a settlement in one transaction with the job's buffered log lines (JobContext.commit); default: as is. */
  commit?: <T>(fn: () => T) => T;
}

/** Settles through deps.commit, so that the job's lines are committed with the configuration change. */
function settle(deps: OpCallDeps, id: string, outcome: Outcome): SettleResult {
  const fn = (): SettleResult => settleOperation(deps.config, id, outcome);
  return deps.commit ? deps.commit(fn) : fn();
}

export interface OpCall<R> {
  op: OperationRow;
  node: NodeTarget;
  /** Sends the request with op.id (again after the node said UNKNOWN: same id). */
  send: () => Promise<R>;
  fromReply: (reply: R) => Outcome;
  log: (line: string) => void;
}

export interface OpCallResult<R> {
  settle: SettleResult;
  /** The node's reply, when the request (or its resend) answered. */
  reply?: R;
  /** The node's record, when OperationStatus answered. */
  record?: OperationRecord__Output;
}

/** The job ends without knowing whether the node applied the change. */
export class OutcomeUnknownError extends JobError {
  constructor(message: string) {
    super(message, 'UNKNOWN');
    this.name = 'OutcomeUnknownError';
  }
}

const resourcesOf = (rec: OperationRecord__Output): Resources | undefined =>
  rec.resize && (rec.resize.vcpus || Number(rec.resize.memoryMib))
    ? { vcpus: rec.resize.vcpus, memoryMib: Number(rec.resize.memoryMib) }
    : undefined;

/** What a node's record says about an operation; undefined while it is not settled (RUNNING, UNKNOWN). */
export function outcomeFromRecord(rec: OperationRecord__Output): Outcome | undefined {
  const settledBy = rec.settledBy || 'request';
  switch (rec.state) {
    case 'OPERATION_SUCCEEDED':
      return { state: 'succeeded', settledBy };
    case 'OPERATION_REMOVAL_PENDING':
      return { state: 'removal_pending', settledBy };
    case 'OPERATION_FAILED':
      return { state: 'failed', settledBy, errorCode: rec.errorCode || 'UNKNOWN', error: rec.errorMessage || 'failed on the node', resources: resourcesOf(rec) };
    default:
      return undefined;
  }
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const errorCode = (err: unknown): string => (err instanceof NodeRpcError ? err.code : 'UNKNOWN');

/** Sends the operation and settles it (see the file comment). */
export async function runOperation<R>(deps: OpCallDeps, call: OpCall<R>): Promise<OpCallResult<R>> {
  const id = call.op.id;
  deps.inflight.add(id);
  try {
    try {
      const reply = await call.send();
      return { settle: settle(deps, id, call.fromReply(reply)), reply };
    } catch (err) {
      if (!outcomeUnknown(err)) {
        const answered = await settleAnswered(deps, call, err);
        if (answered !== 'unsettled') return answered;
        return await resolveAmbiguous(deps, call, err);
      }
      call.log(`${describeChange(changeOf(call.op))}: outcome unknown (${errorText(err)}); asking node ${call.node.name} for operation ${id}`);
      return await resolveAmbiguous(deps, call, err);
    }
  } finally {
    deps.inflight.delete(id);
  }
}

/**
 * The node's handler answered with an error. Its record has the last word:
 * FAILED (or no record: refused before anything was recorded) settles the
 * operation failed (a resize that failed part-way carries the vCPUs and
 * memory the instance has now); SUCCEEDED or REMOVAL_PENDING settle that;
 * RUNNING (the node could not tell, e.g. a QEMU command that timed out, and
 * settles it itself later) is resolved like an ambiguous failure. When the
 * record cannot be read, a refusal (INVALID_ARGUMENT, NOT_FOUND, ...) is
 * trusted, while UNAVAILABLE and DEADLINE_EXCEEDED stay ambiguous.
 */
async function settleAnswered<R>(deps: OpCallDeps, call: OpCall<R>, err: unknown): Promise<OpCallResult<R> | 'unsettled'> {
  let rec: OperationRecord__Output | undefined;
  try {
    rec = await deps.rpc.operationStatus(call.node, call.op.instance_name, call.op.id);
  } catch {
    const code = errorCode(err);
    if (code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED') return 'unsettled';
  }
  if (rec?.state === 'OPERATION_RUNNING') {
    call.log(`${describeChange(changeOf(call.op))}: node ${call.node.name} answered "${errorText(err)}" but has not settled operation ${call.op.id} yet; waiting for its outcome`);
    return 'unsettled';
  }
  const recorded = rec && rec.state !== 'OPERATION_FAILED' ? outcomeFromRecord(rec) : undefined;
  if (recorded) return { settle: settle(deps, call.op.id, recorded), record: rec };
  const resources = rec?.state === 'OPERATION_FAILED' ? resourcesOf(rec) : undefined;
  const outcome: Outcome = { state: 'failed', settledBy: 'request', errorCode: errorCode(err), error: errorText(err), resources };
  return { settle: settle(deps, call.op.id, outcome), record: rec };
}

/** One OperationStatus poll: the settled result, or undefined to keep waiting. */
async function pollOnce<R>(deps: OpCallDeps, call: OpCall<R>): Promise<OpCallResult<R> | undefined> {
  const rec = await deps.rpc.operationStatus(call.node, call.op.instance_name, call.op.id);
  if (rec.state === 'OPERATION_UNKNOWN') {
    call.log(`node ${call.node.name} has no record of operation ${call.op.id}: sending it again with the same id`);
    try {
      const reply = await call.send();
      return { settle: settle(deps, call.op.id, call.fromReply(reply)), reply };
    } catch (err) {
      if (!outcomeUnknown(err)) {
        const answered = await settleAnswered(deps, call, err);
        return answered === 'unsettled' ? undefined : answered;
      }
      throw err;
    }
  }
  const outcome = outcomeFromRecord(rec);
  return outcome && { settle: settle(deps, call.op.id, outcome), record: rec };
}

async function resolveAmbiguous<R>(deps: OpCallDeps, call: OpCall<R>, first: unknown): Promise<OpCallResult<R>> {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const deadline = now() + (deps.windowMs ?? DEFAULT_OUTCOME_WINDOW_MS);
  let last = first;
  let delay = 100;
  while (now() < deadline) {
    await sleep(Math.max(0, Math.min(delay, deadline - now())));
    delay = Math.min(delay * 2, 2000);
    try {
      const done = await pollOnce(deps, call);
      if (done) return done;
      last = new Error(`node ${call.node.name} reports operation ${call.op.id} still running`);
    } catch (err) {
      last = err;
      if (err instanceof NodeRpcError && err.code === 'UNIMPLEMENTED') break;
    }
  }
  throw new OutcomeUnknownError(
    `${describeChange(changeOf(call.op))}: outcome unknown: ${errorText(last)}; ` +
      `operation ${call.op.id} stays open and the master settles it when node ${call.node.name} answers ` +
      `(the configuration then follows what the node did; see "gnt-instance info ${call.op.instance_name}")`,
  );
}
