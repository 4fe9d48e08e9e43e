/**
 * The migration and failover RPCs of gnt-noded (proto/node.proto): export a
 * runtime file, receive one (as a paused migration target or for a failover
 * boot), start, follow, finish and abort a migration, and release an instance
 * that now runs elsewhere. The hypervisor layer does the QEMU work; this
 * module adds what only the node knows: its storage directory (disks on
 * storage the nodes share, or copies it creates there for a migration
 * between nodes that do not share storage), its free memory, its migration
 * address, its TLS material, and the registry of instances.
 */
import * as fs from 'node:fs';
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
import type { TlsMaterial } from '../hypervisor/migration-tls';
import { disksToCopy } from '../hypervisor/disk-mirror';
import type { DiskCopySize__Output } from '../generated/gnt/node/v1/DiskCopySize';
import { certCoversHost } from './migration-cert';

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
  /** The node's current certificate, key and CA bundle (after renew-crypto: the new ones), for TLS migration. */
  tls: () => TlsMaterial;
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
      if (req.copyDisks && !req.incoming) throw invalidArgument('copy_disks needs incoming (a failover cannot copy disks)');
      const tls = req.migrationTls ? this.tlsFor(carried.instance) : undefined;
      this.checkMemory(carried);
      const copyFiles = req.copyDisks ? this.prepareCopies(carried, req.diskSizes) : undefined;
      try {
        this.checkDisks(carried);
        const how = { incoming: req.incoming, peer: req.sourceNode || 'unknown', listenHost: this.opts.migrationHost, ...(tls ? { tls } : {}), ...(copyFiles ? { copyFiles } : {}) };
        const { instance, uri, nbd } = await KvmInstance.receive(registry.dataDir, this.opts.security.forCarried(carried), how, registry.options);
        registry.add(instance);
        registry.resetConsole(instance.name);
        this.opts.log(`received instance ${instance.name} from node ${how.peer}${uri ? `, waiting for the migration stream on ${uri}${tls ? ' (TLS)' : ''}` : ', booted (failover)'}` +
          `${nbd ? `, disks exported for the copy on ${nbd}` : ''}`);
        return { reply: { migrationUri: uri ?? '', nbdAddress: nbd ?? '', tlsHostname: tls ? this.opts.migrationHost : '' }, instance };
      } catch (err) {
        if (copyFiles) this.removeCopies(carried.instance, copyFiles);
        throw err;
      }
    });
  }

  /** The node's TLS material, refused when its certificate does not name the migration address (the source checks it). */
  private tlsFor(instance: string): TlsMaterial {
    const tls = this.opts.tls();
    if (!certCoversHost(tls.cert, this.opts.migrationHost))
      throw failedPrecondition(
        `node ${this.opts.nodeName}'s certificate does not name its migration address ${this.opts.migrationHost}, which the source checks for a TLS migration of ${instance}: ` +
          'reissue the node certificate with that address (gnt-cluster renew-crypto), or set --migration-address to a name it carries',
      );
    return tls;
  }

  /**
   * Copy migration: points every file disk of the carried runtime file at a
   * new empty file of the same size in this node's storage directory
   * (`<storage dir>/<instance>/<uuid>.img`) and creates them. Returns the files.
   */
  private prepareCopies(data: RuntimeData, sizes: DiskCopySize__Output[]): string[] {
    const { storage } = this.opts;
    if ((data.pmem_devices ?? []).length)
      throw failedPrecondition(`instance ${data.instance} has pmem devices, which a migration between nodes that do not share storage cannot copy yet: use nodes with shared storage, or remove them`);
    const copies = disksToCopy(data);
    const byUuid = new Map(sizes.map((s) => [s.uuid, Number(s.sizeBytes)]));
    const created: Array<{ path: string; sizeBytes: number }> = [];
    for (const d of copies) {
      const size = byUuid.get(d.uuid);
      if (!size) throw invalidArgument(`InstanceReceive with copy_disks names no size for disk ${d.uuid} of ${data.instance}`);
      created.push({ path: storage.defaultDiskPath(data.instance, d.uuid), sizeBytes: size });
    }
    const exists = created.find((c) => fs.existsSync(c.path));
    if (exists)
      throw failedPrecondition(`${exists.path} exists already on node ${this.opts.nodeName}; if it is left from an interrupted migration, remove it (the node never overwrites a disk)`);
    storage.createDisks(data.instance, created);
    const pathOf = new Map(copies.map((d, i) => [d.uuid, created[i].path]));
    for (const d of [...data.block_devices, ...(data.scsi_disks ?? [])]) {
      const p = pathOf.get(d.uuid);
      if (p) Object.assign(d, { path: p, created: true });
    }
    return created.map((c) => c.path);
  }

  /** Deletes disk copies this node made for an incoming migration, and the instance's storage directory if it is empty then. */
  private removeCopies(instance: string, files: string[]): void {
    this.opts.storage.removeFiles(files.filter((f) => fs.existsSync(f)));
    removeDirIfEmpty(this.opts.storage.instanceDir(instance));
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
      // An adopted block device is shared storage: the target must see it at the same path (checkCarried's HostPathPolicy check: the --block-device allow-list).
      if ('template' in disk && disk.template === 'blockdev') continue;
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
    if (req.migrationTls && !req.tlsHostname) throw invalidArgument('MigrationStart with migration_tls needs tls_hostname');
    const copy = req.diskCopy ? { nbd: req.diskCopy.nbdAddress, disksOnly: req.diskCopy.disksOnly } : undefined;
    if (copy && !/^.+:\d{1,5}$/.test(copy.nbd)) throw invalidArgument(`disk_copy.nbd_address "${copy.nbd}" is not HOST:PORT`);
    const tls = req.migrationTls ? { material: this.opts.tls(), hostname: req.tlsHostname } : undefined;
    await inst.migrateTo(req.targetUri, req.targetNode, { maxBandwidthMiB, downtimeLimitMs }, { ...(tls ? { tls } : {}), ...(copy ? { copy } : {}) });
    const what = copy?.disksOnly ? `disk copy to node ${req.targetNode} (NBD ${copy.nbd})` : `migration to node ${req.targetNode} at ${req.targetUri}`;
    this.opts.log(`instance ${inst.name}: ${what} started${tls ? ' (TLS)' : ''}`);
    return this.status(inst.name);
  }

  /** Source, after the stream completed: ends the disk copy consistently. */
  async endDiskCopy(name: string): Promise<MigrationStatus> {
    const inst = this.opts.registry.get(name);
    await inst.endDiskCopy();
    this.opts.log(`instance ${name}: disk copy ended, the target's disks are consistent`);
    return this.status(name);
  }

  async status(name: string): Promise<MigrationStatus> {
    const inst = this.opts.registry.find(name);
    if (!inst) return { instance: name, known: false, downtimeMs: '-1', diskCopies: [], diskCopy: false, diskCopyReady: false, diskCopyEnded: false };
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
      diskCopy: v.diskCopy,
      diskCopyEnded: v.diskCopyEnded,
      diskCopyReady: !!v.mirrors?.length && v.mirrors.every((m) => m.ready && !m.error),
      diskCopies: (v.mirrors ?? []).map((m) => ({
        uuid: inst.migration?.diskCopy?.disks.find((d) => d.node === m.node)?.uuid ?? m.node,
        status: m.status, copiedBytes: String(m.copiedBytes), totalBytes: String(m.totalBytes), error: m.error,
      })),
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
    const copies = inst.migration?.role === 'target' ? inst.migration.diskCopy?.files : undefined;
    const done = await inst.abortMigration();
    if (done === 'destroyed') this.opts.registry.delete(name);
    if (done === 'destroyed' && copies) this.removeCopies(name, copies);
    this.opts.log(`instance ${name}: migration aborted (${done === 'destroyed' ? 'incoming QEMU and runtime files removed' : done === 'resumed' ? 'migration cancelled, guest resumed' : 'nothing to undo'})`);
    return this.status(name);
  }

  async release(name: string): Promise<InstanceRemoveReply> {
    const inst = this.opts.registry.get(name);
    const m = inst.migration;
    // The disks were copied to the target and the copy ended consistently: this node's files are stale now.
    const copied = m?.role === 'source' && m.diskCopy?.ended ? m.diskCopy.disks.map((d) => d.path) : [];
    await inst.release();
    this.opts.registry.delete(name);
    if (copied.length) this.removeCopies(name, copied);
    this.opts.log(`instance ${name} released: it runs on another node now (QEMU stopped, runtime files removed, ${copied.length ? `${copied.length} copied disk files removed` : 'disks kept'})`);
    return {};
  }
}

function removeDirIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not empty or gone: keep */
  }
}
