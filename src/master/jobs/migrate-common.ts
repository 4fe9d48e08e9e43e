/**
 * What live migration, failover and cleanup (jobs/migrate.ts, failover.ts,
 * migrate-cleanup.ts) share: the target node, the requirement checks made
 * before anything is touched, and the error wording.
 */
import type { ConfigStore, InstanceConfig, NodeRow } from '../config/config-store';
import { NodeRpcError, type NodeRpc, type NodeTarget } from '../node-rpc';
import type { MigrationStatus__Output } from '../../generated/gnt/node/v1/MigrationStatus';
import type { InstanceRuntime__Output } from '../../generated/gnt/node/v1/InstanceRuntime';
import { JobError } from './queue';

/** The node calls a migration job makes (a NodeRpc, or a fake in unit tests). */
export type MigrationRpc = Pick<
  NodeRpc,
  | 'nodeInfo' | 'instanceInfo' | 'instanceStart' | 'instanceStop' | 'instanceExport' | 'instanceReceive'
  | 'migrationStart' | 'migrationStatus' | 'migrationFinish' | 'migrationAbort' | 'instanceRelease' | 'migrationDiskCopyEnd'
>;

export interface MigrateDeps {
  config: ConfigStore;
  rpc: MigrationRpc;
  /** Interval of MigrationStatus polls, ms (200). */
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export const nodeOf = (n: NodeRow): NodeTarget => ({ name: n.name, address: n.address });

export const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
export const errCode = (e: unknown): string => {
  const c = (e as { code?: unknown } | undefined)?.code;
  return typeof c === 'string' ? c : '';
};

export const cleanupHint = (name: string): string => `run "gnt-instance migrate --cleanup ${name}"`;

/** -n TARGET, or the only other node of the cluster. */
export function resolveTarget(config: ConfigStore, inst: InstanceConfig, wanted: string): NodeRow {
  if (wanted) {
    const node = config.getNode(wanted);
    if (node.uuid === inst.node.uuid)
      throw new JobError(`instance ${inst.name} is already on node ${wanted}: give -n with another node`, 'FAILED_PRECONDITION');
    return node;
  }
  const others = config.listNodes().filter((n) => n.uuid !== inst.node.uuid);
  if (others.length === 1) return others[0];
  if (others.length === 0)
    throw new JobError(`give -n TARGET: the cluster has no node besides ${inst.node.name} (add one with gnt-node add)`, 'FAILED_PRECONDITION');
  throw new JobError(`give -n TARGET: the cluster has ${others.length} other nodes (${others.map((n) => n.name).join(', ')}) to move ${inst.name} to`, 'INVALID_ARGUMENT');
}

/** MigrationStatus, with NOT_FOUND (the node has never heard of the instance) as "no copy". */
export async function statusOrAbsent(rpc: MigrationRpc, node: NodeTarget, name: string): Promise<MigrationStatus__Output> {
  try {
    return await rpc.migrationStatus(node, name);
  } catch (err) {
    if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return absentStatus(name);
    throw err;
  }
}

export function absentStatus(name: string): MigrationStatus__Output {
  return {
    instance: name, role: '', peerNode: '', qemuAlive: false, runState: '', state: '', totalBytes: '0', transferredBytes: '0',
    remainingBytes: '0', throughputBps: '0', totalTimeMs: '0', downtimeMs: '-1', error: '', known: false,
    diskCopies: [], diskCopy: false, diskCopyReady: false, diskCopyEnded: false,
  };
}

/** The instance must run on the source, with no migration recorded there. */
export function checkRunsOnSource(name: string, source: string, st: MigrationStatus__Output): void {
  if (!st.known && !st.qemuAlive) throw new JobError(`instance ${name} is not on node ${source} (the node has no runtime file for it)`, 'FAILED_PRECONDITION');
  if (st.role)
    throw new JobError(
      `node ${source} has a migration of ${name} recorded (role ${st.role}${st.peerNode ? `, peer ${st.peerNode}` : ''}): ${cleanupHint(name)} first`,
      'FAILED_PRECONDITION',
    );
  if (!st.qemuAlive) throw new JobError(`instance ${name} is not running on node ${source}: a stopped instance is moved with gnt-instance failover`, 'FAILED_PRECONDITION');
  if (st.runState !== 'running')
    throw new JobError(`instance ${name} is not running on node ${source}: its QEMU is ${st.runState || 'in an unknown state'}`, 'FAILED_PRECONDITION');
}

/** The target must not have a copy of the instance already. */
export function checkNoCopyOnTarget(name: string, target: string, st: MigrationStatus__Output): void {
  if (!st.known && !st.qemuAlive) return;
  const what = st.qemuAlive ? `a QEMU (${st.runState || 'state unknown'})` : 'a runtime file';
  throw new JobError(
    `node ${target} already has ${what} for ${name}${st.role ? ` (migration ${st.role})` : ''}: ${cleanupHint(name)} first`,
    'FAILED_PRECONDITION',
  );
}

/** "10.0.2", "QEMU emulator version 7.2.15 (Debian ...)" -> {10, 0}; undefined when there is no version in it. */
export function parseQemuVersion(text: string): { major: number; minor: number } | undefined {
  const m = /(\d+)\.(\d+)/.exec(text);
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : undefined;
}

/** Live migration needs the same QEMU major.minor on both nodes (the migration stream format). */
export function checkSameQemu(source: string, sourceVersion: string, target: string, targetVersion: string): string {
  const s = parseQemuVersion(sourceVersion);
  const t = parseQemuVersion(targetVersion);
  if (!s || !t) {
    const bad = !s ? `${source} ("${sourceVersion}")` : `${target} ("${targetVersion}")`;
    throw new JobError(`cannot read the QEMU version of node ${bad}: migration needs the same QEMU version on both nodes`, 'FAILED_PRECONDITION');
  }
  if (s.major !== t.major || s.minor !== t.minor)
    throw new JobError(
      `QEMU ${s.major}.${s.minor} on ${source} vs ${t.major}.${t.minor} on ${target}: migration needs the same QEMU version`,
      'FAILED_PRECONDITION',
    );
  return `${s.major}.${s.minor}`;
}

/** The instance's memory now: the node's current value (hot-added memory counts), else the configuration's. */
export function currentMemoryMib(inst: InstanceConfig, rt: InstanceRuntime__Output | undefined): number {
  const m = Number(rt?.resources?.memoryMib ?? 0);
  return Number.isSafeInteger(m) && m > 0 ? m : inst.memory_mib;
}

/** Refuse rather than migrate into a node that cannot hold the guest. */
export function checkFreeMemory(name: string, memoryMib: number, target: string, freeMib: number): void {
  if (freeMib < memoryMib)
    throw new JobError(
      `node ${target} has ${freeMib} MiB of free memory and instance ${name} uses ${memoryMib} MiB: not moving it (free memory on ${target} or give another -n)`,
      'RESOURCE_EXHAUSTED',
    );
}

/** A whole-number hvparam (migration_bandwidth MiB/s, migration_downtime ms); absent or empty: 0 (QEMU's default). */
export function hvparamInt(inst: InstanceConfig, key: string, unit: string): number {
  const v = inst.hvparams[key];
  if (v === undefined || v === '') return 0;
  if (!/^\d{1,9}$/.test(v)) throw new JobError(`hvparam ${key}="${v}" of ${inst.name} is not a whole number of ${unit}`, 'INVALID_ARGUMENT');
  return Number(v);
}

/** The node could not be reached at all (as opposed to answering with an error). */
export const unreachable = (err: unknown): boolean => err instanceof NodeRpcError && err.code === 'UNAVAILABLE' && err.message.startsWith('cannot reach');
