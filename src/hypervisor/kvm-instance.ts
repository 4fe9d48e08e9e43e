/**
 * One instance on this node: its runtime file, its QEMU process and its
 * monitor, and the hotplug operations that keep the three in step.
 *
 * Every change of a device goes: validate (nothing touched yet) -> record the
 * intent in the runtime file (state "attaching"/"detaching") -> QMP steps ->
 * record the result. A kill -9 at any point leaves a runtime file that
 * `reconcile()` can settle against what QEMU really has.
 *
 * Operations on one instance run one at a time, in call order.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { attachDimm, type DimmRecord } from './memory';
import { attachDisk, detachDisk, diskBootArgs, diskId, diskKind, openDisk, releaseDisk } from './disk';
import { DeviceExistsError, DeviceNotFoundError, InstanceStateError, InvalidArgumentError, errorMessage } from './errors';
import { instancePaths, type InstancePaths } from './instance-paths';
import { attachNic, detachNic, nicBootArgs, nicId, normalizeMac, prepareNicTap, releaseNic } from './nic';
import { crossCheckPci, fromQueryPci, parseInfoPci, type QueryPciBus } from './pci-info';
import { DEFAULT_RESERVED_SLOTS, PciSlotMap } from './pci-slots';
import { devicePresent, isDeletionOf, listDeviceIds } from './qdev';
import { DEFAULT_QEMU, qemuFeatures } from './qemu-binary';
import { assertFixedCommand, buildFixedCommand, memoryOption, nodeLocalArgs, securityArgs, withOption, type InstanceSpec } from './qemu-command';
import {
  applyResize,
  foldPending,
  initialResources,
  resourceBootArgs,
  tcgCpuThreadsLeft,
  validateResize,
  type NodeCapacity,
  type ResizeRequest,
  type ResizeResult,
  type ResourceState,
} from './resize';
import {
  cancelMigration,
  isActive,
  waitIncomingLoaded,
  listenIncoming,
  readMigration,
  resumeGuest,
  runState,
  sendMigration,
  type MigrationMark,
  type MigrationParams,
  type MigrationProgress,
} from './migration';
import { runningPid, spawnQemu, waitForExit } from './qemu-process';
import { QmpClient, type Monitor, type QmpEvent } from './qmp-client';
import {
  loadRuntimeFile,
  saveRuntimeFile,
  type DiskRecord,
  type HvParams,
  type NicRecord,
  type RuntimeData,
} from './runtime-file';
import { assertBridge, waitTapsGone } from './tap';

export interface KvmInstanceOptions {
  qemuBinary?: string;
  /** How long to wait for the guest to eject a device. */
  unplugTimeoutMs?: number;
  /** Wraps the monitor (tests use it to inject faults a real QEMU cannot produce on demand). */
  wrapMonitor?: (mon: QmpClient) => Monitor;
}

export interface NicRequest {
  uuid: string;
  mac: string;
  link?: string;
  /** A specific PCI slot; by default the first free one. */
  slot?: number;
}

export interface DiskRequest {
  uuid: string;
  path: string;
  slot?: number;
}

/**
 * Work a caller needs done inside an operation, in the instance's queue, once
 * the cheap checks have passed (e.g. creating a disk file). It may return an
 * undo, which runs if the operation fails before it changes anything.
 */
export type PrepareStep = () => (() => void) | void;

export interface ReconcileReport {
  completed: string[];
  rolledBack: string[];
}

/** This node's view of a migration of the instance (MigrationStatus). */
export interface MigrationView {
  role: MigrationMark['role'] | '';
  peer: string;
  qemuAlive: boolean;
  runState: string;
  progress?: MigrationProgress;
}

/** How a runtime file carried from another node is started here. */
export interface ReceiveOptions {
  /** true: paused, waiting for the migration stream; false: boot (failover). */
  incoming: boolean;
  /** The node the instance comes from. */
  peer: string;
  /** The address the incoming QEMU listens on (this node's own). */
  listenHost: string;
}

type Kind = 'nic' | 'disk';
type AnyRecord = NicRecord | DiskRecord;

const DEFAULT_UNPLUG_TIMEOUT_MS = 15_000;

const hvString = (hv: HvParams, key: string): string | undefined => (typeof hv[key] === 'string' ? (hv[key] as string) : undefined);

export class KvmInstance extends EventEmitter {
  readonly name: string;
  readonly paths: InstancePaths;
  private data: RuntimeData;
  private client: QmpClient | undefined;
  private mon: Monitor | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly options: KvmInstanceOptions;

  private constructor(name: string, paths: InstancePaths, data: RuntimeData, options: KvmInstanceOptions) {
    super();
    this.name = name;
    this.paths = paths;
    this.data = data;
    this.options = options;
  }

  /** Creates the runtime file of a new instance, placing its devices on free slots. */
  static create(
    dataDir: string,
    spec: InstanceSpec,
    devices: { nics?: NicRequest[]; disks?: DiskRequest[]; hvparams?: HvParams } = {},
    options: KvmInstanceOptions = {},
  ): KvmInstance {
    const paths = instancePaths(dataDir, spec.name);
    if (fs.existsSync(paths.runtimeFile)) throw new DeviceExistsError(spec.name, `a runtime file at ${paths.runtimeFile}`);
    const data: RuntimeData = {
      version: 2,
      instance: spec.name,
      kvm_cmd: buildFixedCommand(spec),
      nics: [],
      hvparams: { ...(devices.hvparams ?? {}) },
      block_devices: [],
    };
    const slots = new PciSlotMap(spec.name, DEFAULT_RESERVED_SLOTS);
    const uuids = new Set<string>();
    const place = (uuid: string, slot: number | undefined, what: string): number => {
      if (!uuid) throw new InvalidArgumentError(`${what} has no uuid`);
      if (uuids.has(uuid)) throw new InvalidArgumentError(`uuid ${uuid} is given to two devices`);
      uuids.add(uuid);
      const s = slot === undefined ? slots.firstFree() : slots.claim(slot);
      slots.addRecorded(s, `${what} ${uuid}`);
      return s;
    };
    for (const d of devices.disks ?? []) {
      diskKind(d.path);
      const disk: DiskRecord = { uuid: d.uuid, path: d.path, pci: place(d.uuid, d.slot, 'disk') };
      diskId(disk, disk.pci as number);
      data.block_devices.push(disk);
    }
    for (const n of devices.nics ?? []) {
      const nic: NicRecord = { uuid: n.uuid, mac: normalizeMac(n.mac), pci: place(n.uuid, n.slot, 'NIC') };
      if (n.link) nic.link = n.link;
      nicId(nic, nic.pci as number);
      data.nics.push(nic);
    }
    data.resources = initialResources(spec, hvString(data.hvparams, 'memory_hotplug'), () => {
      const slot = slots.firstFree();
      slots.addRecorded(slot, 'virtio-mem');
      return slot;
    });
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    saveRuntimeFile(paths.runtimeFile, data);
    return new KvmInstance(spec.name, paths, data, options);
  }

  /** Opens an instance from its runtime file. */
  static open(dataDir: string, name: string, options: KvmInstanceOptions = {}): KvmInstance {
    const paths = instancePaths(dataDir, name);
    return new KvmInstance(name, paths, loadRuntimeFile(paths.runtimeFile, name), options);
  }

  /** A deep copy of the runtime data as it is on disk. */
  get runtime(): RuntimeData {
    return JSON.parse(JSON.stringify(this.data)) as RuntimeData;
  }

  get pid(): number | undefined {
    return runningPid(this.paths);
  }

  private get qemuBinary(): string {
    return this.options.qemuBinary ?? DEFAULT_QEMU;
  }

  private get unplugTimeoutMs(): number {
    return this.options.unplugTimeoutMs ?? DEFAULT_UNPLUG_TIMEOUT_MS;
  }

  private get nicOptions(): { noRom: boolean } {
    return { noRom: typeof this.data.hvparams.chroot === 'string' && this.data.hvparams.chroot !== '' };
  }

  private save(): void {
    saveRuntimeFile(this.paths.runtimeFile, this.data);
  }

  /** Runs `fn` after every earlier operation on this instance has finished. */
  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `fn` in this instance's queue: after every earlier operation, before
   * every later one. `fn` must not call the queued public methods of this
   * instance (it would wait for itself). Used for work that must not overlap
   * with the instance's operations, such as deleting it.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.serialize(fn);
  }

  // ---- process ----------------------------------------------------------

  start(): Promise<number> {
    return this.serialize(() => {
      this.assertNoMigration();
      return this.startNow();
    });
  }

  /**
   * Rewrites the runtime file of a stopped instance from a new spec and
   * starts it, as one operation. `kvm_cmd` and hvparams are rebuilt from the
   * spec; a device whose uuid is already recorded keeps its PCI slot, a new
   * one gets the first free slot, and a recorded device the spec lacks is
   * dropped. Everything is validated before the file is touched.
   */
  reconfigureAndStart(
    spec: InstanceSpec,
    devices: { nics?: NicRequest[]; disks?: DiskRequest[]; hvparams?: HvParams } = {},
    prepare?: PrepareStep,
  ): Promise<number> {
    return this.serialize(async () => {
      this.assertNoMigration();
      const pid = this.pid;
      if (pid !== undefined) throw new InstanceStateError(`instance ${this.name} is already running (pid ${pid}); stop it before changing its spec`);
      const undo = prepare?.();
      try {
        this.reconfigureNow(spec, devices);
      } catch (err) {
        undo?.();
        throw err;
      }
      return this.startNow();
    });
  }

  private reconfigureNow(
    spec: InstanceSpec,
    devices: { nics?: NicRequest[]; disks?: DiskRequest[]; hvparams?: HvParams },
  ): void {
    if (spec.name !== this.name) throw new InvalidArgumentError(`spec names instance ${spec.name}, not ${this.name}`);
    const kvmCmd = buildFixedCommand(spec);
    const oldSlot = (kind: Kind, uuid: string): number | null => {
      const rec = this.find(kind, uuid);
      return rec && rec.uuid ? rec.pci : null;
    };
    const slots = new PciSlotMap(this.name, DEFAULT_RESERVED_SLOTS);
    const uuids = new Set<string>();
    const wanted: Array<[Kind, NicRequest | DiskRequest]> = [
      ...(devices.disks ?? []).map((d): [Kind, DiskRequest] => ['disk', d]),
      ...(devices.nics ?? []).map((n): [Kind, NicRequest] => ['nic', n]),
    ];
    for (const [kind, d] of wanted) {
      if (!d.uuid) throw new InvalidArgumentError(`a ${kind} of ${this.name} has no uuid`);
      if (uuids.has(d.uuid)) throw new InvalidArgumentError(`uuid ${d.uuid} is given to two devices`);
      uuids.add(d.uuid);
    }
    // Kept devices first, so that a new device can never take a kept one's slot.
    const chosen = new Map<string, number>();
    for (const [kind, d] of wanted) {
      const keep = d.slot ?? oldSlot(kind, d.uuid);
      if (keep === null) continue;
      chosen.set(d.uuid, slots.claim(keep));
      slots.addRecorded(keep, `${kind} ${d.uuid}`);
    }
    for (const [kind, d] of wanted) {
      if (chosen.has(d.uuid)) continue;
      const s = slots.firstFree();
      chosen.set(d.uuid, s);
      slots.addRecorded(s, `${kind} ${d.uuid}`);
    }
    const disks: DiskRecord[] = (devices.disks ?? []).map((d) => {
      diskKind(d.path);
      const disk: DiskRecord = { uuid: d.uuid, path: d.path, pci: chosen.get(d.uuid) as number };
      diskId(disk, disk.pci as number);
      return disk;
    });
    const nics: NicRecord[] = (devices.nics ?? []).map((n) => {
      const nic: NicRecord = { uuid: n.uuid, mac: normalizeMac(n.mac), pci: chosen.get(n.uuid) as number };
      if (n.link) nic.link = n.link;
      nicId(nic, nic.pci as number);
      return nic;
    });
    const hvparams = { ...(devices.hvparams ?? {}) };
    const oldVmemSlot = this.data.resources?.virtioMem?.pci;
    const resources = initialResources(spec, hvString(hvparams, 'memory_hotplug'), () => {
      const slot = oldVmemSlot !== undefined && !slots.holderOf(oldVmemSlot) ? oldVmemSlot : slots.firstFree();
      slots.addRecorded(slot, 'virtio-mem');
      return slot;
    });
    this.data = {
      version: 2,
      instance: this.name,
      kvm_cmd: kvmCmd,
      nics,
      hvparams,
      block_devices: disks,
      resources,
    };
    this.save();
  }

  stop(timeoutMs = 10_000): Promise<void> {
    return this.serialize(() => {
      this.assertNoMigration();
      return this.stopNow(timeoutMs);
    });
  }

  /**
   * `incoming`: the layout must be exactly the running source's, so nothing
   * is dropped, completed or folded (receive() has checked there is nothing
   * to drop or complete), and QEMU waits paused for the migration stream.
   */
  private async startNow(incoming = false): Promise<number> {
    if (this.pid !== undefined) throw new InstanceStateError(`instance ${this.name} is already running (pid ${this.pid})`);
    if (!incoming) {
      this.dropPendingDevices();
      this.completeLegacyDevices();
      this.foldPendingResources();
    }
    const qemu = qemuFeatures(this.qemuBinary);
    const args = [...this.data.kvm_cmd, ...nodeLocalArgs(this.paths), ...securityArgs(this.data.hvparams, qemu)];
    // DIMMs are plugged by QMP before the guest runs (see resourceBootArgs), so QEMU starts paused then.
    const dimms = this.data.resources?.dimms ?? [];
    if (incoming || dimms.length) args.push('-S');
    if (incoming) args.push('-incoming', 'defer');
    const fds: number[] = [];
    try {
      this.data.block_devices.forEach((disk, i) => {
        fds.push(openDisk(disk.path));
        args.push(...diskBootArgs(disk, disk.pci as number, 2 + fds.length, i + 1));
      });
      for (const nic of this.data.nics) {
        const tap = await prepareNicTap(nic);
        fds.push(tap.fd);
        nic.tap = tap.name;
        args.push(...nicBootArgs(nic, nic.pci as number, 2 + fds.length, this.nicOptions));
      }
      if (this.data.resources) args.push(...resourceBootArgs(this.data.resources));
      const pid = await spawnQemu(this.qemuBinary, args, fds, this.paths);
      const r = this.data.resources;
      if (r) r.cpuThreads = { pid, created: r.bootVcpus + r.cpus.length };
      this.save();
      if (dimms.length) await this.plugBootDimms(pid, dimms, !incoming);
      return pid;
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
  }

  /** Plugs the recorded DIMMs into a QEMU started with -S, then lets the guest run unless it waits for a migration. */
  private async plugBootDimms(pid: number, dimms: DimmRecord[], run: boolean): Promise<void> {
    try {
      const mon = await this.monitor();
      for (const dimm of dimms) await attachDimm(mon, dimm);
      if (run) await mon.execute('cont');
    } catch (err) {
      await this.killNow(pid);
      throw new InstanceStateError(`instance ${this.name}: plugging its DIMMs at start failed, QEMU was stopped again: ${errorMessage(err)}`);
    }
  }

  private async stopNow(timeoutMs: number): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) {
      this.disconnect();
      return;
    }
    try {
      const mon = await this.monitor();
      await mon.execute('quit').catch(() => undefined);
    } catch {
      /* monitor gone: the pid is handled below */
    }
    this.disconnect();
    await waitForExit(this.paths, pid, timeoutMs);
    for (const f of [this.paths.qmpSocket, this.paths.pidFile]) fs.rmSync(f, { force: true });
  }

  /** A shrink that could not happen live (ACPI memory, vCPUs below the boot count) happens now. */
  private foldPendingResources(): void {
    const r = this.data.resources;
    if (!r || !foldPending(r)) return;
    let cmd = withOption(this.data.kvm_cmd, '-m', memoryOption(r.bootMemoryMiB, r.maxMemoryMiB));
    cmd = withOption(cmd, '-smp', `${r.bootVcpus},maxcpus=${r.maxVcpus}`);
    this.data.kvm_cmd = cmd;
    this.save();
  }

  /** Devices whose hotplug was never confirmed, or whose removal was asked, do not come back at boot. */
  private dropPendingDevices(): void {
    const before = this.data.nics.length + this.data.block_devices.length;
    this.data.nics = this.data.nics.filter((n) => !n.state);
    this.data.block_devices = this.data.block_devices.filter((d) => !d.state);
    if (this.data.nics.length + this.data.block_devices.length !== before) this.save();
  }

  /**
   * Devices from old (Ganeti) runtime files may lack a slot or a uuid: give
   * them both at start, as Ganeti assigns slots then, so that they get
   * device ids and can be hot-removed from now on.
   */
  private completeLegacyDevices(): void {
    const all: AnyRecord[] = [...this.data.block_devices, ...this.data.nics];
    if (all.every((d) => d.pci !== null && d.uuid)) return;
    const map = new PciSlotMap(this.name);
    for (const d of all) if (d.pci !== null) map.addRecorded(d.pci, d.uuid || 'a device');
    for (const d of all) {
      if (!d.uuid) d.uuid = randomUUID();
      if (d.pci !== null) continue;
      d.pci = map.firstFree();
      map.addRecorded(d.pci, d.uuid);
    }
    this.save();
  }

  // ---- monitor ----------------------------------------------------------

  /** The monitor, connected on first use and again after QEMU restarts. */
  async monitor(): Promise<Monitor> {
    if (this.client && !this.client.closed && this.mon) return this.mon;
    const client = await QmpClient.connect(this.paths.qmpSocket);
    client.on('event', (e: QmpEvent) => this.onEvent(e));
    this.client = client;
    this.mon = this.options.wrapMonitor ? this.options.wrapMonitor(client) : client;
    return this.mon;
  }

  disconnect(): void {
    this.client?.close();
    this.client = undefined;
    this.mon = undefined;
  }

  /** A guest may eject a device on its own, or finish a timed-out unplug late. */
  private onEvent(e: QmpEvent): void {
    if (e.event !== 'DEVICE_DELETED') return;
    for (const [kind, rec] of this.devices()) {
      if (rec.pci === null || !rec.uuid || !isDeletionOf(this.idOf(kind, rec), e)) continue;
      void this.serialize(async () => {
        if (this.find(kind, rec.uuid) !== rec) return; // an API remove already finished it
        const mon = await this.monitor();
        // Events can arrive late (QEMU sends them at finalize): trust QEMU's
        // lists, not the event (after a NIC modify, the same id already names
        // the new device).
        if (await devicePresent(mon, this.idOf(kind, rec))) return;
        await this.finishRemoval(kind, rec, mon);
        this.emit('device-removed', { kind, uuid: rec.uuid });
      }).catch((err) => this.emit('warning', `late removal of ${kind} ${rec.uuid}: ${errorMessage(err)}`));
    }
  }

  private devices(): Array<[Kind, AnyRecord]> {
    return [
      ...this.data.nics.map((n): [Kind, AnyRecord] => ['nic', n]),
      ...this.data.block_devices.map((d): [Kind, AnyRecord] => ['disk', d]),
    ];
  }

  private idOf(kind: Kind, rec: AnyRecord): string {
    return kind === 'nic' ? nicId(rec as NicRecord, rec.pci as number) : diskId(rec as DiskRecord, rec.pci as number);
  }

  private find(kind: Kind, uuid: string): AnyRecord | undefined {
    const list: AnyRecord[] = kind === 'nic' ? this.data.nics : this.data.block_devices;
    return list.find((d) => d.uuid === uuid);
  }

  private forget(kind: Kind, uuid: string): void {
    if (kind === 'nic') this.data.nics = this.data.nics.filter((n) => n.uuid !== uuid);
    else this.data.block_devices = this.data.block_devices.filter((d) => d.uuid !== uuid);
  }

  // ---- PCI slots --------------------------------------------------------

  /** The PCI slot map as QEMU shows it now (info pci, cross-checked with query-pci) plus the runtime file. */
  async slotMap(mon: Monitor): Promise<PciSlotMap> {
    const [text, query] = await Promise.all([mon.hmp('info pci'), mon.execute<QueryPciBus[]>('query-pci')]);
    const live = parseInfoPci(text);
    const structured = fromQueryPci(query);
    const problems = crossCheckPci(live, structured);
    if (problems.length) this.emit('warning', `info pci and query-pci disagree: ${problems.join('; ')}`);
    const map = new PciSlotMap(this.name).addLive(live).addLive(structured);
    for (const [kind, rec] of this.devices()) {
      if (rec.pci !== null) map.addRecorded(rec.pci, rec.uuid ? this.idOf(kind, rec) : `a ${kind} from an old runtime file`);
    }
    const vmem = this.data.resources?.virtioMem;
    if (vmem) map.addRecorded(vmem.pci, `the virtio-mem device ${vmem.id}`);
    return map;
  }

  private async chooseSlot(mon: Monitor, requested: number | undefined): Promise<number> {
    const map = await this.slotMap(mon);
    return requested === undefined ? map.firstFree() : map.claim(requested);
  }

  private assertNewUuid(uuid: string): void {
    if (!uuid) throw new InvalidArgumentError('a device needs a uuid');
    if (this.find('nic', uuid) || this.find('disk', uuid))
      throw new DeviceExistsError(this.name, `a device with uuid ${uuid}`);
  }

  private requireRunning(): void {
    this.assertNoMigration();
    if (this.pid === undefined) throw new InstanceStateError(`instance ${this.name} is not running; start it or change it without hotplug`);
  }

  /** The migration this node takes part in, if any (a copy). */
  get migration(): MigrationMark | undefined {
    return this.data.migration ? { ...this.data.migration } : undefined;
  }

  /** Hotplug and resize are refused while a migration runs: the device would be missing on the other side. */
  private assertNoMigration(): void {
    const m = this.data.migration;
    if (!m) return;
    const how = m.role === 'source' ? `to node ${m.peer}` : `from node ${m.peer}`;
    throw new InstanceStateError(
      `instance ${this.name}: migration ${how} in progress (since ${m.since}); hotplug is refused until it has finished or was aborted (after an interruption: gnt-instance migrate --cleanup ${this.name})`,
    );
  }

  // ---- hotplug ----------------------------------------------------------

  hotAddNic(req: NicRequest): Promise<NicRecord> {
    return this.serialize(() => this.addNicNow(req));
  }

  /** Resolves with the record the NIC had. */
  hotRemoveNic(uuid: string): Promise<NicRecord> {
    return this.serialize(() => this.removeNow('nic', uuid) as Promise<NicRecord>);
  }

  /** A new MAC or link: remove the NIC and add it again at the same slot. */
  hotModifyNic(uuid: string, change: { mac?: string; link?: string }): Promise<NicRecord> {
    return this.serialize(async () => {
      const old = this.find('nic', uuid) as NicRecord | undefined;
      if (!old) throw new DeviceNotFoundError(this.name, `NIC with uuid ${uuid}`);
      const next: NicRequest = { uuid, mac: change.mac ?? old.mac, link: change.link ?? old.link, slot: old.pci ?? undefined };
      normalizeMac(next.mac);
      if (next.link) assertBridge(next.link);
      await this.removeNow('nic', uuid);
      try {
        return await this.addNicNow(next);
      } catch (err) {
        const restore = await this.addNicNow({ uuid, mac: old.mac, link: old.link, slot: next.slot }).then(
          () => 'the old NIC was put back',
          (e) => `putting the old NIC back failed too: ${errorMessage(e)}`,
        );
        throw new InstanceStateError(`modify of NIC ${uuid} on ${this.name}: ${errorMessage(err)}; ${restore}`);
      }
    });
  }

  /** `prepare` runs in the queue once the instance is known to run and the uuid to be new (e.g. to create the file). */
  hotAddDisk(req: DiskRequest, prepare?: PrepareStep): Promise<DiskRecord> {
    return this.serialize(() => this.addDiskNow(req, prepare));
  }

  /** Resolves with the record the disk had. */
  hotRemoveDisk(uuid: string): Promise<DiskRecord> {
    return this.serialize(() => this.removeNow('disk', uuid) as Promise<DiskRecord>);
  }

  private async addNicNow(req: NicRequest): Promise<NicRecord> {
    const mac = normalizeMac(req.mac);
    if (req.link) assertBridge(req.link);
    this.assertNewUuid(req.uuid);
    this.requireRunning();
    const mon = await this.monitor();
    const slot = await this.chooseSlot(mon, req.slot);
    const nic: NicRecord = { uuid: req.uuid, mac, pci: slot, state: 'attaching' };
    if (req.link) nic.link = req.link;
    nicId(nic, slot);
    return this.attachRecorded('nic', nic, async () => {
      nic.tap = await attachNic(mon, nic, slot, this.nicOptions);
    });
  }

  private async addDiskNow(req: DiskRequest, prepare?: PrepareStep): Promise<DiskRecord> {
    if (!prepare) diskKind(req.path);
    this.assertNewUuid(req.uuid);
    this.requireRunning();
    const undo = prepare?.();
    try {
      if (prepare) diskKind(req.path);
      const mon = await this.monitor();
      const slot = await this.chooseSlot(mon, req.slot);
      const disk: DiskRecord = { uuid: req.uuid, path: req.path, pci: slot, state: 'attaching' };
      diskId(disk, slot);
      return await this.attachRecorded('disk', disk, () => attachDisk(mon, disk, slot));
    } catch (err) {
      undo?.();
      throw err;
    }
  }

  /** Records the intent, attaches, records the result; on failure the file is as before. */
  private async attachRecorded<T extends AnyRecord>(kind: Kind, rec: T, attach: () => Promise<void>): Promise<T> {
    const list: AnyRecord[] = kind === 'nic' ? this.data.nics : this.data.block_devices;
    list.push(rec);
    this.save();
    try {
      await attach();
    } catch (err) {
      this.forget(kind, rec.uuid);
      this.save();
      throw err;
    }
    delete rec.state;
    this.save();
    return { ...rec };
  }

  private async removeNow(kind: Kind, uuid: string): Promise<AnyRecord> {
    const rec = this.find(kind, uuid);
    const what = kind === 'nic' ? 'NIC' : 'disk';
    if (!rec) throw new DeviceNotFoundError(this.name, `${what} with uuid ${uuid}`);
    const removed: AnyRecord = { ...rec };
    delete removed.state;
    if (rec.pci === null)
      throw new InstanceStateError(`${what} ${uuid} of ${this.name} has no PCI slot recorded (old runtime file); remove it without hotplug, or restart the instance once to give it a slot`);
    this.requireRunning();
    const mon = await this.monitor();
    const wasPending = rec.state;
    rec.state = 'detaching';
    this.save();
    try {
      if (kind === 'nic') await detachNic(mon, rec as NicRecord, rec.pci, this.unplugTimeoutMs);
      else await detachDisk(mon, rec as DiskRecord, rec.pci, this.unplugTimeoutMs);
    } catch (err) {
      if (err instanceof Error && 'code' in err && err.code === 'DEADLINE_EXCEEDED') {
        throw new InstanceStateError(
          `the guest of ${this.name} did not release ${what} ${uuid} in time; it stays marked as detaching and is removed when the guest lets go or at the next start`,
        );
      }
      if (wasPending) rec.state = wasPending;
      else delete rec.state;
      this.save();
      throw err;
    }
    await this.finishRemoval(kind, rec, mon);
    return removed;
  }

  /** The one path that ends a removal: backend released, record dropped. */
  private async finishRemoval(kind: Kind, rec: AnyRecord, mon: Monitor): Promise<void> {
    if (kind === 'nic') await releaseNic(mon, rec as NicRecord, rec.pci as number);
    else await releaseDisk(mon, rec as DiskRecord, rec.pci as number);
    this.forget(kind, rec.uuid);
    this.save();
  }

  // ---- vCPUs and memory ---------------------------------------------------

  /** The vCPU/memory record (a copy), undefined for runtime files from before it existed. */
  get resources(): ResourceState | undefined {
    return this.data.resources ? (JSON.parse(JSON.stringify(this.data.resources)) as ResourceState) : undefined;
  }

  /**
   * Live vCPU and/or memory change, validated whole (limits, ACPI steps, what
   * the node can still give) before anything changes; each device that lands
   * is recorded in the runtime file, so a restart or a migration target
   * reproduces it.
   */
  resize(req: ResizeRequest, node: NodeCapacity): Promise<ResizeResult> {
    return this.serialize(async () => {
      const r = this.data.resources;
      if (!r)
        throw new InstanceStateError(`instance ${this.name} has no vCPU/memory record (runtime file of an older version); restart it once first`);
      const pid = this.pid;
      const tcg = this.data.kvm_cmd[this.data.kvm_cmd.indexOf('-accel') + 1] === 'tcg';
      validateResize(this.name, r, req, node, tcg && pid !== undefined ? tcgCpuThreadsLeft(r, pid) : Infinity);
      this.requireRunning();
      const mon = await this.monitor();
      return applyResize(
        {
          instance: this.name,
          mon,
          qemuVersion: this.client?.qemuVersion,
          cpuUnplugged: pid !== undefined && r.cpuUnpluggedPid === pid,
          pid,
          unplugTimeoutMs: this.unplugTimeoutMs,
          save: (state) => {
            this.data.resources = state;
            this.save();
          },
        },
        r,
        req,
      );
    });
  }

  /**
   * Settles devices left half-done by a crash: an unconfirmed attach that QEMU
   * has is kept, one it lacks is cleaned up; a removal is carried to its end.
   */
  reconcile(): Promise<ReconcileReport> {
    return this.serialize(async () => {
      const report: ReconcileReport = { completed: [], rolledBack: [] };
      const pending = this.devices().filter(([, rec]) => rec.state && rec.pci !== null);
      if (!pending.length) return report;
      const mon = await this.monitor();
      const present = await listDeviceIds(mon);
      for (const [kind, rec] of pending) {
        const id = this.idOf(kind, rec);
        if (rec.state === 'attaching' && present.has(id)) {
          delete rec.state;
          this.save();
          report.completed.push(id);
          continue;
        }
        if (rec.state === 'detaching' && present.has(id)) {
          if (kind === 'nic') await detachNic(mon, rec as NicRecord, rec.pci as number, this.unplugTimeoutMs);
          else await detachDisk(mon, rec as DiskRecord, rec.pci as number, this.unplugTimeoutMs);
        }
        (rec.state === 'attaching' ? report.rolledBack : report.completed).push(id);
        await this.finishRemoval(kind, rec, mon);
      }
      return report;
    });
  }

  // ---- migration --------------------------------------------------------

  /**
   * Target side: writes a runtime file carried from another node and starts
   * QEMU from it, every device at its recorded slot (new taps on the same
   * bridges, every disk opened here). Everything is checked before anything
   * is created; if the start fails, the instance directory and QEMU go
   * again, and the taps with QEMU's fds. Returns the instance and, when
   * incoming, the URI the source must send the stream to.
   */
  static async receive(
    dataDir: string,
    carried: RuntimeData,
    how: ReceiveOptions,
    options: KvmInstanceOptions = {},
  ): Promise<{ instance: KvmInstance; uri?: string }> {
    const paths = instancePaths(dataDir, carried.instance);
    if (fs.existsSync(paths.runtimeFile)) throw new DeviceExistsError(carried.instance, `a runtime file on this node (${paths.runtimeFile})`);
    const data = KvmInstance.checkCarried(carried);
    if (how.incoming) data.migration = { role: 'target', peer: how.peer, since: new Date().toISOString() };
    else delete data.migration;
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const inst = new KvmInstance(data.instance, paths, data, options);
    try {
      inst.save();
      await inst.startNow(how.incoming);
      if (!how.incoming) return { instance: inst };
      const uri = await listenIncoming(await inst.monitor(), how.listenHost);
      inst.data.migration = { ...inst.data.migration!, uri };
      inst.save();
      return { instance: inst, uri };
    } catch (err) {
      await inst.destroyNow().catch(() => undefined);
      throw err;
    }
  }

  /** A carried runtime file, checked whole: a command we make, settled devices with slots, bridges and disks present here. */
  private static checkCarried(carried: RuntimeData): RuntimeData {
    const data = JSON.parse(JSON.stringify(carried)) as RuntimeData;
    assertFixedCommand(data.kvm_cmd, data.instance);
    const all: Array<[string, AnyRecord]> = [
      ...data.nics.map((n): [string, AnyRecord] => ['NIC', n]),
      ...data.block_devices.map((d): [string, AnyRecord] => ['disk', d]),
    ];
    for (const [what, rec] of all) {
      if (rec.state) throw new InstanceStateError(`${what} ${rec.uuid} of ${data.instance} is ${rec.state}: settle it on the source first`);
      if (rec.pci === null || !rec.uuid) throw new InstanceStateError(`a ${what} of ${data.instance} has no PCI slot or uuid (old runtime file): restart the instance once on its node first`);
    }
    for (const nic of data.nics) {
      normalizeMac(nic.mac);
      if (nic.link) assertBridge(nic.link);
      delete nic.tap;
    }
    for (const disk of data.block_devices) diskKind(disk.path);
    return data;
  }

  /** SIGKILL to a QEMU whose state is not worth keeping (a half-started or incoming one), and wait for it to go. */
  private async killNow(pid: number): Promise<void> {
    this.disconnect();
    process.kill(pid, 'SIGKILL');
    await waitForExit(this.paths, pid, 5000);
  }

  /** Kills this node's QEMU of the instance (if any) and deletes its directory. Disks are not touched. */
  private async destroyNow(): Promise<void> {
    const pid = this.pid;
    if (pid !== undefined) await this.killNow(pid);
    else this.disconnect();
    fs.rmSync(this.paths.dir, { recursive: true, force: true });
    await waitTapsGone(this.data.nics.map((n) => n.tap).filter((t): t is string => !!t));
  }

  /**
   * Source side: marks the instance as migrating to `peer` (hotplug refused
   * from now on, also after a restart of this process) and starts the
   * stream. Returns at once; follow it with migrationStatus().
   */
  migrateTo(uri: string, peer: string, params: MigrationParams = {}): Promise<MigrationProgress> {
    return this.serialize(async () => {
      this.assertNoMigration();
      if (this.pid === undefined) throw new InstanceStateError(`instance ${this.name} is not running; a stopped instance is moved with failover`);
      const pending = this.devices().find(([, rec]) => rec.state || rec.pci === null);
      if (pending) throw new InstanceStateError(`${pending[0]} ${pending[1].uuid} of ${this.name} is ${pending[1].state ?? 'without a PCI slot'}: settle it first (it would differ on the target)`);
      const mon = await this.monitor();
      this.data.migration = { role: 'source', peer, uri, since: new Date().toISOString() };
      this.save();
      try {
        await sendMigration(mon, uri, params);
      } catch (err) {
        delete this.data.migration;
        this.save();
        throw err;
      }
      return readMigration(mon);
    });
  }

  /** Read-only and outside the queue: answers while other operations wait. */
  async migrationStatus(): Promise<MigrationView> {
    const m = this.data.migration;
    const view: MigrationView = { role: m?.role ?? '', peer: m?.peer ?? '', qemuAlive: false, runState: '' };
    if (this.pid === undefined) return view;
    const mon = await this.monitor();
    const [state, progress] = await Promise.all([runState(mon), readMigration(mon)]);
    return { ...view, qemuAlive: true, runState: state, progress };
  }

  /** Target side, once the stream is complete: the guest runs here from now on. Idempotent. */
  finishIncoming(): Promise<void> {
    return this.serialize(async () => {
      const m = this.data.migration;
      if (this.pid === undefined) throw new InstanceStateError(`instance ${this.name} has no QEMU on this node to resume`);
      const mon = await this.monitor();
      if (m?.role === 'source') throw new InstanceStateError(`instance ${this.name} is the source of its migration here, not the target`);
      if (m?.role === 'target') await waitIncomingLoaded(mon, this.name);
      await resumeGuest(mon);
      delete this.data.migration;
      this.save();
    });
  }

  /**
   * Undoes this node's part of a migration. Target: QEMU killed, directory
   * deleted; resolves 'destroyed'. Source: migration cancelled if still
   * running, guest resumed, mark cleared; resolves 'resumed'. Refuses a
   * target whose guest already runs (it was finished).
   */
  abortMigration(): Promise<'destroyed' | 'resumed' | 'nothing'> {
    return this.serialize(async () => {
      const m = this.data.migration;
      if (m?.role === 'target') {
        if (this.pid !== undefined && (await runState(await this.monitor())) === 'running')
          throw new InstanceStateError(`instance ${this.name} already runs here (its migration was finished); release the other copy instead`);
        await this.destroyNow();
        return 'destroyed';
      }
      if (m?.role !== 'source') return 'nothing';
      if (this.pid !== undefined) {
        const mon = await this.monitor();
        await cancelMigration(mon);
        await resumeGuest(mon);
      }
      delete this.data.migration;
      this.save();
      return 'resumed';
    });
  }

  /**
   * The instance runs on another node now: stops QEMU here and deletes the
   * instance directory (disks are shared and kept). Refused while the guest
   * runs here, so a released copy can never be the only one.
   */
  release(timeoutMs = 10_000): Promise<void> {
    return this.serialize(async () => {
      const pid = this.pid;
      if (pid !== undefined) {
        const mon = await this.monitor();
        const [state, p] = await Promise.all([runState(mon), readMigration(mon)]);
        if (state === 'running' || isActive(p.state))
          throw new InstanceStateError(`refusing to release instance ${this.name}: its guest ${state === 'running' ? 'runs' : 'is being migrated'} on this node (run state ${state}, migration ${p.state})`);
      }
      await this.stopNow(timeoutMs);
      fs.rmSync(this.paths.dir, { recursive: true, force: true });
    });
  }
}
