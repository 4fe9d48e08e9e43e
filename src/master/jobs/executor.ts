/**
 * Runs one job's operation: checks it against the configuration, calls the
 * node, and commits the configuration only once the node has confirmed.
 * A failure leaves the configuration as it was before the failed step.
 */
import { describeNicParams } from '../nic-params';
import { ConfigError, ConfigStore, nicParams, type InstanceConfig } from '../config/config-store';
import { NodeRpc, NodeRpcError } from '../node-rpc';
import { formatSize } from '../validate';
import type { InstanceRuntime__Output } from '../../generated/gnt/node/v1/InstanceRuntime';
import type { JobRow } from './job-store';
import { JobError, type JobContext } from './queue';
import type { Op } from './ops';
import { instanceSpec, nodeTarget } from './spec';
import { runMigrate } from './migrate';
import { nodeAdd, nodeRemove, type MembershipDeps } from './node-membership';
import { CertStore } from '../config/cert-store';
import { openOperations, settleOperation, settleRemovalsAbsentFrom } from './operations';
import { runModify, type ModifyDeps } from './modify';
import { clusterModify } from './migrate-disk-copy';
import { runGrowDisk } from './grow-disk';
import type { MacSource } from './device-changes/change-kind';

type AddOp = Extract<Op, { type: 'instance-add' }>;

export { instanceSpec, nodeTarget } from './spec';
export { checkResizeLimits } from './device-changes/resources';

/** ", link down, rate 10 Mbit/s, 2 queues, e1000" for a node's NIC; "" for the defaults. */
function runtimeNicParams(n: InstanceRuntime__Output['nics'][number]): string {
  const d = describeNicParams(nicParams({ link_state: n.linkState, rate_mbit: n.rateMbit, queues: n.queues, model: n.model }));
  return d ? `, ${d}` : '';
}

function describeRuntime(rt: InstanceRuntime__Output): string[] {
  const lines = [`running: ${rt.running ? `yes, pid ${rt.pid}` : 'no'}`];
  rt.disks.forEach((d, i) => lines.push(`disk/${i} ${d.uuid}: PCI slot ${d.pci}, ${d.deviceId || '-'}${d.path ? `, ${d.path}` : ''}`));
  rt.nics.forEach((n, i) => lines.push(`nic/${i} ${n.uuid}: PCI slot ${n.pci}, ${n.deviceId || '-'}, ${n.mac}${n.tap ? `, tap ${n.tap}` : ''}${n.link ? `, bridge ${n.link}` : ''}${runtimeNicParams(n)}`));
  return lines;
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
          return await nodeAdd(this.membership(), op.name, op.address, ctx);
        case 'node-remove':
          return await nodeRemove(this.membership(), op.name, ctx);
        case 'cluster-renew-crypto':
          throw new JobError('renew-crypto jobs are run by the master daemon itself (jobs/renew-crypto.ts)', 'INTERNAL');
        case 'cluster-modify':
          return clusterModify(this.config, op.migrationTls, ctx);
        case 'instance-add':
          return await this.instanceAdd(op, ctx, macs);
        case 'instance-start':
          return await this.instanceStart(this.config.getInstance(op.name), ctx);
        case 'instance-stop':
          return await this.instanceStop(op.name, op.timeoutMs, ctx);
        case 'instance-remove':
          return await this.instanceRemove(op.name, ctx);
        case 'instance-modify':
          return await runModify(this.modifyDeps(macs), op, ctx);
        case 'instance-migrate':
          return await runMigrate({ config: this.config, rpc: this.rpc }, op, ctx);
        case 'instance-grow-disk':
          return await runGrowDisk(this.modifyDeps(macs), op, ctx);
      }
    } catch (err) {
      if (err instanceof ConfigError) throw new JobError(err.message, err.code);
      if (err instanceof NodeRpcError) throw new JobError(err.message, err.code);
      throw err;
    } finally {
      macs.forEach((m) => this.reservedMacs.delete(m));
    }
  }

  private membership(): MembershipDeps {
    return { config: this.config, certs: new CertStore(this.config.db), rpc: this.rpc };
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

  /** What the modify job (modify.ts) needs; its MACs are reserved in `macs`, released when the job ends. */
  private modifyDeps(macs: string[]): ModifyDeps {
    const source: MacSource = { reserve: (mac) => this.reserveMac(mac, macs), generate: () => this.generateMac(macs) };
    return { config: this.config, rpc: this.rpc, inflight: this.inflight, windowMs: this.options.outcomeWindowMs, macs: source };
  }

  private async instanceAdd(op: AddOp, ctx: JobContext, macs: string[]): Promise<void> {
    if (this.config.findInstance(op.name)) throw new ConfigError(`instance "${op.name}" already exists`, 'ALREADY_EXISTS');
    const node = this.config.getNode(op.node);
    const nics = op.nics.map((n) => ({ ...n, mac: n.mac ? this.reserveMac(n.mac, macs) : this.generateMac(macs) }));
    const inst = ctx.commit(() => this.config.addInstance({
      name: op.name, nodeUuid: node.uuid, vcpus: op.vcpus, maxvcpus: op.maxvcpus, memoryMib: op.memoryMib,
      maxmemMib: op.maxmemMib, kernel: op.kernel, initrd: op.initrd, kernelArgs: op.kernelArgs, hvparams: op.hvparams,
      nics, disks: op.disks,
    }));
    ctx.log(`instance ${inst.name} (${inst.uuid}) added to the configuration on node ${node.name}`);
    inst.nics.forEach((n) => ctx.log(`nic/${n.idx} ${n.uuid}: ${n.mac}${n.link ? ` on ${n.link}` : ''}${describeNicParams(n) ? ` (${describeNicParams(n)})` : ''}`));
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
    ctx.commit(() => this.config.setAdminState(inst.name, 'up'));
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
    ctx.commit(() => this.config.setAdminState(name, 'down'));
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

  /** Open operations of an instance being removed end with it (nothing left to commit them to). */
  private abandonOperations(inst: InstanceConfig, ctx: JobContext): void {
    for (const op of openOperations(this.config)) {
      if (op.instance_uuid !== inst.uuid) continue;
      settleOperation(this.config, op.id, { state: 'failed', settledBy: 'instance-remove', errorCode: 'ABORTED', error: `instance ${inst.name} was removed` });
      ctx.log(`operation ${op.id} of ${inst.name} closed: the instance is removed`);
    }
  }
}
