/**
 * The NodeDaemon RPC handlers (proto/node.proto) on top of src/hypervisor.
 * Each handler validates its input before touching anything, runs the
 * instance's work through the instance's single KvmInstance object, and maps
 * errors to gRPC status codes (status.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { KvmInstance } from '../hypervisor/kvm-instance';
import { assertOperationId } from '../hypervisor/operations';
import { removeInstanceDir } from '../hypervisor/runtime-store';
import type { OperationRef__Output } from '../generated/gnt/node/v1/OperationRef';
import type { OperationLogRequest__Output } from '../generated/gnt/node/v1/OperationLogRequest';
import { operationLog, operationStatus } from './operations-service';
import { crashPoint } from './fault-injection';
import { HOTPLUG_HANDLERS, hotplugKindOf } from './hotplug-handlers';
import { timedHotplug } from './metrics';
import { DEFAULT_QEMU, qemuFeatures } from '../hypervisor/qemu-binary';
import type { HotplugDeviceReply } from '../generated/gnt/node/v1/HotplugDeviceReply';
import type { HotplugDeviceRequest__Output } from '../generated/gnt/node/v1/HotplugDeviceRequest';
import type { HotplugSupportedReply } from '../generated/gnt/node/v1/HotplugSupportedReply';
import type { HotplugSupportedRequest__Output } from '../generated/gnt/node/v1/HotplugSupportedRequest';
import type { InstanceResizeReply } from '../generated/gnt/node/v1/InstanceResizeReply';
import type { InstanceResizeRequest__Output } from '../generated/gnt/node/v1/InstanceResizeRequest';
import type { InstanceListReply } from '../generated/gnt/node/v1/InstanceListReply';
import type { InstanceRef__Output } from '../generated/gnt/node/v1/InstanceRef';
import type { InstanceRemoveReply } from '../generated/gnt/node/v1/InstanceRemoveReply';
import type { InstanceRuntime } from '../generated/gnt/node/v1/InstanceRuntime';
import type { InstanceStartRequest__Output } from '../generated/gnt/node/v1/InstanceStartRequest';
import type { InstanceStopRequest__Output } from '../generated/gnt/node/v1/InstanceStopRequest';
import type { NodeDaemonHandlers } from '../generated/gnt/node/v1/NodeDaemon';
import type { NodeInfoReply } from '../generated/gnt/node/v1/NodeInfoReply';
import type { InstanceExportReply } from '../generated/gnt/node/v1/InstanceExportReply';
import type { InstanceReceiveReply } from '../generated/gnt/node/v1/InstanceReceiveReply';
import type { InstanceReceiveRequest__Output } from '../generated/gnt/node/v1/InstanceReceiveRequest';
import type { MigrationStartRequest__Output } from '../generated/gnt/node/v1/MigrationStartRequest';
import type { InstanceRegistry, Logger } from './instance-registry';
import { MigrationService } from './migration-service';
import { verifyHandler } from './verify-service';
import { guestHandlers } from './guest-service';
import { assertPlanHostPaths, int64, planStart, runtimeToProto, type StartPlan } from './spec';
import { failedPrecondition, invalidArgument, notFound, statusName, toStatus } from './status';
import type { Storage } from './storage';
import type { VcpuPolicy } from './vcpu-policy';
import type { QemuSecurity } from './qemu-user';
import type { RbdImage } from '../hypervisor/disk-template';
import { createdImages, ensureImages, removeImages, type RbdPool } from './rbd-pool';
import type { TlsMaterial } from '../hypervisor/migration-tls';
import { ensureStorageId } from './storage-id';
import { AuditLog } from './audit-log';
import { auditCall, auditLogReply } from './audit-service';
import type { AuditLogRequest__Output } from '../generated/gnt/node/v1/AuditLogRequest';

export interface NodeServiceOptions {
  nodeName: string;
  /** gnt-noded --wait-guest-default (reported in NodeInfo). */
  waitGuestDefault?: boolean;
  registry: InstanceRegistry;
  storage: Storage;
  qemuBinary?: string;
  /** The address incoming migrations listen on (this node's own). */
  migrationHost: string;
  /** The vCPU overcommit rule, for InstanceStart and InstanceResize alike (--cpu-overcommit-ratio). */
  vcpus: VcpuPolicy;
  /** Who QEMU runs as (qemu-user.ts): settles the security hvparams of every start and receive. */
  security: QemuSecurity;
  /** The node's Ceph RBD pool (--rbd-*), if configured. */
  rbdPool?: RbdPool;
  /** The node's current TLS material (LiveTls), for TLS migration. */
  tls: () => TlsMaterial;
  log: Logger;
  /** Where audit.log is written (the node's state dir; docs/audit.md). Unset: no audit trail. */
  auditDir?: string;
}

const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/** MemTotal and MemAvailable from /proc/meminfo, in MiB. */
function hostMemoryMiB(): { total: number; free: number } {
  const text = fs.readFileSync('/proc/meminfo', 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { total: Math.floor(kib('MemTotal') / 1024), free: Math.floor(kib('MemAvailable') / 1024) };
}

export class NodeService {
  private readonly registry: InstanceRegistry;
  private readonly storage: Storage;
  private readonly migration: MigrationService;
  /** The storage directory's id (storage-id.ts): equal ids, shared storage. */
  private readonly storageId: string;
  private readonly audit?: AuditLog;

  constructor(private readonly opts: NodeServiceOptions) {
    this.registry = opts.registry;
    this.storage = opts.storage;
    this.storageId = ensureStorageId(opts.storage.dir);
    if (opts.auditDir) this.audit = new AuditLog(opts.auditDir);
    this.migration = new MigrationService({
      nodeName: opts.nodeName,
      registry: opts.registry,
      storage: opts.storage,
      migrationHost: opts.migrationHost,
      security: opts.security,
      tls: opts.tls,
      freeMemoryMiB: () => hostMemoryMiB().free,
      log: opts.log,
    });
  }

  /** The handler table for grpc.Server.addService. */
  handlers(): NodeDaemonHandlers {
    return {
      NodeRenewCertificate: (_call, callback) => callback({ code: 12, details: 'NodeRenewCertificate is served by cert-service.ts (wired in server.ts)' }, null),
      NodeInfo: this.unary('NodeInfo', () => '', async () => this.nodeInfo()),
      InstanceList: this.unary('InstanceList', () => '', async (): Promise<InstanceListReply> => ({
        instances: this.registry.all().map((i) => this.runtimeOf(i)),
      })),
      InstanceInfo: this.unary('InstanceInfo', (r: InstanceRef__Output) => r.name, async (r) => this.runtimeOf(this.registry.get(r.name))),
      InstanceStart: this.unary('InstanceStart', (r: InstanceStartRequest__Output) => r.spec?.name ?? '', (r) => this.instanceStart(r)),
      InstanceStop: this.unary('InstanceStop', (r: InstanceStopRequest__Output) => r.name, (r) => this.instanceStop(r)),
      InstanceRemove: this.unary('InstanceRemove', (r: InstanceRef__Output) => r.name, (r) => this.instanceRemove(r)),
      HotplugSupported: this.unary('HotplugSupported', (r: HotplugSupportedRequest__Output) => r.instance, async (r) => this.hotplugSupported(r)),
      HotplugDevice: this.unary('HotplugDevice', (r: HotplugDeviceRequest__Output) => r.instance, (r) => this.hotplugDevice(r)),
      InstanceResize: this.unary('InstanceResize', (r: InstanceResizeRequest__Output) => r.instance, (r) => this.instanceResize(r)),
      OperationStatus: this.unary('OperationStatus', (r: OperationRef__Output) => r.instance, (r) => operationStatus(this.registry, r)),
      OperationLog: this.unary('OperationLog', () => '', async (r: OperationLogRequest__Output) => operationLog(this.registry, r)),
      ...this.migrationHandlers(),
      InstanceVerify: verifyHandler(this.opts, (method, instanceOf, fn) => this.unary(method, instanceOf, fn)),
      ...guestHandlers(this.registry, (method, instanceOf, fn) => this.unary(method, instanceOf, fn)),
      AuditLog: this.unary('AuditLog', (r: AuditLogRequest__Output) => r.instance, async (r) => auditLogReply(this.audit, r)),
    };
  }

  private migrationHandlers(): Pick<
    NodeDaemonHandlers,
    'InstanceExport' | 'InstanceReceive' | 'MigrationStart' | 'MigrationStatus' | 'MigrationFinish' | 'MigrationAbort' | 'InstanceRelease' | 'MigrationDiskCopyEnd'
  > {
    const byName = (r: InstanceRef__Output): string => r.name;
    const m = this.migration;
    return {
      InstanceExport: this.unary('InstanceExport', byName, async (r): Promise<InstanceExportReply> => m.export(r.name)),
      InstanceReceive: this.unary('InstanceReceive', (r: InstanceReceiveRequest__Output) => (r.incoming ? 'incoming' : 'boot'), async (r): Promise<InstanceReceiveReply> => {
        const { reply, instance } = await m.receive(r);
        return { ...reply, runtime: this.runtimeOf(instance) };
      }),
      MigrationStart: this.unary('MigrationStart', (r: MigrationStartRequest__Output) => r.instance, (r) => m.start(r)),
      MigrationStatus: this.unary('MigrationStatus', byName, (r) => m.status(r.name)),
      MigrationFinish: this.unary('MigrationFinish', byName, async (r) => this.runtimeOf(await m.finish(r.name))),
      MigrationAbort: this.unary('MigrationAbort', byName, (r) => m.abort(r.name)),
      InstanceRelease: this.unary('InstanceRelease', byName, (r) => m.release(r.name)),
      MigrationDiskCopyEnd: this.unary('MigrationDiskCopyEnd', byName, (r) => m.endDiskCopy(r.name)),
    };
  }

  /** Wraps a handler: one log line per call (method, instance, duration, status), errors as status codes. */
  private unary<Req, Res>(
    method: string,
    instanceOf: (req: Req) => string,
    fn: (req: Req) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const started = Date.now();
      const req = call.request;
      const what = `${method}${instanceOf(req) ? ` instance=${instanceOf(req)}` : ''}`;
      Promise.resolve()
        .then(() => fn(req))
        .then(
          (reply) => {
            this.opts.log(`${what} ${Date.now() - started}ms OK`);
            auditCall(this.audit, method, call, req, reply);
            callback(null, reply);
          },
          (err: unknown) => {
            const st = toStatus(err);
            this.opts.log(`${what} ${Date.now() - started}ms ${statusName(st.code)}: ${st.details}`);
            auditCall(this.audit, method, call, req, undefined, { name: statusName(st.code), message: st.details });
            callback({ code: st.code, details: st.details, name: statusName(st.code), message: st.details }, null);
          },
        );
    };
  }

  private runtimeOf(inst: KvmInstance): InstanceRuntime {
    const rt = runtimeToProto(inst.runtime, inst.pid, this.registry.guest(inst.name));
    const pool = this.opts.rbdPool;
    // An RBD disk has no host file to stat: its size is the image's, as the pool last saw it (rbd-pool.ts knownSize).
    if (pool) for (const d of rt.disks ?? []) if (d.template === 'rbd' && d.rbdPool && d.rbdImage) d.sizeBytes = String(pool.knownSize({ pool: d.rbdPool, image: d.rbdImage }));
    return rt;
  }

  private nodeInfo(): NodeInfoReply {
    const mem = hostMemoryMiB();
    const q = qemuFeatures(this.opts.qemuBinary ?? DEFAULT_QEMU);
    return {
      name: this.opts.nodeName,
      memoryTotalMib: String(mem.total),
      memoryFreeMib: String(mem.free),
      cpus: os.availableParallelism(),
      qemuVersion: `${q.version.major}.${q.version.minor}.${q.version.micro}`,
      storageDir: this.storage.dir,
      storageFreeBytes: String(this.storage.freeBytes()),
      rbdPool: this.opts.rbdPool?.pool ?? '',
      storageId: this.storageId,
      waitGuestDefault: this.opts.waitGuestDefault === true,
    };
  }

  // ---- lifecycle --------------------------------------------------------

  /**
   * A known instance: the whole start (space check, disk files, runtime file
   * update, QEMU) runs as one operation in the instance's queue. A new one:
   * created under the name lock, so that two starts cannot both create it.
   */
  private async instanceStart(req: InstanceStartRequest__Output): Promise<InstanceRuntime> {
    const spec = req.spec;
    if (!spec) throw invalidArgument('InstanceStart needs a spec');
    const name = spec.name;
    const plan = planStart(spec, this.storage, this.opts.rbdPool);
    assertPlanHostPaths(plan, this.storage.hostPaths);
    const madeImages = await ensureImages(this.opts.rbdPool, plan.newImages, this.imageLog(name));
    try {
      return await this.startPlanned(name, plan);
    } catch (err) {
      // Images made for this start alone: no runtime file keeps a disk on them unless the instance existed.
      if (!this.registry.find(name)) await removeImages(this.opts.rbdPool, madeImages, this.imageLog(name));
      throw err;
    }
  }

  /** How a failed image deletion is logged: the instance and the image named. */
  private imageLog(instance: string): (img: RbdImage, why: string) => void {
    return (img, why) => this.opts.log(`instance ${instance}: its RBD image ${img.pool}/${img.image} could not be deleted: ${why}`);
  }

  private async startPlanned(name: string, plan: StartPlan): Promise<InstanceRuntime> {
    const known = this.registry.find(name);
    // A running instance's vCPUs count already; its start is refused in its queue ("already running").
    if (known && known.pid !== undefined) return this.startKnown(known, plan.machine, { nics: plan.nics, disks: plan.disks, hvparams: plan.hvparams }, plan.newDisks);
    const devices = { nics: plan.nics, disks: plan.disks, hvparams: this.opts.security.forStart(name, plan.hvparams) };
    try {
      return await this.opts.vcpus.whileStarting(name, plan.machine.vcpus, () => this.startChecked(plan, devices));
    } finally {
      this.opts.security.release(name);
    }
  }

  /** instanceStart once the vCPU rule has admitted it. */
  private async startChecked(plan: StartPlan, devices: Pick<StartPlan, 'nics' | 'disks' | 'hvparams'>): Promise<InstanceRuntime> {
    const name = plan.machine.name;
    const known = this.registry.find(name);
    if (known) return this.startKnown(known, plan.machine, devices, plan.newDisks);
    return this.registry.withName(name, async () => {
      const again = this.registry.find(name);
      if (again) return this.startKnown(again, plan.machine, devices, plan.newDisks);
      const created = this.storage.createDisks(name, plan.newDisks);
      let inst: KvmInstance;
      try {
        inst = KvmInstance.create(this.registry.dataDir, plan.machine, devices, this.registry.options);
      } catch (err) {
        this.storage.removeFiles(created); // no runtime file refers to them
        throw err;
      }
      this.registry.add(inst);
      await inst.start();
      return this.runtimeOf(inst);
    });
  }

  private async startKnown(
    inst: KvmInstance,
    machine: StartPlan['machine'],
    devices: Pick<StartPlan, 'nics' | 'disks' | 'hvparams'>,
    newDisks: StartPlan['newDisks'],
  ): Promise<InstanceRuntime> {
    await inst.reconfigureAndStart(machine, devices, () => {
      if (this.registry.find(inst.name) !== inst)
        throw failedPrecondition(`instance ${inst.name} was removed while this start waited for it; send InstanceStart again`);
      this.registry.resetConsole(inst.name);
      const created = this.storage.createDisks(inst.name, newDisks);
      return () => this.storage.removeFiles(created);
    });
    return this.runtimeOf(inst);
  }

  private async instanceStop(req: InstanceStopRequest__Output): Promise<InstanceRuntime> {
    if (req.timeoutMs < 0) throw invalidArgument(`timeout_ms must not be negative, not ${req.timeoutMs}`);
    const inst = this.registry.get(req.name);
    await inst.stop(req.timeoutMs || DEFAULT_STOP_TIMEOUT_MS);
    return this.runtimeOf(inst);
  }

  /** Runs in the instance's queue, so it comes after every operation that arrived before it. */
  private async instanceRemove(req: InstanceRef__Output): Promise<InstanceRemoveReply> {
    const inst = this.registry.get(req.name);
    // Under the name lock too, so that a start creating the instance anew cannot interleave.
    return this.registry.withName(inst.name, () => inst.exclusive(async () => {
      if (this.registry.find(inst.name) !== inst) throw notFound(`instance ${inst.name} was removed already`);
      const pid = inst.pid;
      if (pid !== undefined) throw failedPrecondition(`instance ${inst.name} is running (pid ${pid}); stop it before removing it`);
      const images = createdImages(inst.runtime);
      this.registry.delete(inst.name);
      removeInstanceDir(inst.paths.dir, inst.paths.runtimeFile);
      this.storage.removeInstance(inst.name);
      await removeImages(this.opts.rbdPool, images, this.imageLog(inst.name));
      return {};
    }));
  }

  // ---- vCPUs and memory -------------------------------------------------

  /** Live resize; KvmInstance validates it whole against the node's free memory and the vCPU overcommit rule. */
  private async instanceResize(req: InstanceResizeRequest__Output): Promise<InstanceResizeReply> {
    if (req.vcpus < 0) throw invalidArgument(`vcpus must not be negative, not ${req.vcpus}`);
    const memoryMiB = int64(req.memoryMib, 'memory_mib');
    if (!req.vcpus && !memoryMiB) throw invalidArgument('nothing to resize: give vcpus and/or memory_mib');
    const inst = this.registry.get(req.instance);
    const want = { ...(req.vcpus ? { vcpus: req.vcpus } : {}), ...(memoryMiB ? { memoryMiB } : {}) };
    const r = await timedHotplug(req.vcpus ? 'vcpu' : 'memory', 'modify', () => this.opts.vcpus.whileResizing(inst.name, req.vcpus, hostMemoryMiB().free, (capacity) => inst.resize(want, capacity, { operationId: assertOperationId(req.operationId) })));
    return { vcpus: r.vcpus, memoryMib: String(r.memoryMiB), pluggedMib: String(r.pluggedMiB ?? -1), notes: r.notes };
  }

  // ---- hotplug ----------------------------------------------------------

  private hotplugSupported(req: HotplugSupportedRequest__Output): HotplugSupportedReply {
    if (req.deviceType !== 'NIC' && req.deviceType !== 'DISK')
      throw invalidArgument(`device_type must be NIC or DISK, not ${req.deviceType}`);
    const inst = this.registry.find(req.instance);
    if (!inst) return { supported: false, reason: `instance ${req.instance} does not exist on node ${this.opts.nodeName}` };
    if (inst.pid === undefined) return { supported: false, reason: `instance ${req.instance} is not running` };
    const mig = inst.migration;
    if (mig) return { supported: false, reason: `instance ${req.instance}: migration ${mig.role === 'source' ? 'to' : 'from'} node ${mig.peer} in progress` };
    return { supported: true, reason: '' };
  }

  private async hotplugDevice(req: HotplugDeviceRequest__Output): Promise<HotplugDeviceReply> {
    const inst = this.registry.get(req.instance);
    const opts = { operationId: assertOperationId(req.operationId) };
    const kind = hotplugKindOf(req);
    const reply = await timedHotplug(kind, req.action, () => HOTPLUG_HANDLERS[kind](inst, req, opts, { storage: this.storage, ...(this.opts.rbdPool ? { rbdPool: this.opts.rbdPool } : {}), log: this.opts.log }));
    crashPoint('after-hotplug-applied', this.opts.log);
    return reply;
  }
}
