/**
 * Start-up reconciliation of instances touched by interrupted jobs.
 *
 * Since operation ids (jobs/operations.ts), an interrupted job's live
 * changes are rows of the operations table, and the convergence loop
 * (convergence.ts) settles each one from the node's own record, exactly
 * once. Such a job only gets a log line here saying which of its
 * operations are still open. The runtime comparison below is kept for
 * interrupted jobs that have no operation rows (written by an older
 * master, before schema version 3).
 *
 * A job is "interrupted" when the master stopped (crash, SIGKILL, power
 * loss) while it was queued or running; JobStore.failInterrupted() marks it
 * failed at the next start. An interrupted instance-modify may have died
 * after the node applied a hotplug and before the master committed it to
 * the configuration (or the other way round for nothing: the master commits
 * only after the node confirmed). For a running instance the node's runtime
 * is the truth about the live device set, so the configuration is brought in
 * line with it, for the devices the interrupted job(s) hot-plugged (the
 * uuids recorded in the job_hotplug table before each node call):
 *
 *   - a NIC/disk the node has and the config lacks (by uuid) is appended to
 *     the config at the next index (NIC: uuid, MAC, link; disk: uuid and the
 *     size the node reports, 0 if it reports none);
 *   - a NIC/disk the config has and the node lacks is dropped from the config;
 *   - a NIC whose MAC or link differ is updated to the node's values.
 *
 * Other differences are legitimate and left alone (and logged): a change
 * made without --hotplug is in the config only until the next start, and
 * reconciling it away would undo it.
 *
 * What changed is written as log lines of the interrupted job(s) and to
 * masterd's stderr. If the node cannot be reached, does not know the
 * instance or does not run it, nothing is changed (the next start sends the
 * config's spec to the node anyway), and that is logged too.
 *
 * The instances still to reconcile are kept in the cluster table under
 * PENDING_KEY, written in the same transaction that marks the jobs failed,
 * and an entry is removed only once handled: a master killed during
 * reconciliation does it again at its next start. Reconciling twice is
 * harmless, as the second pass finds nothing to change.
 *
 * An interrupted instance-migrate job (live migration, failover, cleanup) is
 * not repaired here: the guest may be paused, or have copies on two nodes,
 * and only `gnt-instance migrate --cleanup` asks every node. Its log gets a
 * last line saying to run that; its devices are not reconciled.
 */
import type { ConfigStore, InstanceConfig } from '../config/config-store';
import { NodeRpcError, type NodeRpc } from '../node-rpc';
import { formatSize } from '../validate';
import type { JobStore } from './job-store';
import type { Op } from './ops';
import { nodeTarget } from './spec';
import { changeOf, describeChange, operationsOfJobs } from './operations';
import type { InstanceRuntime__Output } from '../../generated/gnt/node/v1/InstanceRuntime';
import { flavourOfNodeDisk } from './disk-backing';

export const PENDING_KEY = 'reconcile_pending';

export interface PendingReconcile {
  instance: string;
  jobIds: number[];
}

/** The instance an operation works on, if any. */
export function instanceOfOp(opJson: string): string | undefined {
  try {
    const op = JSON.parse(opJson) as Op;
    return op.type.startsWith('instance-') ? (op as { name: string }).name : undefined;
  } catch {
    return undefined;
  }
}

export function readPending(config: ConfigStore): PendingReconcile[] {
  const raw = config.getClusterValue(PENDING_KEY);
  if (!raw) return [];
  try {
    const v = JSON.parse(raw) as PendingReconcile[];
    return Array.isArray(v) ? v.filter((p) => p && typeof p.instance === 'string' && Array.isArray(p.jobIds)) : [];
  } catch {
    return [];
  }
}

function writePending(config: ConfigStore, pending: PendingReconcile[]): void {
  config.setClusterValue(PENDING_KEY, JSON.stringify(pending));
}

/** Adds the instances of the given (interrupted) jobs to the pending list. Call inside the transaction that fails them. */
export function addPending(config: ConfigStore, jobs: JobStore, jobIds: number[]): void {
  const pending = readPending(config);
  for (const id of jobIds) {
    const row = jobs.get(id);
    const name = row && instanceOfOp(row.op_json);
    if (!name) continue;
    const p = pending.find((x) => x.instance === name);
    if (p) {
      if (!p.jobIds.includes(id)) p.jobIds.push(id);
    } else pending.push({ instance: name, jobIds: [id] });
  }
  writePending(config, pending);
}

function removePending(config: ConfigStore, instance: string): void {
  writePending(config, readPending(config).filter((p) => p.instance !== instance));
}

export interface ReconcileDeps {
  config: ConfigStore;
  jobs: JobStore;
  rpc: NodeRpc;
  /** Where to write what happened besides the job logs (masterd's stderr). */
  report?: (line: string) => void;
  /** Deadline of InstanceInfo, ms. */
  timeoutMs?: number;
}

/** What one instance's reconciliation did, as log lines (empty: nothing to say). */
export type ReconcileResult = { instance: string; changed: boolean; lines: string[] };

/** Compares the config with the node's runtime and applies the node's device set to the config. Exported for unit tests. */
/** The device uuids the interrupted jobs were hot-plugging (recorded before each node call). */
export function hotplugTouched(jobs: JobStore, jobIds: number[]): Set<string> {
  return jobs.hotplugged(jobIds);
}

export interface ApplyResult {
  /** What was changed in the config. */
  changes: string[];
  /** Differences left alone (not hot-plugged by the interrupted jobs). */
  kept: string[];
}

/**
 * Compares the config with the node's runtime and applies the node's state
 * of the devices in `touched` to the config. Exported for tests.
 */
export function applyRuntime(config: ConfigStore, inst: InstanceConfig, rt: InstanceRuntime__Output, touched: ReadonlySet<string>): ApplyResult {
  const changes: string[] = [];
  const kept: string[] = [];
  const rtNics = new Map(rt.nics.map((n) => [n.uuid, n]));
  const rtDisks = new Map(rt.disks.map((d) => [d.uuid, d]));
  config.db.transaction(() => {
    // Drops first, so the appended devices get the indices right after the kept ones.
    for (const n of inst.nics)
      if (!rtNics.has(n.uuid)) {
        if (!touched.has(n.uuid)) kept.push(`NIC ${n.uuid} (${n.mac}) is in the configuration only`);
        else {
          config.removeDevice('nics', n.uuid);
          changes.push(`dropped NIC ${n.uuid} (${n.mac})`);
        }
      }
    for (const d of inst.disks)
      if (!rtDisks.has(d.uuid)) {
        if (!touched.has(d.uuid)) kept.push(`disk ${d.uuid} (${formatSize(d.size_bytes)}) is in the configuration only`);
        else {
          config.removeDevice('disks', d.uuid);
          changes.push(`dropped disk ${d.uuid} (${formatSize(d.size_bytes)})`);
        }
      }
    const cfgNics = new Map(inst.nics.map((n) => [n.uuid, n]));
    for (const n of rt.nics) {
      const c = cfgNics.get(n.uuid);
      const differs = !c || c.mac !== n.mac || c.link !== n.link;
      if (differs && !touched.has(n.uuid)) {
        kept.push(c ? `NIC ${n.uuid} is ${n.mac}${n.link ? ` on ${n.link}` : ''} on the node, ${c.mac}${c.link ? ` on ${c.link}` : ''} in the configuration` : `NIC ${n.uuid} (${n.mac}) is on the node only`);
      } else if (!c) {
        config.appendNic(inst.uuid, n.uuid, n.mac, n.link);
        changes.push(`added NIC ${n.uuid} (${n.mac}${n.link ? ` on ${n.link}` : ''})`);
      } else if (c.mac !== n.mac || c.link !== n.link) {
        config.modifyNic(n.uuid, n.mac, n.link);
        changes.push(`updated NIC ${n.uuid} to ${n.mac}${n.link ? ` on ${n.link}` : ''} (was ${c.mac}${c.link ? ` on ${c.link}` : ''})`);
      }
    }
    const cfgDisks = new Set(inst.disks.map((d) => d.uuid));
    for (const d of rt.disks) {
      if (cfgDisks.has(d.uuid)) continue;
      if (!touched.has(d.uuid)) {
        kept.push(`disk ${d.uuid} is on the node only`);
        continue;
      }
      const size = Number(d.sizeBytes);
      const sizeBytes = Number.isSafeInteger(size) && size > 0 ? size : 0;
      config.appendDisk(inst.uuid, d.uuid, sizeBytes, flavourOfNodeDisk(d));
      changes.push(
        `added disk ${d.uuid} (${sizeBytes ? formatSize(sizeBytes) : 'size unknown: the node reported none, recorded as 0'})`,
      );
    }
  })();
  return { changes, kept };
}

async function reconcileOne(deps: ReconcileDeps, name: string, jobIds: number[]): Promise<ReconcileResult> {
  const inst = deps.config.findInstance(name);
  if (!inst) return { instance: name, changed: false, lines: [`reconcile: instance ${name} is not in the configuration; nothing to reconcile`] };
  const node = nodeTarget(inst);
  let rt: InstanceRuntime__Output;
  try {
    rt = await deps.rpc.instanceInfo(node, name, deps.timeoutMs);
  } catch (err) {
    const why = err instanceof NodeRpcError && err.code === 'NOT_FOUND' ? `node ${node.name} has no runtime state for ${name}` : (err as Error).message;
    return { instance: name, changed: false, lines: [`reconcile: ${why}; configuration of ${name} left unchanged (the next start sends it to the node)`] };
  }
  if (!rt.running)
    return { instance: name, changed: false, lines: [`reconcile: instance ${name} is not running on node ${node.name}; configuration left unchanged (the next start sends it to the node)`] };
  const touched = hotplugTouched(deps.jobs, jobIds);
  const { changes, kept } = applyRuntime(deps.config, inst, rt, touched);
  const lines = changes.length
    ? [`reconciled ${name} with node ${node.name}: ${changes.join(', ')}`]
    : touched.size
      ? [`reconcile: the devices hot-plugged by the interrupted job agree between the configuration of ${name} and node ${node.name}`]
      : [`reconcile: the interrupted job hot-plugged no device of ${name}; configuration left unchanged`];
  if (kept.length)
    lines.push(`reconcile: left as is (not hot-plugged by the interrupted job; a change without --hotplug applies at the next start): ${kept.join('; ')}`);
  return { instance: name, changed: changes.length > 0, lines };
}

/** The last log line of an interrupted migrate job: what the operator has to run. */
export function migrationHint(instance: string, started: boolean): string {
  const cmd = `gnt-instance migrate --cleanup ${instance}`;
  return started
    ? `reconcile: this migration job of ${instance} was cut short by the master's end and is not repaired automatically ` +
        `(the guest may be paused, or have copies on two nodes): run "${cmd}" to find where it runs and settle the configuration and the nodes`
    : `reconcile: this migration job of ${instance} had not started, nothing was touched; submit it again (if in doubt, run "${cmd}" first)`;
}

/**
 * Writes the hint into the interrupted migrate jobs of a pending entry and
 * drops them from it, in one transaction. Returns the entry's other jobs.
 */
function settleMigrateJobs(deps: ReconcileDeps, p: PendingReconcile): PendingReconcile {
  const rows = p.jobIds.map((id) => ({ id, row: deps.jobs.get(id) }));
  const migrate = rows.filter((r) => r.row?.op_type === 'instance-migrate');
  if (!migrate.length) return p;
  const rest: PendingReconcile = { instance: p.instance, jobIds: p.jobIds.filter((id) => !migrate.some((m) => m.id === id)) };
  deps.config.db.transaction(() => {
    for (const m of migrate) {
      const line = migrationHint(p.instance, m.row!.started_at !== '');
      deps.jobs.appendLog(m.id, line);
      deps.report?.(`gnt-masterd: ${line} (job ${m.id})`);
    }
    const others = readPending(deps.config).filter((x) => x.instance !== p.instance);
    writePending(deps.config, rest.jobIds.length ? [...others, rest] : others);
  })();
  return rest;
}

/**
 * Writes into each interrupted job that has operation rows which of them
 * the convergence loop still has to settle, and drops those jobs from the
 * entry, in one transaction. Returns the entry's other jobs (no operations).
 */
function handOverOperationJobs(deps: ReconcileDeps, p: PendingReconcile): PendingReconcile {
  const withOps = p.jobIds.map((id) => ({ id, ops: operationsOfJobs(deps.config, [id]) })).filter((j) => j.ops.length);
  if (!withOps.length) return p;
  const rest: PendingReconcile = { instance: p.instance, jobIds: p.jobIds.filter((id) => !withOps.some((j) => j.id === id)) };
  deps.config.db.transaction(() => {
    for (const j of withOps) {
      const open = j.ops.filter((o) => o.state === 'sent' || o.state === 'removal_pending');
      deps.jobs.appendLog(
        j.id,
        open.length
          ? `its open operations are settled from the node's record of them, with no command: ${open.map((o) => `${o.id} (${describeChange(changeOf(o))}, ${o.state})`).join('; ')}`
          : 'all its operations were settled before the master stopped',
      );
    }
    const others = readPending(deps.config).filter((x) => x.instance !== p.instance);
    writePending(deps.config, rest.jobIds.length ? [...others, rest] : others);
  })();
  return rest;
}

/**
 * Reconciles every instance on the pending list (see the file comment), one
 * InstanceInfo per instance, in parallel. Returns what was done.
 */
export async function reconcilePending(deps: ReconcileDeps): Promise<ReconcileResult[]> {
  const pending = readPending(deps.config).map((entry) => handOverOperationJobs(deps, settleMigrateJobs(deps, entry)));
  return Promise.all(
    pending.map(async (p) => {
      if (!p.jobIds.length) return { instance: p.instance, changed: false, lines: [] };
      let result: ReconcileResult;
      try {
        result = await reconcileOne(deps, p.instance, p.jobIds);
      } catch (err) {
        // A config error (e.g. a MAC the node uses is taken by another instance):
        // the transaction rolled back, nothing changed. Kept pending for the next start.
        const line = `reconcile of ${p.instance} failed, configuration unchanged: ${(err as Error).message}`;
        for (const id of p.jobIds) deps.jobs.appendLog(id, line);
        deps.report?.(`gnt-masterd: ${line}`);
        return { instance: p.instance, changed: false, lines: [line] };
      }
      for (const id of p.jobIds) for (const l of result.lines) deps.jobs.appendLog(id, l);
      for (const l of result.lines) deps.report?.(`gnt-masterd: ${l} (job${p.jobIds.length > 1 ? 's' : ''} ${p.jobIds.join(', ')})`);
      removePending(deps.config, p.instance);
      return result;
    }),
  );
}
