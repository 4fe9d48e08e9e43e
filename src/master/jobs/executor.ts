/**
 * Runs one job's operation: checks it against the configuration, calls the
 * node, and commits the configuration only once the node has confirmed.
 * A failure leaves the configuration as it was before the failed step.
 */
import { randomUUID } from 'node:crypto';
import { ConfigError, ConfigStore, type InstanceConfig } from '../config/config-store';
import { NodeRpc, NodeRpcError } from '../node-rpc';
import { checkMac, formatSize } from '../validate';
import type { InstanceRuntime__Output } from '../../generated/gnt/node/v1/InstanceRuntime';
import type { JobRow } from './job-store';
import { JobError, type JobContext } from './queue';
import type { Op } from './ops';
import { instanceSpec, nodeTarget } from './spec';
import { runMigrate } from './migrate';
import { createOperation, openOperations, settleOperation, settleRemovalsAbsentFrom, type OpChange } from './operations';
import { runOperation, type OpCallDeps } from './op-call';
import type { HotplugDeviceRequest } from '../../generated/gnt/node/v1/HotplugDeviceRequest';

type ModifyOp = Extract<Op, { type: 'instance-modify' }>;
type AddOp = Extract<Op, { type: 'instance-add' }>;

export { instanceSpec, nodeTarget } from './spec';

function describeRuntime(rt: InstanceRuntime__Output): string[] {
  const lines = [`running: ${rt.running ? `yes, pid ${rt.pid}` : 'no'}`];
  rt.disks.forEach((d, i) => lines.push(`disk/${i} ${d.uuid}: PCI slot ${d.pci}, ${d.deviceId || '-'}${d.path ? `, ${d.path}` : ''}`));
  rt.nics.forEach((n, i) => lines.push(`nic/${i} ${n.uuid}: PCI slot ${n.pci}, ${n.deviceId || '-'}, ${n.mac}${n.tap ? `, tap ${n.tap}` : ''}${n.link ? `, bridge ${n.link}` : ''}`));
  return lines;
}

/**
 * Checks -B vcpus/memory against the instance's limits in the configuration
 * (0 = unchanged). The node checks the rest (ACPI step, what it can hold).
 */
export function checkResizeLimits(inst: InstanceConfig, vcpus: number, memoryMib: number): void {
  if (vcpus && (vcpus < 1 || vcpus > inst.maxvcpus))
    throw new ConfigError(
      `instance ${inst.name} can have 1 to ${inst.maxvcpus} vCPUs (maxvcpus ${inst.maxvcpus}); ${vcpus} asked`,
      'INVALID_ARGUMENT',
    );
  if (memoryMib && memoryMib > inst.maxmem_mib)
    throw new ConfigError(
      `instance ${inst.name} can have at most ${inst.maxmem_mib} MiB of memory (maxmem); ${memoryMib} MiB asked`,
      'INVALID_ARGUMENT',
    );
}

export interface ExecutorOptions {
  /** How long a job keeps asking a node for an operation's outcome after an ambiguous failure, ms (default 60 s). */
  outcomeWindowMs?: number;
}

export class Executor {
  /** MACs chosen by running jobs but not yet committed. */
  private readonly reservedMacs = new Set<string>();

  constructor(
    private readonly config: ConfigStore,
    private readonly rpc: NodeRpc,
    private readonly options: ExecutorOptions = {},
    /** Ids of the operations jobs are sending now (the convergence loop leaves them alone). */
    readonly inflight: Set<string> = new Set(),
  ) {}

  async run(job: JobRow, ctx: JobContext): Promise<void> {
    const op = JSON.parse(job.op_json) as Op;
    const macs: string[] = [];
    try {
      switch (op.type) {
        case 'node-add':
          return await this.nodeAdd(op.name, op.address, ctx);
        case 'instance-add':
          return await this.instanceAdd(op, ctx, macs);
        case 'instance-start':
          return await this.instanceStart(this.config.getInstance(op.name), ctx);
        case 'instance-stop':
          return await this.instanceStop(op.name, op.timeoutMs, ctx);
        case 'instance-remove':
          return await this.instanceRemove(op.name, ctx);
        case 'instance-modify':
          return await this.instanceModify(op, ctx, macs);
        case 'instance-migrate':
          return await runMigrate({ config: this.config, rpc: this.rpc }, op, ctx);
      }
    } catch (err) {
      if (err instanceof ConfigError) throw new JobError(err.message, err.code);
      if (err instanceof NodeRpcError) throw new JobError(err.message, err.code);
      throw err;
    } finally {
      macs.forEach((m) => this.reservedMacs.delete(m));
    }
  }

  private reserveMac(mac: string, macs: string[]): string {
    if (this.reservedMacs.has(mac) || this.config.macTaken(mac)) throw new ConfigError(`MAC address ${mac} is already used in the cluster`, 'ALREADY_EXISTS');
    this.reservedMacs.add(mac);
    macs.push(mac);
    return mac;
  }

  private generateMac(macs: string[]): string {
    return this.reserveMac(this.config.generateMac(this.reservedMacs), macs);
  }

  private async nodeAdd(name: string, address: string, ctx: JobContext): Promise<void> {
    if (this.config.findNode(name)) throw new ConfigError(`node "${name}" already exists`, 'ALREADY_EXISTS');
    ctx.log(`asking the node daemon at ${address} for NodeInfo`);
    let info;
    try {
      info = await this.rpc.nodeInfo({ name, address });
    } catch (err) {
      throw new JobError(`node ${name} was not added: ${(err as Error).message}`, (err as NodeRpcError).code ?? '');
    }
    if (info.name && info.name !== name)
      throw new JobError(`node ${name} was not added: the node daemon at ${address} calls itself "${info.name}"`, 'FAILED_PRECONDITION');
    ctx.log(`node ${name}: ${info.cpus} CPUs, ${info.memoryTotalMib} MiB memory, QEMU ${info.qemuVersion}, storage ${info.storageDir}`);
    this.config.addNode(name, address);
    ctx.log(`node ${name} added`);
  }

  private async instanceAdd(op: AddOp, ctx: JobContext, macs: string[]): Promise<void> {
    if (this.config.findInstance(op.name)) throw new ConfigError(`instance "${op.name}" already exists`, 'ALREADY_EXISTS');
    const node = this.config.getNode(op.node);
    const nics = op.nics.map((n) => ({ mac: n.mac ? this.reserveMac(n.mac, macs) : this.generateMac(macs), link: n.link }));
    const inst = this.config.addInstance({
      name: op.name, nodeUuid: node.uuid, vcpus: op.vcpus, maxvcpus: op.maxvcpus, memoryMib: op.memoryMib,
      maxmemMib: op.maxmemMib, kernel: op.kernel, initrd: op.initrd, kernelArgs: op.kernelArgs, hvparams: op.hvparams,
      nics, disks: op.disks,
    });
    ctx.log(`instance ${inst.name} (${inst.uuid}) added to the configuration on node ${node.name}`);
    inst.nics.forEach((n) => ctx.log(`nic/${n.idx} ${n.uuid}: ${n.mac}${n.link ? ` on ${n.link}` : ''}`));
    inst.disks.forEach((d) => ctx.log(`disk/${d.idx} ${d.uuid}: ${formatSize(d.size_bytes)}`));
    if (op.noStart) {
      ctx.log('not started (--no-start)');
      return;
    }
    try {
      await this.instanceStart(inst, ctx);
    } catch (err) {
      ctx.log(`start failed; removing instance ${inst.name} again`);
      await this.rpc.instanceRemove(nodeTarget(inst), inst.name).catch((e: Error) => ctx.log(`cleanup on the node: ${e.message}`));
      this.config.removeInstance(inst.name);
      const e = err as Error & { code?: string };
      throw new JobError(`instance ${inst.name} was not added: it could not be started: ${e.message}`, e.code ?? '');
    }
  }

  private async instanceStart(inst: InstanceConfig, ctx: JobContext): Promise<void> {
    ctx.log(`starting instance ${inst.name} on node ${inst.node.name}`);
    const rt = await this.rpc.instanceStart(nodeTarget(inst), instanceSpec(inst));
    this.config.setAdminState(inst.name, 'up');
    describeRuntime(rt).forEach((l) => ctx.log(l));
    this.settleStartedRemovals(inst, rt, ctx);
    ctx.log(`instance ${inst.name} started`);
  }

  /** Pending removals the start completed (the device was left out of the spec and is not on the node). */
  private settleStartedRemovals(inst: InstanceConfig, rt: InstanceRuntime__Output, ctx: JobContext): void {
    const onNode = new Set([...rt.nics.map((n) => n.uuid), ...rt.disks.map((d) => d.uuid)]);
    settleRemovalsAbsentFrom(this.config, inst.uuid, onNode).forEach((l) => ctx.log(l));
  }

  private async instanceStop(name: string, timeoutMs: number, ctx: JobContext): Promise<void> {
    const inst = this.config.getInstance(name);
    ctx.log(`stopping instance ${name} on node ${inst.node.name}`);
    await this.rpc.instanceStop(nodeTarget(inst), name, timeoutMs);
    this.config.setAdminState(name, 'down');
    ctx.log(`instance ${name} stopped`);
  }

  private async instanceRemove(name: string, ctx: JobContext): Promise<void> {
    const inst = this.config.getInstance(name);
    const node = nodeTarget(inst);
    let rt: InstanceRuntime__Output | undefined;
    try {
      rt = await this.rpc.instanceInfo(node, name);
    } catch (err) {
      if (!(err instanceof NodeRpcError && err.code === 'NOT_FOUND')) throw err;
      ctx.log(`node ${node.name} has no runtime state for ${name}`);
    }
    if (rt?.running) {
      ctx.log(`stopping instance ${name}`);
      await this.rpc.instanceStop(node, name);
    }
    if (rt) {
      ctx.log(`removing instance ${name} and its disks on node ${node.name}`);
      await this.rpc.instanceRemove(node, name).catch((err) => {
        if (!(err instanceof NodeRpcError && err.code === 'NOT_FOUND')) throw err;
      });
    }
    this.abandonOperations(inst, ctx);
    this.config.removeInstance(name);
    ctx.log(`instance ${name} removed from the configuration`);
  }

  private opDeps(): OpCallDeps {
    return { config: this.config, rpc: this.rpc, inflight: this.inflight, windowMs: this.options.outcomeWindowMs };
  }

  /** Open operations of an instance being removed end with it (nothing left to commit them to). */
  private abandonOperations(inst: InstanceConfig, ctx: JobContext): void {
    for (const op of openOperations(this.config)) {
      if (op.instance_uuid !== inst.uuid) continue;
      settleOperation(this.config, op.id, { state: 'failed', settledBy: 'instance-remove', errorCode: 'ABORTED', error: `instance ${inst.name} was removed` });
      ctx.log(`operation ${op.id} of ${inst.name} closed: the instance is removed`);
    }
  }

  private async instanceModify(op: ModifyOp, ctx: JobContext, macs: string[]): Promise<void> {
    const inst = this.config.getInstance(op.name);
    const node = nodeTarget(inst);
    const resize = op.vcpus > 0 || op.memoryMib > 0;
    if (resize) checkResizeLimits(inst, op.vcpus, op.memoryMib);
    const steps = this.planSteps(inst, op, macs);

    // Whether each device type is changed live.
    const live = new Map<'NIC' | 'DISK', boolean>();
    const isLive = async (type: 'NIC' | 'DISK'): Promise<boolean> => {
      if (op.hotplug === 'NONE') return false;
      if (op.hotplug === 'HOTPLUG') return true;
      if (!live.has(type)) {
        const r = await this.rpc.hotplugSupported(node, inst.name, type);
        if (!r.supported) ctx.log(`hotplug of ${type} not possible${r.reason ? `: ${r.reason}` : ''}; the change is made in the configuration only`);
        live.set(type, r.supported);
      }
      return live.get(type)!;
    };

    const done: string[] = [];
    const pending: string[] = [];
    if (resize) await this.resize(inst, op, ctx, done, pending);
    for (const s of steps) {
      if (await isLive(s.change.kind === 'nic' ? 'NIC' : 'DISK')) await this.hotplugStep(inst, s, ctx, done);
      else {
        this.commit(inst, s.change);
        const verb = s.change.action;
        const m = `${s.what}: ${verb === 'add' ? 'added to' : verb === 'modify' ? 'modified in' : 'removed from'} the configuration`;
        ctx.log(`${m}; it applies at the next start of ${inst.name}`);
        done.push(m);
        pending.push(s.what);
      }
    }
    if (pending.length) ctx.log(`${pending.length} change(s) apply at the next start of instance ${inst.name}`);
  }

  /**
   * Plans every change against a copy first: any bad index or MAC fails
   * the job before anything is touched. Indices refer to the device list
   * as it is after the earlier changes of the same command (as in Ganeti).
   */
  private planSteps(inst: InstanceConfig, op: ModifyOp, macs: string[]): Step[] {
    const steps: Step[] = [];
    const nics = inst.nics.map((n) => ({ ...n }));
    const disks = inst.disks.map((d) => ({ ...d }));
    const range = (kind: string, i: number, n: number) =>
      new ConfigError(
        `${kind} index ${i} is out of range: instance ${inst.name} has ${n} ${kind}${n === 1 ? '' : 's'}${n ? ` (0 to ${n - 1})` : ''}`,
        'INVALID_ARGUMENT',
      );
    for (const c of op.nics) {
      if (c.action === 'ADD') {
        const mac = c.mac ? this.reserveMac(checkMac(c.mac), macs) : this.generateMac(macs);
        const uuid = randomUUID();
        nics.push({ uuid, idx: nics.length, mac, link: c.link, removal_pending: '' });
        steps.push({ what: `new NIC ${uuid} (${mac}${c.link ? ` on ${c.link}` : ''})`, change: { kind: 'nic', action: 'add', uuid, mac, link: c.link } });
      } else if (c.index >= nics.length) throw range('NIC', c.index, nics.length);
      else if (c.action === 'MODIFY') {
        const cur = nics[c.index];
        const mac = c.mac && c.mac !== cur.mac ? this.reserveMac(checkMac(c.mac), macs) : cur.mac;
        const link = c.link || cur.link;
        steps.push({
          what: `NIC ${c.index} (${cur.uuid}) to ${mac}${link ? ` on ${link}` : ''}`,
          change: { kind: 'nic', action: 'modify', uuid: cur.uuid, mac, link, oldMac: cur.mac, oldLink: cur.link },
        });
        nics[c.index] = { ...cur, mac, link };
      } else {
        const cur = nics[c.index];
        steps.push({ what: `NIC ${c.index} (${cur.uuid})`, change: { kind: 'nic', action: 'remove', uuid: cur.uuid, mac: cur.mac } });
        nics.splice(c.index, 1);
      }
    }
    for (const c of op.disks) {
      if (c.action === 'ADD') {
        const uuid = randomUUID();
        disks.push({ uuid, idx: disks.length, size_bytes: c.sizeBytes, removal_pending: '' });
        steps.push({ what: `new disk ${uuid} (${formatSize(c.sizeBytes)})`, change: { kind: 'disk', action: 'add', uuid, sizeBytes: c.sizeBytes } });
      } else if (c.index >= disks.length) throw range('disk', c.index, disks.length);
      else {
        const cur = disks[c.index];
        steps.push({ what: `disk ${c.index} (${cur.uuid})`, change: { kind: 'disk', action: 'remove', uuid: cur.uuid, sizeBytes: cur.size_bytes } });
        disks.splice(c.index, 1);
      }
    }
    return steps;
  }

  /**
   * One live device change: the operation is committed before the node is
   * called and settled by runOperation (jobs/op-call.ts), exactly once.
   */
  private async hotplugStep(inst: InstanceConfig, s: Step, ctx: JobContext, done: string[]): Promise<void> {
    const node = nodeTarget(inst);
    const c = s.change as DeviceChange;
    const op = createOperation(this.config, ctx.jobId, inst, c);
    ctx.log(`hot-${c.action} of ${s.what} on node ${node.name} (operation ${op.id})`);
    const res = await runOperation(this.opDeps(), {
      op,
      node,
      log: ctx.log,
      send: async () => {
        const reply = await this.rpc.hotplugDevice(node, hotplugRequest(inst.name, c, op.id));
        crashPoint(ctx);
        return reply;
      },
      fromReply: (r) => ({ state: r.removalPending ? 'removal_pending' : 'succeeded', settledBy: 'request' }),
    });
    const final = res.settle.op;
    if (final.state === 'failed')
      throw new JobError(
        `hot-${c.action} of ${s.what} failed: ${final.error}; the configuration of this change is unchanged` +
          (done.length ? ` (already done: ${done.join('; ')})` : ''),
        final.error_code,
      );
    const r = res.reply ?? res.record?.hotplug ?? undefined;
    const at = r ? ` at PCI slot ${r.pci}${r.deviceId ? ` (${r.deviceId})` : ''}` : '';
    const m =
      final.state === 'removal_pending'
        ? `${s.what}: removal pending: the guest has not released the device yet; the removal completes when it does, with no command (gnt-instance info shows it)`
        : `${s.what}: hot-${c.action === 'add' ? 'added' : c.action === 'modify' ? 'modified' : 'removed'}${at}${res.reply ? '' : ' (outcome confirmed by the node)'}`;
    ctx.log(m);
    done.push(m);
  }

  /**
   * -B vcpus/memory: one InstanceResize call for both when live (an
   * operation like any hotplug step), config only otherwise (applied at
   * the next start).
   */
  private async resize(inst: InstanceConfig, op: ModifyOp, ctx: JobContext, done: string[], pending: string[]): Promise<void> {
    const node = nodeTarget(inst);
    const vcpus = op.vcpus || inst.vcpus;
    const memoryMib = op.memoryMib || inst.memory_mib;
    const what = [op.vcpus ? `vCPUs ${inst.vcpus} -> ${vcpus}` : '', op.memoryMib ? `memory ${inst.memory_mib} MiB -> ${memoryMib} MiB` : '']
      .filter(Boolean)
      .join(', ');
    let live = op.hotplug === 'HOTPLUG';
    if (op.hotplug === 'IF_POSSIBLE') {
      const rt = await this.rpc.instanceInfo(node, inst.name).catch((err: Error) => {
        if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return undefined;
        throw err;
      });
      live = rt?.running === true;
      if (!live) ctx.log(`live resize not possible: instance ${inst.name} is not running; the change is made in the configuration only`);
    }
    if (!live) {
      this.config.setResources(inst.name, vcpus, memoryMib);
      ctx.log(`${what}: changed in the configuration; it applies at the next start of ${inst.name}`);
      done.push(`${what} in the configuration`);
      pending.push(what);
      return;
    }
    const change: OpChange = { kind: 'resources', action: 'resize', vcpus, memoryMib, oldVcpus: inst.vcpus, oldMemoryMib: inst.memory_mib };
    const row = createOperation(this.config, ctx.jobId, inst, change);
    ctx.log(`live resize of instance ${inst.name} on node ${node.name}: ${what} (operation ${row.id})`);
    const res = await runOperation(this.opDeps(), {
      op: row,
      node,
      log: ctx.log,
      send: () => this.rpc.instanceResize(node, { instance: inst.name, vcpus: op.vcpus, memoryMib: op.memoryMib, operationId: row.id }),
      fromReply: () => ({ state: 'succeeded', settledBy: 'request' }),
    });
    if (res.settle.op.state === 'failed') {
      const now = this.config.getInstance(inst.name);
      const unchanged = now.vcpus === inst.vcpus && now.memory_mib === inst.memory_mib;
      throw new JobError(
        `live resize (${what}) failed: ${res.settle.op.error}; ` +
          (unchanged ? 'the configuration is unchanged' : `the node changed part of it: the configuration now has ${now.vcpus} vCPUs and ${now.memory_mib} MiB, as the node`),
        res.settle.op.error_code,
      );
    }
    const r = res.reply ?? res.record?.resize ?? undefined;
    const plugged = r && Number(r.pluggedMib) >= 0 ? `, virtio-mem plugged ${r.pluggedMib} MiB` : '';
    const m = `${what}: done live${r ? ` (now ${r.vcpus} vCPUs, ${r.memoryMib} MiB${plugged})` : ''}${res.reply ? '' : ' (outcome confirmed by the node)'}`;
    ctx.log(m);
    r?.notes.forEach((n) => ctx.log(`note: ${n}`));
    done.push(m);
  }

  /** A change made in the configuration only (it applies at the next start). */
  private commit(inst: InstanceConfig, c: OpChange): void {
    switch (c.kind) {
      case 'resources':
        return this.config.setResources(inst.name, c.vcpus, c.memoryMib);
      case 'nic':
        if (c.action === 'add') return this.config.appendNic(inst.uuid, c.uuid, c.mac, c.link);
        if (c.action === 'modify') return this.config.modifyNic(c.uuid, c.mac, c.link);
        return this.config.removeDevice('nics', c.uuid);
      case 'disk':
        if (c.action === 'add') return this.config.appendDisk(inst.uuid, c.uuid, c.sizeBytes);
        return this.config.removeDevice('disks', c.uuid);
    }
  }
}

type DeviceChange = Exclude<OpChange, { kind: 'resources' }>;

/** One planned device change of a modify job: its log label and the change. */
interface Step {
  what: string;
  change: DeviceChange;
}

/** The HotplugDevice request of a device change, carrying its operation id. */
function hotplugRequest(instance: string, c: DeviceChange, operationId: string): HotplugDeviceRequest {
  const action = c.action === 'add' ? 'ADD' : c.action === 'modify' ? 'MODIFY' : 'REMOVE';
  if (c.kind === 'nic')
    return { instance, deviceType: 'NIC', action, operationId, nic: { uuid: c.uuid, mac: c.action === 'remove' ? '' : c.mac, link: c.action === 'remove' ? '' : c.link, pci: -1 } };
  return { instance, deviceType: 'DISK', action, operationId, disk: { uuid: c.uuid, sizeBytes: c.action === 'add' ? c.sizeBytes : 0, path: '', pci: -1 } };
}

/**
 * Fault-injection point for tests (test/integration/master-crash.test.ts):
 * with GNT_MASTERD_CRASH_POINT=after-node-hotplug the master kills itself
 * right after the node confirmed HotplugDevice and before the operation is
 * settled, the window the convergence loop (convergence.ts) repairs after
 * the restart. Does nothing unless the variable is set.
 */
function crashPoint(ctx: JobContext): void {
  if (process.env.GNT_MASTERD_CRASH_POINT !== 'after-node-hotplug') return;
  ctx.log(`fault injection: GNT_MASTERD_CRASH_POINT=after-node-hotplug, killing the master before the configuration commit`);
  process.kill(process.pid, 'SIGKILL');
}
