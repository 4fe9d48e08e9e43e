/**
 * The migration and failover RPCs of gnt-noded (proto/node.proto): export a
 * runtime file, receive one (as a paused migration target or for a failover
 * boot), start, follow, finish and abort a migration, and release an instance
 * that now runs elsewhere. The hypervisor layer does the QEMU work; this
 * module adds what only the node knows: its storage directory (disks must be
 * on storage the nodes share), its free memory, its migration address, and
 * the registry of instances.
 */
import { currentMemoryMiB } from '../hypervisor/resize';
import { rbdImageOf } from '../hypervisor/rbd-disk';
import type { DiskBacking } from '../hypervisor/disk-template';
import { KvmInstance } from '../hypervisor/kvm-instance';
import { parseMigrationUri } from '../hypervisor/migration';
import { parseRuntime, serializeRuntime, type RuntimeData } from '../hypervisor/runtime-file';
import type { InstanceExportReply } from '../generated/gnt/node/v1/InstanceExportReply';
import type { InstanceReceiveReply } from '../generated/gnt/node/v1/InstanceReceiveReply';
import type { InstanceReceiveRequest__Output } from '../generated/gnt/node/v1/InstanceReceiveRequest';
import type { InstanceRemoveReply } from '../generated/gnt/node/v1/InstanceRemoveReply';
import type { MigrationStartRequest__Output } from '../generated/gnt/node/v1/MigrationStartRequest';
import type { MigrationStatus } from '../generated/gnt/node/v1/MigrationStatus';
import type { InstanceRegistry, Logger } from './instance-registry';
import { int64 } from './spec';
import { failedPrecondition, invalidArgument, resourceExhausted } from './status';
import type { Storage } from './storage';
import type { QemuSecurity } from './qemu-user';

export interface MigrationServiceOptions {
  nodeName: string;
  registry: InstanceRegistry;
  storage: Storage;
  /** The address incoming QEMUs listen on: this node's own, never a wildcard. */
  migrationHost: string;
  /** MemAvailable of the host in MiB. */
  freeMemoryMiB: () => number;
  /** Who QEMU runs as here: a pool uid is this node's own choice (qemu-user.ts). */
  security: QemuSecurity;
  log: Logger;
}

/** Memory a node must still have free after taking the instance, for QEMU itself. */
const QEMU_OVERHEAD_MIB = 64;

export class MigrationService {
  constructor(private readonly opts: MigrationServiceOptions) {}

  export(name: string): InstanceExportReply {
    const inst = this.opts.registry.get(name);
    return { name: inst.name, runtimeJson: serializeRuntime(inst.runtime), running: inst.pid !== undefined };
  }

  async receive(req: InstanceReceiveRequest__Output): Promise<{ reply: InstanceReceiveReply; instance: KvmInstance }> {
    const carried = this.parseCarried(req.runtimeJson);
    const { registry } = this.opts;
    return registry.withName(carried.instance, async () => {
      if (registry.find(carried.instance))
        throw failedPrecondition(
          `node ${this.opts.nodeName} already has instance ${carried.instance}; if it is left from an interrupted migration, run gnt-instance migrate --cleanup ${carried.instance}`,
        );
      this.checkDisks(carried);
      this.checkMemory(carried);
      const how = { incoming: req.incoming, peer: req.sourceNode || 'unknown', listenHost: this.opts.migrationHost };
      const { instance, uri } = await KvmInstance.receive(registry.dataDir, this.opts.security.forCarried(carried), how, registry.options);
      registry.add(instance);
      registry.resetConsole(instance.name);
      this.opts.log(`received instance ${instance.name} from node ${how.peer}${uri ? `, waiting for the migration stream on ${uri}` : ', booted (failover)'}`);
      return { reply: { migrationUri: uri ?? '' }, instance };
    });
  }

  private parseCarried(json: string): RuntimeData {
    if (!json) throw invalidArgument('InstanceReceive needs runtime_json');
    let name = '';
    try {
      name = String((JSON.parse(json) as { instance?: unknown }).instance ?? '');
    } catch {
      /* parseRuntime names the problem */
    }
    const data = parseRuntime('(runtime file sent by the master)', json, name);
    if (!data.instance) throw invalidArgument('the runtime file sent names no instance');
    return data;
  }

  /** Disks must be on storage this node shares with the source: its storage directory. */
  private checkDisks(data: RuntimeData): void {
    const { storage } = this.opts;
    for (const disk of [...data.block_devices, ...(data.scsi_disks ?? []), ...(data.pmem_devices ?? [])]) {
      if (rbdImageOf(disk as DiskBacking)) continue; // on the Ceph cluster both nodes reach: no path, no copy (QEMU gets its secret at boot)
      if (!storage.owns(data.instance, disk.path))
        throw failedPrecondition(
          `disk ${disk.uuid} of ${data.instance} is at ${disk.path}, outside node ${this.opts.nodeName}'s storage directory ${storage.dir}/${data.instance}: migration and failover need the disks on storage both nodes share (the same --storage-dir)`,
        );
    }
  }

  private checkMemory(data: RuntimeData): void {
    const need = (data.resources ? currentMemoryMiB(data.resources) : 0) + QEMU_OVERHEAD_MIB;
    const free = this.opts.freeMemoryMiB();
    if (need > free)
      throw resourceExhausted(`node ${this.opts.nodeName} has ${free} MiB of memory available; instance ${data.instance} needs ${need} MiB (its memory plus QEMU's own)`);
  }

  async start(req: MigrationStartRequest__Output): Promise<MigrationStatus> {
    const inst = this.opts.registry.get(req.instance);
    parseMigrationUri(req.targetUri);
    if (!req.targetNode) throw invalidArgument('MigrationStart needs target_node');
    if (req.targetNode === this.opts.nodeName) throw invalidArgument(`node ${this.opts.nodeName} cannot migrate an instance to itself`);
    const maxBandwidthMiB = int64(req.maxBandwidthMib, 'max_bandwidth_mib');
    const downtimeLimitMs = int64(req.downtimeLimitMs, 'downtime_limit_ms');
    await inst.migrateTo(req.targetUri, req.targetNode, { maxBandwidthMiB, downtimeLimitMs });
    this.opts.log(`instance ${inst.name}: migration to node ${req.targetNode} at ${req.targetUri} started`);
    return this.status(inst.name);
  }

  async status(name: string): Promise<MigrationStatus> {
    const inst = this.opts.registry.find(name);
    if (!inst) return { instance: name, known: false, downtimeMs: '-1' };
    const v = await inst.migrationStatus();
    const p = v.progress;
    return {
      instance: name,
      known: true,
      role: v.role,
      peerNode: v.peer,
      qemuAlive: v.qemuAlive,
      runState: v.runState,
      state: p?.state ?? '',
      totalBytes: String(p?.totalBytes ?? 0),
      transferredBytes: String(p?.transferredBytes ?? 0),
      remainingBytes: String(p?.remainingBytes ?? 0),
      throughputBps: String(p?.throughputBps ?? 0),
      totalTimeMs: String(p?.totalTimeMs ?? 0),
      downtimeMs: String(p?.downtimeMs ?? -1),
      error: p?.error ?? '',
    };
  }

  async finish(name: string): Promise<KvmInstance> {
    const inst = this.opts.registry.get(name);
    await inst.finishIncoming();
    this.opts.log(`instance ${name}: migration finished, the guest runs on this node`);
    return inst;
  }

  async abort(name: string): Promise<MigrationStatus> {
    const inst = this.opts.registry.find(name);
    if (!inst) return this.status(name);
    const done = await inst.abortMigration();
    if (done === 'destroyed') this.opts.registry.delete(name);
    this.opts.log(`instance ${name}: migration aborted (${done === 'destroyed' ? 'incoming QEMU and runtime files removed' : done === 'resumed' ? 'migration cancelled, guest resumed' : 'nothing to undo'})`);
    return this.status(name);
  }

  async release(name: string): Promise<InstanceRemoveReply> {
    const inst = this.opts.registry.get(name);
    await inst.release();
    this.opts.registry.delete(name);
    this.opts.log(`instance ${name} released: it runs on another node now (QEMU stopped, runtime files removed, disks kept)`);
    return {};
  }
}
