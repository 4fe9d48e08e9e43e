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

export class Executor {
  /** MACs chosen by running jobs but not yet committed. */
  private readonly reservedMacs = new Set<string>();

  constructor(private readonly config: ConfigStore, private readonly rpc: NodeRpc) {}

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
    if (this.reservedMacs.has(mac) || this.config.macInUse(mac)) throw new ConfigError(`MAC address ${mac} is already used in the cluster`, 'ALREADY_EXISTS');
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
    ctx.log(`instance ${inst.name} started`);
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
    this.config.removeInstance(name);
    ctx.log(`instance ${name} removed from the configuration`);
  }

  private async instanceModify(op: ModifyOp, ctx: JobContext, macs: string[]): Promise<void> {
    const inst = this.config.getInstance(op.name);
    const node = nodeTarget(inst);
    const resize = op.vcpus > 0 || op.memoryMib > 0;
    if (resize) checkResizeLimits(inst, op.vcpus, op.memoryMib);

    // Plan every change against a copy first: any bad index or MAC fails
    // the job before anything is touched. Indices refer to the device list
    // as it is after the earlier changes of the same command (as in Ganeti).
    type Step =
      | { kind: 'nic-add'; uuid: string; mac: string; link: string }
      | { kind: 'nic-modify'; index: number; uuid: string; mac: string; link: string; old: { mac: string; link: string } }
      | { kind: 'nic-remove'; index: number; uuid: string }
      | { kind: 'disk-add'; uuid: string; sizeBytes: number }
      | { kind: 'disk-remove'; index: number; uuid: string };
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
        nics.push({ uuid, idx: nics.length, mac, link: c.link });
        steps.push({ kind: 'nic-add', uuid, mac, link: c.link });
      } else if (c.index >= nics.length) throw range('NIC', c.index, nics.length);
      else if (c.action === 'MODIFY') {
        const cur = nics[c.index];
        const mac = c.mac && c.mac !== cur.mac ? this.reserveMac(checkMac(c.mac), macs) : cur.mac;
        const link = c.link || cur.link;
        steps.push({ kind: 'nic-modify', index: c.index, uuid: cur.uuid, mac, link, old: { mac: cur.mac, link: cur.link } });
        nics[c.index] = { ...cur, mac, link };
      } else {
        steps.push({ kind: 'nic-remove', index: c.index, uuid: nics[c.index].uuid });
        nics.splice(c.index, 1);
      }
    }
    for (const c of op.disks) {
      if (c.action === 'ADD') {
        const uuid = randomUUID();
        disks.push({ uuid, idx: disks.length, size_bytes: c.sizeBytes });
        steps.push({ kind: 'disk-add', uuid, sizeBytes: c.sizeBytes });
      } else if (c.index >= disks.length) throw range('disk', c.index, disks.length);
      else {
        steps.push({ kind: 'disk-remove', index: c.index, uuid: disks[c.index].uuid });
        disks.splice(c.index, 1);
      }
    }

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
      const type = s.kind.startsWith('nic') ? 'NIC' : 'DISK';
      const what =
        s.kind === 'nic-add' ? `new NIC ${s.uuid} (${s.mac}${s.link ? ` on ${s.link}` : ''})`
        : s.kind === 'nic-modify' ? `NIC ${s.index} (${s.uuid}) to ${s.mac}${s.link ? ` on ${s.link}` : ''}`
        : s.kind === 'nic-remove' ? `NIC ${s.index} (${s.uuid})`
        : s.kind === 'disk-add' ? `new disk ${s.uuid} (${formatSize(s.sizeBytes)})`
        : `disk ${s.index} (${s.uuid})`;
      const verb = s.kind.endsWith('add') ? 'add' : s.kind.endsWith('modify') ? 'modify' : 'remove';
      if (await isLive(type)) {
        // Recorded before the node is called: start-up reconciliation
        // (jobs/reconcile.ts) repairs exactly these devices after a crash.
        ctx.recordHotplug(s.uuid, verb);
        ctx.log(`hot-${verb} of ${what} on node ${node.name}`);
        let reply;
        try {
          reply = await this.rpc.hotplugDevice(node, {
            instance: inst.name,
            deviceType: type,
            action: verb === 'add' ? 'ADD' : verb === 'modify' ? 'MODIFY' : 'REMOVE',
            ...(type === 'NIC'
              ? { nic: { uuid: s.uuid, mac: 'mac' in s ? s.mac : '', link: 'link' in s ? s.link : '', pci: -1 } }
              : { disk: { uuid: s.uuid, sizeBytes: 'sizeBytes' in s ? s.sizeBytes : 0, path: '', pci: -1 } }),
          });
        } catch (err) {
          const e = err as Error & { code?: string };
          const detail = e instanceof NodeRpcError ? e.message : `${e.message}`;
          throw new JobError(
            `hot-${verb} of ${what} failed: ${detail}; the configuration of this change is unchanged` +
              (done.length ? ` (already done: ${done.join('; ')})` : ''),
            e.code ?? '',
          );
        }
        // Fault-injection point for tests (test/integration/master-crash.test.ts):
        // with GNT_MASTERD_CRASH_POINT=after-node-hotplug the master kills
        // itself right after the node confirmed HotplugDevice and before the
        // configuration commit, the window start-up reconciliation
        // (jobs/reconcile.ts) repairs. Does nothing unless the variable is set.
        if (process.env.GNT_MASTERD_CRASH_POINT === 'after-node-hotplug') {
          ctx.log(`fault injection: GNT_MASTERD_CRASH_POINT=after-node-hotplug, killing the master before the configuration commit`);
          process.kill(process.pid, 'SIGKILL');
        }
        this.commit(inst, s);
        const m = `${what}: hot-${verb === 'add' ? 'added' : verb === 'modify' ? 'modified' : 'removed'} at PCI slot ${reply.pci}${reply.deviceId ? ` (${reply.deviceId})` : ''}`;
        ctx.log(m);
        done.push(m);
      } else {
        this.commit(inst, s);
        const m = `${what}: ${verb === 'add' ? 'added to' : verb === 'modify' ? 'modified in' : 'removed from'} the configuration`;
        ctx.log(`${m}; it applies at the next start of ${inst.name}`);
        done.push(m);
        pending.push(what);
      }
    }
    if (pending.length) ctx.log(`${pending.length} change(s) apply at the next start of instance ${inst.name}`);
  }

  /**
   * -B vcpus/memory: one InstanceResize call for both when live, then the
   * configuration commit; config only otherwise (applied at the next start).
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
    if (live) {
      ctx.log(`live resize of instance ${inst.name} on node ${node.name}: ${what}`);
      let reply;
      try {
        reply = await this.rpc.instanceResize(node, { instance: inst.name, vcpus: op.vcpus, memoryMib: op.memoryMib });
      } catch (err) {
        const e = err as Error & { code?: string };
        throw new JobError(`live resize (${what}) failed: ${e.message}; the configuration is unchanged`, e.code ?? '');
      }
      this.config.setResources(inst.name, vcpus, memoryMib);
      const plugged = Number(reply.pluggedMib) >= 0 ? `, virtio-mem plugged ${reply.pluggedMib} MiB` : '';
      const m = `${what}: done live (now ${reply.vcpus} vCPUs, ${reply.memoryMib} MiB${plugged})`;
      ctx.log(m);
      reply.notes.forEach((n) => ctx.log(`note: ${n}`));
      done.push(m);
    } else {
      this.config.setResources(inst.name, vcpus, memoryMib);
      ctx.log(`${what}: changed in the configuration; it applies at the next start of ${inst.name}`);
      done.push(`${what} in the configuration`);
      pending.push(what);
    }
  }

  private commit(
    inst: InstanceConfig,
    s: { kind: string; uuid: string; mac?: string; link?: string; sizeBytes?: number },
  ): void {
    switch (s.kind) {
      case 'nic-add':
        return this.config.appendNic(inst.uuid, s.uuid, s.mac!, s.link ?? '');
      case 'nic-modify':
        return this.config.modifyNic(s.uuid, s.mac!, s.link ?? '');
      case 'nic-remove':
        return this.config.removeDevice('nics', s.uuid);
      case 'disk-add':
        return this.config.appendDisk(inst.uuid, s.uuid, s.sizeBytes!);
      case 'disk-remove':
        return this.config.removeDevice('disks', s.uuid);
    }
  }
}
