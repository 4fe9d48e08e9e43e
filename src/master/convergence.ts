/**
 * The convergence loop of gnt-masterd: brings the configuration in line
 * with what the nodes did, with no operator action. Runs once at start-up,
 * before the master serves, and then every interval (about 1 s), one pass
 * at a time. Per node:
 *
 *   1. OperationLog with the cursor (last applied revision) of every
 *      instance the configuration puts on that node. Each record, in
 *      revision order, is applied in ONE transaction together with its
 *      cursor update, so it is applied exactly once even if the master is
 *      SIGKILLed at any point:
 *        - an operation the master knows and has not settled (and no job is
 *          resolving right now) is settled (jobs/operations.ts); its job's
 *          log gets "settled by the node after the job: ...";
 *        - a change the node made on its own (no operation id): a device the
 *          guest ejected, or that the node removed or added while settling an
 *          interrupted operation, is applied to the configuration; a
 *          resources record sets vCPUs and memory to the node's values; each
 *          goes to the instance's history (gnt-instance info).
 *   2. An instance whose log no longer reaches back to its cursor
 *      (`truncated`): a warning, then its configuration is compared with
 *      InstanceInfo for the devices that operations touched
 *      (jobs/reconcile.ts applyRuntime).
 *   3. Operations still 'sent' after fenceAfterMs that no job is resolving:
 *      OperationStatus with fence=true (an id the node never got is
 *      recorded as failed there, so a late copy is refused), then settled
 *      with the answer.
 *
 * A node that cannot be reached is reported once (and once when it is back);
 * its records wait on the node.
 */
import type { ConfigStore, NodeRow } from './config/config-store';
import { ConfigError } from './config/config-store';
import { addHistory } from './config/history';
import { cursorOf, noteEpoch, setCursor } from './config/oplog-cursors';
import type { JobStore } from './jobs/job-store';
import { outcomeFromRecord } from './jobs/op-call';
import { getOperation, OperationError, openOperations, settleOperation, type OperationRow } from './jobs/operations';
import { applyRuntime } from './jobs/reconcile';
import type { NodeRpc } from './node-rpc';
import { NodeRpcError } from './node-rpc';
import type { OperationRecord__Output } from '../generated/gnt/node/v1/OperationRecord';
import { flavourOfNodeDisk } from './jobs/disk-backing';

export const DEFAULT_CONVERGE_INTERVAL_MS = 1000;
export const DEFAULT_FENCE_AFTER_MS = 10_000;

export interface ConvergenceDeps {
  config: ConfigStore;
  jobs: JobStore;
  rpc: Pick<NodeRpc, 'operationLog' | 'operationStatus' | 'instanceInfo'>;
  /** Operations a job is sending or resolving now: left to the job. */
  inflight: ReadonlySet<string>;
  /** Where to write what happened (masterd's stderr). */
  report?: (line: string) => void;
  /** Age after which a 'sent' operation with no outcome is fenced, ms. */
  fenceAfterMs?: number;
  /** Deadline of the node calls, ms. */
  timeoutMs?: number;
  now?: () => number;
}

/** What a pass needs of an instance (read for every instance, every second: kept small). */
interface InstanceRef {
  uuid: string;
  name: string;
  node_uuid: string;
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const kindWord = (kind: string): string => (kind === 'nic' ? 'NIC' : kind);

export class Convergence {
  private pass?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Node name -> the error last reported for it (reported once until it changes). */
  private readonly down = new Map<string, string>();
  /** "instance uuid@revision" already compared after a truncated log. */
  private readonly compared = new Set<string>();
  /** Operations whose settling the configuration refused (logged once; `gnt-cluster verify` shows the difference). */
  private readonly stuck = new Set<string>();

  constructor(private readonly deps: ConvergenceDeps) {}

  /** Runs a pass at once and then one every `intervalMs` until stop(). */
  start(intervalMs = DEFAULT_CONVERGE_INTERVAL_MS): void {
    this.stopped = false;
    const tick = () => {
      if (this.stopped) return;
      void this.runOnce().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, intervalMs);
      });
    };
    tick();
  }

  /** Stops the loop and waits for the pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.pass;
  }

  /** One pass over every node; a pass already running is joined, not doubled. */
  runOnce(): Promise<void> {
    if (!this.pass)
      this.pass = this.runAll()
        .catch((err) => this.deps.report?.(`gnt-masterd: convergence pass failed: ${errorText(err)}`))
        .finally(() => (this.pass = undefined));
    return this.pass;
  }

  private async runAll(): Promise<void> {
    const { config } = this.deps;
    const instances = config.db.prepare('SELECT uuid, name, node_uuid FROM instances').all() as InstanceRef[];
    await Promise.all(
      config.listNodes().map((node) => this.runNode(node, instances.filter((i) => i.node_uuid === node.uuid))),
    );
    this.closeOrphans();
  }

  private async runNode(node: NodeRow, instances: InstanceRef[]): Promise<void> {
    if (instances.length) {
      const ok = await this.applyLog(node, instances);
      if (!ok) return;
    }
    await this.fenceStale(node);
  }

  private reachable(node: NodeRow): void {
    if (this.down.delete(node.name)) this.deps.report?.(`gnt-masterd: node ${node.name} answers again; settling what it did meanwhile`);
  }

  private unreachable(node: NodeRow, err: unknown): void {
    const text = errorText(err);
    if (this.down.get(node.name) === text) return;
    this.down.set(node.name, text);
    this.deps.report?.(`gnt-masterd: cannot read the operation log of node ${node.name}: ${text}; its changes are applied once it answers`);
  }

  /** Step 1 and 2 of the file comment; false when the node could not be asked. */
  private async applyLog(node: NodeRow, instances: InstanceRef[]): Promise<boolean> {
    const { config, rpc } = this.deps;
    const after = new Map(instances.map((i) => [i.name, cursorOf(config.db, i.uuid, node.uuid)]));
    let reply;
    try {
      reply = await rpc.operationLog(node, instances.map((i) => ({ instance: i.name, afterRevision: after.get(i.name)! })), this.deps.timeoutMs);
    } catch (err) {
      this.unreachable(node, err);
      return false;
    }
    this.reachable(node);
    const byInstance = new Map(instances.map((i) => [i.name, i]));
    const restarted = this.noteEpochs(node, byInstance, reply.heads ?? []);
    const records = [...reply.records].sort((a, b) => Number(a.revision) - Number(b.revision));
    // An instance whose log reaches an operation a job is still resolving
    // waits there (its cursor stays before it) until the next pass, so a
    // later state of that operation (a removal completing) is not skipped.
    const waiting = new Set<string>();
    for (const rec of records) {
      const inst = byInstance.get(rec.instance);
      if (!inst || waiting.has(inst.name) || restarted.has(inst.name)) continue;
      if (rec.operationId && this.deps.inflight.has(rec.operationId)) waiting.add(inst.name);
      else this.applyRecordOnce(node, inst, rec);
    }
    for (const name of reply.truncated) {
      const inst = byInstance.get(name);
      if (inst) await this.compareTruncated(node, inst, after.get(name)!);
    }
    return true;
  }

  /**
   * A journal with another epoch than the cursor's started over (the node
   * made the runtime file anew): its cursor goes back to 0 and the instance
   * is read again from the start at the next pass. Returns those instances.
   */
  private noteEpochs(node: NodeRow, byInstance: Map<string, InstanceRef>, heads: Array<{ instance: string; epoch: string }>): Set<string> {
    const restarted = new Set<string>();
    for (const h of heads) {
      const inst = byInstance.get(h.instance);
      if (!inst || !noteEpoch(this.deps.config.db, inst.uuid, node.uuid, h.epoch)) continue;
      restarted.add(inst.name);
      const line = `the operation log of ${inst.name} on node ${node.name} started over (new journal ${h.epoch}); reading it again from the start`;
      addHistory(this.deps.config.db, inst.uuid, line);
      this.deps.report?.(`gnt-masterd: ${line}`);
    }
    return restarted;
  }

  /** Applies one record and moves the cursor past it, in one transaction; skips records at or before the cursor. */
  applyRecordOnce(node: NodeRow, inst: InstanceRef, rec: OperationRecord__Output): void {
    const { config } = this.deps;
    const revision = Number(rec.revision);
    const lines = config.db.transaction((): string[] => {
      if (!(revision > cursorOf(config.db, inst.uuid, node.uuid))) return [];
      const out = rec.operationId ? this.applyOperationRecord(inst, rec) : this.applyNodeChange(node, inst, rec);
      setCursor(config.db, inst.uuid, node.uuid, revision);
      return out;
    })();
    for (const l of lines) this.deps.report?.(`gnt-masterd: ${l}`);
  }

  /** A record of an operation the master sent. */
  private applyOperationRecord(inst: InstanceRef, rec: OperationRecord__Output): string[] {
    const { config } = this.deps;
    const op = getOperation(config, rec.operationId);
    if (!op) {
      const line = `node reports operation ${rec.operationId} of ${inst.name} (${rec.kind} ${rec.action} ${rec.deviceUuid}) as ${rec.state}; the master has no such operation, nothing applied`;
      addHistory(config.db, inst.uuid, line);
      return [line];
    }
    const outcome = outcomeFromRecord(rec);
    return outcome ? this.settle(op, () => settleOperation(config, op.id, outcome)) : [];
  }

  /** Settles with `fn` and writes the result into the job's log and the instance's history. */
  private settle(op: OperationRow, fn: () => ReturnType<typeof settleOperation>): string[] {
    const { config, jobs } = this.deps;
    let line: string;
    try {
      const r = fn();
      if (!r.applied) return [];
      line = `settled by the node after the job: ${r.summary}`;
    } catch (err) {
      if (!(err instanceof ConfigError || err instanceof OperationError)) throw err;
      if (this.stuck.has(op.id)) return [];
      this.stuck.add(op.id);
      line = `could not settle operation ${op.id} (${op.kind} ${op.action} ${op.device_uuid}): ${err.message}; it stays open`;
    }
    if (op.job_id !== null) jobs.appendLog(op.job_id, line);
    addHistory(config.db, op.instance_uuid, `${line}${op.job_id !== null ? ` (job ${op.job_id})` : ''}`);
    return [`${line} (${op.instance_name}${op.job_id !== null ? `, job ${op.job_id}` : ''})`];
  }

  /** A change the node made on its own (no operation id), applied to the configuration and the history. */
  private applyNodeChange(node: NodeRow, inst: InstanceRef, rec: OperationRecord__Output): string[] {
    const { config } = this.deps;
    const who = rec.settledBy === 'guest' ? 'the guest' : `node ${node.name} (${rec.settledBy || 'on its own'})`;
    let what: string;
    try {
      what = config.db.transaction(() => this.applyChange(inst, rec))();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      what = `not applied: ${err.message}`;
    }
    const line = `${inst.name}: ${who} ${rec.action === 'remove' ? 'removed' : rec.action === 'add' ? 'added' : rec.action === 'resize' ? 'resized' : rec.action} ` +
      `${rec.kind === 'resources' ? 'vCPUs/memory' : `${kindWord(rec.kind)} ${rec.deviceUuid}`} (revision ${rec.revision}): ${what}`;
    addHistory(config.db, inst.uuid, line);
    return [line];
  }

  private applyChange(inst: InstanceRef, rec: OperationRecord__Output): string {
    const { config } = this.deps;
    if (rec.state !== 'OPERATION_SUCCEEDED' && !(rec.kind === 'resources' && rec.resize))
      return `recorded as ${rec.state}${rec.errorMessage ? ` (${rec.errorMessage})` : ''}; nothing to apply`;
    if (rec.kind === 'resources') return this.applyResources(inst, rec);
    const table = rec.kind === 'nic' ? 'nics' : rec.kind === 'disk' ? 'disks' : undefined;
    if (!table) return `unknown kind "${rec.kind}"; nothing applied`;
    if (rec.action === 'remove') {
      const open = openOperations(config).filter((o) => o.device_uuid === rec.deviceUuid && o.action === 'remove' && !this.deps.inflight.has(o.id));
      for (const o of open) settleOperation(config, o.id, { state: 'succeeded', settledBy: rec.settledBy || 'node' });
      if (!config.hasDevice(table, rec.deviceUuid)) return open.length ? 'its pending removal completed' : 'already not in the configuration';
      config.removeDevice(table, rec.deviceUuid);
      return 'dropped from the configuration';
    }
    if (rec.action === 'add') return this.applyAdd(inst, rec, table);
    return `action "${rec.action}" is not applied from the log; nothing changed`;
  }

  private applyAdd(inst: InstanceRef, rec: OperationRecord__Output, table: 'nics' | 'disks'): string {
    const { config } = this.deps;
    if (config.hasDevice(table, rec.deviceUuid)) return 'already in the configuration';
    const nic = rec.hotplug?.nic;
    const disk = rec.hotplug?.disk;
    if (table === 'nics' && nic?.mac) {
      config.appendNic(inst.uuid, rec.deviceUuid, nic.mac, nic.link);
      return `added to the configuration (${nic.mac}${nic.link ? ` on ${nic.link}` : ''})`;
    }
    if (table === 'disks' && disk && Number(disk.sizeBytes) > 0) {
      config.appendDisk(inst.uuid, rec.deviceUuid, Number(disk.sizeBytes), flavourOfNodeDisk(disk));
      return 'added to the configuration';
    }
    return 'the record does not describe the device; not added';
  }

  private applyResources(inst: InstanceRef, rec: OperationRecord__Output): string {
    const { config } = this.deps;
    const cur = config.findInstance(inst.name);
    if (!cur || !rec.resize) return 'no values; nothing applied';
    const vcpus = Math.min(Math.max(1, rec.resize.vcpus || cur.vcpus), cur.maxvcpus);
    const memoryMib = Math.min(Math.max(1, Number(rec.resize.memoryMib) || cur.memory_mib), cur.maxmem_mib);
    if (vcpus === cur.vcpus && memoryMib === cur.memory_mib) return `the configuration already has ${vcpus} vCPUs, ${memoryMib} MiB`;
    config.setResources(inst.name, vcpus, memoryMib);
    return `the configuration takes ${vcpus} vCPUs, ${memoryMib} MiB (was ${cur.vcpus}, ${cur.memory_mib} MiB)`;
  }

  /** Step 2: the node's log lost records after our cursor; compare with its runtime instead. */
  private async compareTruncated(node: NodeRow, inst: InstanceRef, after: number): Promise<void> {
    const { config, rpc } = this.deps;
    const key = `${inst.uuid}@${cursorOf(config.db, inst.uuid, node.uuid)}`;
    if (this.compared.has(key)) return;
    const warn = `warning: node ${node.name}'s operation log of ${inst.name} no longer reaches back to revision ${after}; comparing the configuration with the node's runtime`;
    let lines: string[];
    try {
      const rt = await rpc.instanceInfo(node, inst.name, this.deps.timeoutMs);
      const now = config.getInstance(inst.name);
      const touched = new Set(config.db.prepare(`SELECT device_uuid FROM operations WHERE instance_uuid = ? AND device_uuid != ''`).all(inst.uuid).map((r) => (r as { device_uuid: string }).device_uuid));
      const { changes } = rt.running ? applyRuntime(config, now, rt, touched) : { changes: [] };
      lines = [warn, rt.running ? `${inst.name}: ${changes.length ? changes.join(', ') : 'configuration and node agree'}` : `${inst.name} is not running on ${node.name}; configuration left as is`];
    } catch (err) {
      this.deps.report?.(`gnt-masterd: ${warn}: ${errorText(err)}`);
      return;
    }
    this.compared.add(key);
    for (const l of lines) {
      addHistory(config.db, inst.uuid, l);
      this.deps.report?.(`gnt-masterd: ${l}`);
    }
  }

  /** Step 3: operations 'sent' long ago with no outcome: ask the node, fencing unknown ids. */
  private async fenceStale(node: NodeRow): Promise<void> {
    const { config, rpc } = this.deps;
    const now = (this.deps.now ?? Date.now)();
    const limit = this.deps.fenceAfterMs ?? DEFAULT_FENCE_AFTER_MS;
    const stale = openOperations(config, node.uuid).filter(
      (o) => o.state === 'sent' && !this.deps.inflight.has(o.id) && !this.stuck.has(o.id) && now - Date.parse(o.created_at) >= limit,
    );
    for (const op of stale) {
      let rec: OperationRecord__Output;
      try {
        rec = await rpc.operationStatus(node, op.instance_name, op.id, true);
      } catch (err) {
        if (!(err instanceof NodeRpcError && err.code === 'NOT_FOUND')) {
          this.unreachable(node, err);
          return;
        }
        // The node has no such instance: the operation cannot have been applied there.
        const outcome = { state: 'failed', settledBy: 'fence', errorCode: 'NOT_FOUND', error: err.message } as const;
        for (const l of this.settle(op, () => settleOperation(config, op.id, outcome))) this.deps.report?.(`gnt-masterd: ${l}`);
        continue;
      }
      if (this.deps.inflight.has(op.id)) continue;
      // UNKNOWN even with fence: the node has no such instance, so nothing was or can be applied there.
      const outcome = rec.state === 'OPERATION_UNKNOWN'
        ? ({ state: 'failed', settledBy: 'fence', errorCode: 'NOT_FOUND', error: `node ${node.name} has no record of it and no instance ${op.instance_name}` } as const)
        : outcomeFromRecord(rec);
      if (outcome) for (const l of this.settle(op, () => settleOperation(config, op.id, outcome))) this.deps.report?.(`gnt-masterd: ${l}`);
    }
  }

  /** Open operations of instances no longer in the configuration end (nothing to commit them to). */
  private closeOrphans(): void {
    const { config } = this.deps;
    const known = new Set((config.db.prepare('SELECT uuid FROM instances').all() as { uuid: string }[]).map((r) => r.uuid));
    for (const op of openOperations(config)) {
      if (known.has(op.instance_uuid) || this.deps.inflight.has(op.id)) continue;
      settleOperation(config, op.id, { state: 'failed', settledBy: 'instance-remove', errorCode: 'ABORTED', error: `instance ${op.instance_name} is no longer in the configuration` });
    }
  }
}
