/**
 * The interface every kind of change a `gnt-instance modify` job makes
 * implements (NIC, disk, vCPU/memory resize), one module per kind in this
 * folder, mapped by kind in registry.ts. The modify job (jobs/modify.ts)
 * plans and runs any kind through it; settling an operation
 * (jobs/operations.ts) commits through it. Nothing outside these modules
 * branches on the kind.
 */
import type { ConfigStore, InstanceConfig } from '../../config/config-store';
import type { NodeRpc, NodeTarget } from '../../node-rpc';
import type { OperationRecord__Output } from '../../../generated/gnt/node/v1/OperationRecord';
import type { Op } from '../ops';
import type { OperationRow, Outcome } from '../operations';
import type { GuestWaitRequest } from '../../../generated/gnt/node/v1/GuestWaitRequest';

export type ModifyOp = Extract<Op, { type: 'instance-modify' }>;

/** What every change record (an operation's change_json) has. */
export interface ChangeRecord {
  kind: string;
  action: string;
}

/** One planned change of a modify job: its kind, its log label and the record its operation carries. */
export interface PlannedChange<C extends ChangeRecord = ChangeRecord> {
  kind: C['kind'];
  /** How the job log names it, e.g. "new NIC 3f.. (52:54:00:.. on br0)". */
  what: string;
  change: C;
}

/** The types of one kind: its change record, its planned change and the node's reply to its request. */
export interface KindTypes {
  change: ChangeRecord;
  step: PlannedChange;
  request: object;
  reply: object;
}

/** MACs for the job's new NICs, reserved until the job ends. */
/** What GuestWait asks the guest agent for (GuestWaitRequest without instance and timeout). */
export type GuestWaitTarget = Omit<GuestWaitRequest, 'instance' | 'timeoutMs'> & { kind: 'nic' | 'disk' | 'vcpus' | 'memory' };

export interface MacSource {
  /** Reserves `mac`; throws ConfigError ALREADY_EXISTS when it is used or reserved. */
  reserve(mac: string): string;
  /** A new free MAC, reserved. */
  generate(): string;
}

export interface PlanContext {
  /** The instance as in the configuration (each kind plans against its own copy of its list). */
  inst: InstanceConfig;
  op: ModifyOp;
  macs: MacSource;
}

export interface LiveContext {
  rpc: NodeRpc;
  node: NodeTarget;
  inst: InstanceConfig;
  log(line: string): void;
}

export interface SendContext<Req> {
  rpc: NodeRpc;
  node: NodeTarget;
  request: Req;
  log(line: string): void;
  /** Commits the job's buffered lines now (JobContext.commit), e.g. before a fault-injection kill. */
  flush(): void;
}

/** What the job says of a change that succeeded live (or reached removal pending). */
export interface LiveResult {
  line: string;
  /** Logged after the line as "note: ...". */
  notes: string[];
}

export type FailedOutcome = Extract<Outcome, { state: 'failed' }>;

export interface ChangeKind<T extends KindTypes> {
  /**
   * Plans this kind's changes of the op (parse, index rules, MACs) before
   * anything is touched; throws ConfigError for a bad one. Indices refer to
   * the list as the earlier changes of the same command leave it.
   */
  plan(ctx: PlanContext): T['step'][];
  /** With --hotplug-if-possible: whether this kind can be changed live now (asked once per job); logs why not. */
  liveSupported(ctx: LiveContext): Promise<boolean>;

  /** A change made in the configuration only (it applies at the next start). */
  commit(config: ConfigStore, inst: InstanceConfig, step: T['step']): void;
  /** The job's words for a config-only change: `log` (before "; it applies at the next start of X") and its "already done" entry. */
  configOnlyText(step: T['step']): { log: string; done: string };

  /** The job log's line announcing a live change (" (operation ID)" is appended). */
  liveStart(step: T['step'], inst: InstanceConfig, node: NodeTarget): string;
  /** The node request of a live change (HotplugDevice, InstanceResize), carrying its operation id. */
  request(step: T['step'], inst: InstanceConfig, operationId: string): T['request'];
  send(ctx: SendContext<T['request']>): Promise<T['reply']>;
  fromReply(reply: T['reply']): Outcome;
  /** The reply part of the node's record of the operation, when OperationStatus answered instead. */
  replyOfRecord(rec: OperationRecord__Output | undefined): T['reply'] | undefined;
  /** The job's error when the operation failed; `done` lists what the job already did. */
  failedMessage(step: T['step'], final: OperationRow, ctx: { config: ConfigStore; inst: InstanceConfig; done: readonly string[] }): string;
  /** `reply` is the node's reply or its record; `confirmed`: from the record (the reply was lost). */
  succeeded(step: T['step'], final: OperationRow, reply: T['reply'] | undefined, confirmed: boolean): LiveResult;
  /**
   * With --wait-guest: what the guest agent must report once the live change
   * succeeded (a hot-added NIC's MAC, a disk's address, the vCPU count,
   * memory online); none for removals and modifies. A string says why this
   * change cannot be confirmed by the guest.
   */
  guestWait?(step: T['step'], reply: T['reply'] | undefined): GuestWaitTarget[] | string;

  /** The change in words, e.g. "hot-add of new NIC 3f.. (52:54:00:.. on br0)". */
  describe(c: T['change']): string;
  /** Commits a succeeded operation's change; safe to repeat (a device already there or gone is left alone). */
  commitSettled(config: ConfigStore, inst: InstanceConfig, c: T['change']): void;
  /** The operation reached removal_pending. */
  markRemovalPending(config: ConfigStore, c: T['change'], opId: string): void;
  /** The operation failed: undoes its marks; returns the settle summary's tail when it is not the usual "unchanged". */
  settleFailed(config: ConfigStore, inst: InstanceConfig, c: T['change'], opId: string, o: FailedOutcome): string | undefined;
}
