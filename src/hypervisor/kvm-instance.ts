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
import { plugBootState } from './boot-plug';
import { deviceMemoryMiB } from './pmem';
import { allDevices, deviceKind, findDevice, idOf, isPlaced, DISK_KIND, PMEM_KIND, SCSI_DISK_KIND, type DeviceKind, type DeviceKindName, type PciDeviceRecord } from './device-kinds';
import { DeviceOperations, type DiskRequest, type HotAddPrepare, type NicModifyResult, type NicRequest, type PrepareStep, type RemovalResult } from './device-operations';
import type { NicChangeRequest } from './nic-modify';
import { checkDiskRequest, checkHostPaths, openBootFiles, rbdBootFor } from './boot-files';
import { HostPathPolicy } from './host-paths';
import { DeviceExistsError, InstanceStateError, InvalidArgumentError, OutcomeUnknownError, errorMessage, isOutcomeUnknown } from './errors';
import { OperationRunner, operationError } from './operation-runner';
import { emptyJournal, type OperationJournal, type OperationRecord } from './operations';
import { instancePaths, type InstancePaths } from './instance-paths';
import { nicBootArgs, prepareNicTap } from './nic';
import type { DiskChangeRequest, DiskModifyResult } from './disk-modify';
import { DiskModifier, diskGrowers, type DiskGrowerTable } from './disk-growers';
import { hasIoLimits } from './recorded-io-limits';
import type { PciPlacement, PciTreeMap } from './pci-slots';
import { machineFamily, machineOf, pciTopology } from './pci-topology';
import { agentChannelArgs } from './guest-agent-channel';
import { devicePresent, isDeletionOf } from './qdev';
import { DEFAULT_QEMU, qemuFeatures } from './qemu-binary';
import { memoryOption, nodeLocalArgs, securityArgs, withOption, type InstanceSpec } from './qemu-command';
import {
  applyResize,
  currentMemoryMiB,
  currentVcpus,
  foldPending,
  resourceBootArgs,
  tcgCpuThreadsLeft,
  validateResize,
  type NodeCapacity,
  type ResizeRequest,
  type ResizeResult,
  type ResourceState,
} from './resize';
import { type MigrationMark, type MigrationParams, type MigrationProgress } from './migration';
import { QemuPid, spawnQemu, waitForExit } from './qemu-process';
import { QmpClient, type Monitor, type QmpEvent } from './qmp-client';
import {
  RuntimeStore,
  removeInstanceDir,
  type DiskRecord,
  type HvParams,
  type NicRecord,
  type PmemRecord,
  type RuntimeData,
  type ScsiDiskRecord,
} from './runtime-file';
import { reconcileInstance, settleResizeOperations, type ReconcileReport } from './instance-reconcile';
import { MonitorLink } from './monitor-link';
import { InstanceMigration, checkCarried, openIncoming, type MigrationView, type ReceiveOptions, type SendOptions } from './instance-migration';
import { recordedTree, SlotOwner } from './slot-owner';
import { hasResourceIntents } from './resource-intents';
import { layoutRuntime } from './runtime-layout';
import { waitTapsGone } from './tap';
import type { RbdHost } from './rbd-disk';
import { unplugTimeoutFor, unplugTimeoutsFromHvparams, type UnplugKind, type UnplugTimeouts } from './unplug-timeouts';

export interface KvmInstanceOptions {
  qemuBinary?: string;
  /**
   * Which host files (disks, kernel, initrd) the instance may open
   * (host-paths.ts); gnt-noded always gives one. Without it every such path
   * is refused.
   */
  hostPaths?: HostPathPolicy;
  /** How long to wait for the guest to eject a device, for every kind (older option; unplugTimeouts wins). */
  unplugTimeoutMs?: number;
  /** How long to wait for the guest to eject a device, per kind (gnt-noded --unplug-timeout). */
  unplugTimeouts?: UnplugTimeouts;
  /** Wraps the monitor (tests use it to inject faults a real QEMU cannot produce on demand). */
  wrapMonitor?: (mon: QmpClient) => Monitor;
  /** Test hook: QEMU gets a second QMP socket (paths.testQmpSocket) a test can drive. */
  testMonitor?: boolean;
  /** How disk templates grow beyond file and blockdev (disk-growers.ts): the node's rbd entry. */
  diskGrowers?: Partial<DiskGrowerTable>;
  /** The node's Ceph RBD access (gnt-noded --rbd-*): without it an RBD disk is refused. */
  rbd?: RbdHost;
}

export type { DiskRequest, HotAddPrepare, NicModifyResult, NicRequest, PrepareStep, RemovalResult } from './device-operations';
export type { NicChangeRequest } from './nic-modify';
export type { DiskChangeRequest, DiskModifyResult } from './disk-modify';

/** What a hotplug request asks, with the master's operation id ('' for none). */
export interface OperationOptions {
  operationId?: string;
}

export type { ReconcileReport } from './instance-reconcile';

export type { MigrationView, ReceiveOptions, SendOptions } from './instance-migration';

const RECONCILE_RETRY_MS = 1000;

/** The kinds the master calls a disk. */
const DISK_KINDS = [DISK_KIND, SCSI_DISK_KIND, PMEM_KIND] as unknown as DeviceKind[];

export class KvmInstance extends EventEmitter {
  readonly name: string;
  readonly paths: InstancePaths;
  private data: RuntimeData;
  /** Writes the runtime file and its journal (runtime-store.ts). */
  private readonly store: RuntimeStore;
  /** Its QEMU's pid, verified once and then checked cheaply (qemu-process.ts). */
  private readonly qemuPid: QemuPid;
  private readonly link: MonitorLink;
  /** Its part in a live migration (instance-migration.ts). */
  private readonly migrationPart: InstanceMigration;
  /** The one owner of the instance's PCI slots (slot-owner.ts). */
  private readonly slots: SlotOwner;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly options: KvmInstanceOptions;
  /** Runs requests at most once per operation id (operation-runner.ts). */
  private readonly runner: OperationRunner;
  /** Add, remove, modify and settle of NICs and disks (device-operations.ts). */
  private readonly deviceOps: DeviceOperations;
  private readonly disks: DiskModifier;

  private constructor(name: string, paths: InstancePaths, data: RuntimeData, options: KvmInstanceOptions, store = RuntimeStore.fresh(paths.runtimeFile)) {
    super();
    this.name = name;
    this.paths = paths;
    this.data = data;
    this.store = store;
    this.qemuPid = new QemuPid(paths);
    this.options = options;
    this.slots = new SlotOwner(name, (m) => void this.emit('warning', m));
    this.migrationPart = new InstanceMigration({
      name,
      data: () => this.data,
      save: () => this.save(),
      monitor: () => this.monitor(),
      pid: () => this.pid,
      assertNoMigration: () => this.assertNoMigration(),
      stopNow: (ms) => this.stopNow(ms),
      destroyNow: () => this.destroyNow(),
      removeDir: () => removeInstanceDir(this.paths.dir, this.paths.runtimeFile),
    });
    this.link = new MonitorLink({ socketPath: paths.qmpSocket, wrap: options.wrapMonitor, onEvent: (e) => this.onEvent(e) });
    this.runner = new OperationRunner({
      name,
      journal: () => this.journal,
      save: () => this.save(),
      serialize: (fn) => this.serialize(fn),
    });
    this.deviceOps = new DeviceOperations({
      name,
      runner: this.runner,
      data: () => this.data,
      journal: () => this.journal,
      save: () => this.save(),
      monitor: () => this.monitor(),
      requireRunning: () => this.requireRunning(),
      unplugTimeout: (kind) => this.unplugTimeout(kind),
      attachContext: () => ({ nicOptions: this.nicOptions, hostPaths: this.hostPaths, hvparams: this.data.hvparams, ...(options.rbd ? { rbd: options.rbd } : {}) }),
      chooseSlot: (mon, requested) => this.chooseSlot(mon, requested),
      scheduleReconcile: () => this.scheduleReconcile(),
      slotsChanged: () => this.slots.invalidate(),
      warn: (message) => void this.emit('warning', message),
    });
    const growHost = { name, runner: this.runner, data: () => this.data, save: () => this.save(), running: () => this.pid !== undefined, monitor: () => this.monitor(), scheduleReconcile: () => this.scheduleReconcile() };
    this.disks = new DiskModifier(growHost, () => diskGrowers(this.hostPaths, options.diskGrowers));
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
    const data = layoutRuntime(spec, devices);
    checkHostPaths(options.hostPaths ?? HostPathPolicy.denyAll(), data, { boot: false });
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const inst = new KvmInstance(spec.name, paths, data, options);
    inst.store.save(data);
    return inst;
  }

  /** Opens an instance from its runtime file. */
  static open(dataDir: string, name: string, options: KvmInstanceOptions = {}): KvmInstance {
    const paths = instancePaths(dataDir, name);
    const { store, data } = RuntimeStore.open(paths.runtimeFile, name);
    return new KvmInstance(name, paths, data, options, store);
  }

  /** A deep copy of the runtime data as it is on disk. */
  get runtime(): RuntimeData {
    return JSON.parse(JSON.stringify(this.data)) as RuntimeData;
  }

  get pid(): number | undefined {
    return this.qemuPid.get();
  }

  /** The node's rules for host files (deny-all when none was given). */
  private get hostPaths(): HostPathPolicy {
    return this.options.hostPaths ?? HostPathPolicy.denyAll();
  }

  private get qemuBinary(): string {
    return this.options.qemuBinary ?? DEFAULT_QEMU;
  }

  /** How long the guest has to release a device of this kind (unplug-timeouts.ts). */
  unplugTimeout(kind: UnplugKind): number {
    const instance = unplugTimeoutsFromHvparams(this.data.hvparams, this.name);
    return unplugTimeoutFor(kind, instance, this.options.unplugTimeouts ?? {}, this.options.unplugTimeoutMs);
  }

  private get nicOptions(): { noRom: boolean } {
    return { noRom: typeof this.data.hvparams.chroot === 'string' && this.data.hvparams.chroot !== '' };
  }

  /**
   * Makes the in-memory state durable. Changes are made in memory and then
   * saved; if the save fails, memory goes back to what the files hold, so it
   * never stays ahead of the disk (the operation fails with the save's error).
   */
  private save(): void {
    this.store.saveOrRevert(this.data, this.name, (onDisk) => (this.data = onDisk));
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
    const next = layoutRuntime(spec, devices, this.data);
    checkHostPaths(this.hostPaths, next, { boot: false });
    const kept = new Set(allDevices(next).map(([, d]) => (d as { path?: string }).path).filter((p) => p !== undefined));
    const dropped = allDevices(this.data).filter(([, d]) => 'path' in d && !kept.has(d.path));
    this.data = next;
    this.save();
    for (const [kind, d] of dropped) void this.deviceOps.releaseHost(kind, d);
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
    // Refuses a kernel, initrd or disk outside the node's rules before anything changes.
    checkHostPaths(this.hostPaths, this.data, { boot: true });
    if (!incoming) {
      this.dropPendingDevices();
      this.dropIdleScsiController();
      this.completeLegacyDevices();
      this.foldPendingResources();
      await this.disks.settle(undefined);
    }
    const qemu = qemuFeatures(this.qemuBinary);
    const local = [...nodeLocalArgs(this.paths, { testMonitor: this.options.testMonitor }), ...securityArgs(this.data.hvparams, qemu)];
    // DIMMs are plugged by QMP before the guest runs (see resourceBootArgs), so QEMU starts paused then.
    const dimms = this.data.resources?.dimms ?? [];
    const rbd = rbdBootFor(this.options.rbd, this.data, this.paths.dir);
    const boot = openBootFiles(this.hostPaths, this.data, rbd); // closed in the finally below, nothing throws before it
    // Every fresh start has the agent channel; a migration target has it when the source's QEMU has.
    if (!incoming) this.data.agent_channel = true;
    const agent = this.data.agent_channel ? agentChannelArgs(this.paths.agentSocket, machineFamily(machineOf(this.data.kvm_cmd))) : [];
    const args = [...boot.cmd, ...local, ...pciTopology(this.data).args, ...agent];
    // A link-down NIC is set down by QMP before the guest runs, as DIMMs are plugged.
    const linkDown = this.data.nics.some((n) => n.link_state === 'down') || hasIoLimits(this.data);
    if (incoming || dimms.length || linkDown) args.push('-S');
    if (incoming) args.push('-incoming', 'defer');
    const fds: number[] = [...boot.fds];
    args.push(...boot.diskArgs);
    try {
      for (const nic of this.data.nics) {
        const tap = await prepareNicTap(nic);
        const childFds = tap.fds.map((_, i) => 3 + fds.length + i);
        fds.push(...tap.fds);
        nic.tap = tap.name;
        args.push(...nicBootArgs(nic, nic.pci as number, childFds, this.nicOptions));
      }
      if (this.data.resources) args.push(...resourceBootArgs(this.data.resources));
      // The session that saw QEMU come up becomes the monitor: one connect per start.
      const pid = await spawnQemu(this.qemuBinary, args, fds, this.paths, undefined, (client) => this.link.adopt(client));
      const r = this.data.resources;
      if (r) r.cpuThreads = { pid, created: r.bootVcpus + r.cpus.length };
      this.save();
      if (dimms.length || linkDown) await this.plugBootDimms(pid, !incoming);
      return pid;
    } finally {
      boot.close();
      for (const fd of fds.slice(boot.fds.length)) fs.closeSync(fd);
    }
  }

  /** Plugs the recorded DIMMs into a QEMU started with -S, then lets the guest run unless it waits for a migration. */
  private async plugBootDimms(pid: number, run: boolean): Promise<void> {
    try {
      await plugBootState(await this.monitor(), this.data, run);
    } catch (err) {
      await this.killNow(pid);
      throw new InstanceStateError(`instance ${this.name}: plugging its DIMMs, setting its NICs link down or its disks' I/O limits at start failed, QEMU was stopped again: ${errorMessage(err)}`);
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
    this.dropPendingResources();
    this.deviceOps.dropPending();
  }

  /** A controller left from SCSI disks since removed is not created again (its slot is free from now on). */
  private dropIdleScsiController(): void {
    if (!this.data.scsi_controller || this.data.scsi_disks?.length) return;
    delete this.data.scsi_controller;
    this.save();
  }

  /** vCPU/DIMM intents of a stopped QEMU: an unconfirmed add does not come back, an asked removal is done. */
  private dropPendingResources(): void {
    const r = this.data.resources;
    if (!r || !hasResourceIntents(r)) return;
    r.cpus = r.cpus.filter((c) => !c.state);
    r.dimms = r.dimms.filter((d) => !d.state);
    settleResizeOperations(this.journal, this.runner, r);
    this.save();
  }

  /**
   * Devices from old (Ganeti) runtime files may lack a slot or a uuid: give
   * them both at start, as Ganeti assigns slots then, so that they get
   * device ids and can be hot-removed from now on.
   */
  private completeLegacyDevices(): void {
    const all = allDevices(this.data).filter(([kind]) => kind.takesPciSlot).map(([, d]) => d as PciDeviceRecord);
    if (all.every((d) => d.pci !== null && d.uuid)) return;
    const map = recordedTree(this.name, this.data);
    for (const d of all) {
      if (!d.uuid) d.uuid = randomUUID();
      if (d.pci !== null) continue;
      const place = map.firstFree();
      d.pci = place.slot;
      if (place.bus !== undefined) d.bus = place.bus;
      map.addRecorded(place, d.uuid);
    }
    this.save();
  }

  // ---- monitor ----------------------------------------------------------

  /** The monitor, connected on first use and again after QEMU restarts (single-flight). */
  monitor(): Promise<Monitor> {
    return this.link.get();
  }

  disconnect(): void {
    this.link.close();
    this.qemuPid.forget();
    this.slots.invalidate();
  }

  /** A guest may eject a device on its own, or finish a timed-out unplug late. */
  private onEvent(e: QmpEvent): void {
    if (e.event !== 'DEVICE_DELETED') return;
    for (const [kind, rec] of allDevices(this.data)) {
      if (!isPlaced(kind, rec) || !rec.uuid || !isDeletionOf(idOf(kind, rec), e)) continue;
      void this.serialize(async () => {
        if (this.deviceOps.find(kind, rec.uuid) !== rec) return; // an API remove already finished it
        const mon = await this.monitor();
        // Events can arrive late (QEMU sends them at finalize): trust QEMU's
        // lists, not the event (after a NIC modify, the same id already names
        // the new device).
        if (await devicePresent(mon, idOf(kind, rec))) return;
        await this.deviceOps.finishRemoval(kind, rec, mon, 'guest');
        this.emit('device-removed', { kind: kind.name, uuid: rec.uuid });
      }).catch((err) => this.emit('warning', `late removal of ${kind.label} ${rec.uuid}: ${errorMessage(err)}`));
    }
  }

  // ---- PCI slots --------------------------------------------------------

  /** The PCI slot map as QEMU shows it now (info pci, cross-checked with query-pci) plus the runtime file. */
  async slotMap(mon: Monitor): Promise<PciTreeMap> {
    await this.slots.refresh(mon, this.data);
    return this.slots.map(mon, this.data);
  }

  private chooseSlot(mon: Monitor, requested: PciPlacement | undefined): Promise<PciPlacement> {
    return this.slots.choose(mon, this.data, requested);
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

  // ---- operations ---------------------------------------------------------

  private get journal(): OperationJournal {
    if (!this.data.operations) this.data.operations = emptyJournal();
    // A journal written before epochs existed gets one (saved with the next change).
    if (!this.data.operations.epoch) this.data.operations.epoch = emptyJournal().epoch;
    return this.data.operations;
  }

  /** The recorded operation with this id (a copy), if any. */
  operationRecord(id: string): OperationRecord | undefined {
    return this.runner.record(id);
  }

  /** Whether an identified operation is being worked on in this process now. */
  operationInFlight(id: string): boolean {
    return this.runner.inFlightNow(id);
  }

  /** Records that the master gave up on an operation id this node never saw (a late copy is refused). */
  fenceOperation(id: string): Promise<OperationRecord> {
    return this.runner.fence(id);
  }

  /** The journal (a copy): the node reports its records to the master. */
  get operations(): OperationJournal {
    return JSON.parse(JSON.stringify(this.data.operations ?? { epoch: '', revision: 0, records: [] })) as OperationJournal;
  }

  // ---- hotplug ----------------------------------------------------------

  hotAddNic(req: NicRequest, opts: OperationOptions = {}): Promise<NicRecord> {
    return this.runner.run(opts.operationId ?? '', 'nic', 'add', req.uuid, () => this.deviceOps.addNic(req));
  }

  /** Resolves with the record the NIC had, and whether the guest has still to release it. */
  hotRemoveNic(uuid: string, opts: OperationOptions = {}): Promise<RemovalResult<NicRecord>> {
    return this.runner.run(opts.operationId ?? '', 'nic', 'remove', uuid, () => this.deviceOps.remove(deviceKind('nic'), uuid) as Promise<RemovalResult<NicRecord>>);
  }

  /** A new MAC or link: remove the NIC and add it again at the same slot. */
  hotModifyNic(uuid: string, change: NicChangeRequest, opts: OperationOptions = {}): Promise<NicModifyResult> {
    return this.runner.run(opts.operationId ?? '', 'nic', 'modify', uuid, () => this.deviceOps.modifyNic(uuid, change));
  }

  /**
   * `prepare` runs in the queue once the instance is known to run, the uuid
   * to be new and the intent to be recorded (e.g. to create the file: a
   * crash right after leaves an intent whose rollback deletes it).
   */
  hotAddDisk(req: DiskRequest, prepare?: HotAddPrepare, opts: OperationOptions = {}): Promise<DiskRecord> {
    return this.runner.run(opts.operationId ?? '', 'disk', 'add', req.uuid, () => {
      // By resolution, before anything is recorded: a file the node is to create only by where it will be.
      checkDiskRequest(this.hostPaths, this.options.rbd, req);
      return this.deviceOps.addDisk(req, prepare);
    });
  }

  /** A SCSI disk (a LUN on the virtio-scsi controller, which comes with the first one), as hotAddDisk. */
  hotAddScsiDisk(req: DiskRequest, prepare?: HotAddPrepare, opts: OperationOptions = {}): Promise<ScsiDiskRecord> {
    return this.runner.run(opts.operationId ?? '', 'disk', 'add', req.uuid, () => {
      checkDiskRequest(this.hostPaths, this.options.rbd, req);
      return this.deviceOps.addScsiDisk(req, prepare);
    });
  }

  /** A virtio-pmem device of `req.sizeMiB` on a file the node creates (`req.created`), as hotAddDisk. */
  hotAddPmem(req: DiskRequest, prepare?: HotAddPrepare, opts: OperationOptions = {}): Promise<PmemRecord> {
    return this.runner.run(opts.operationId ?? '', 'disk', 'add', req.uuid, () => {
      if (req.created) this.hostPaths.assertNewDiskPath(req.path);
      return this.deviceOps.addPmem(req, prepare);
    });
  }

  /** Resolves with the record the disk had, and whether the guest has still to release it. */
  hotRemoveDisk(uuid: string, opts: OperationOptions = {}): Promise<RemovalResult<DiskRecord | ScsiDiskRecord | PmemRecord>> {
    return this.runner.run(opts.operationId ?? '', 'disk', 'remove', uuid, () => {
      // Any kind the master calls a disk: virtio-blk, SCSI, pmem.
      const kind: DeviceKind = findDevice(this.data, uuid, DISK_KINDS)?.[0] ?? deviceKind('disk');
      return this.deviceOps.remove(kind, uuid) as Promise<RemovalResult<DiskRecord | ScsiDiskRecord | PmemRecord>>;
    });
  }

  /** A grow and/or new I/O limits of a disk (disk-modify.ts): live, or on a stopped instance in its backing store and record. */
  hotModifyDisk(uuid: string, change: DiskChangeRequest, opts: OperationOptions = {}): Promise<DiskModifyResult> {
    return this.runner.run(opts.operationId ?? '', 'disk', 'modify', uuid, () => {
      this.assertNoMigration();
      return this.disks.modify(uuid, change);
    });
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
  resize(req: ResizeRequest, node: NodeCapacity, opts: OperationOptions = {}): Promise<ResizeResult> {
    return this.runner.run(opts.operationId ?? '', 'resources', 'resize', '', async () => {
      const r = this.data.resources;
      if (!r)
        throw new InstanceStateError(`instance ${this.name} has no vCPU/memory record (runtime file of an older version); restart it once first`);
      if (this.runner.current) this.runner.current.request = { ...req };
      const pid = this.pid;
      const tcg = this.data.kvm_cmd[this.data.kvm_cmd.indexOf('-accel') + 1] === 'tcg';
      try {
        validateResize(this.name, r, req, node, tcg && pid !== undefined ? tcgCpuThreadsLeft(r, pid) : Infinity, deviceMemoryMiB(r, this.data).pmemMiB);
        this.requireRunning();
        const mon = await this.monitor();
        const result = await applyResize(this.resizeContext(mon, r, pid), r, req);
        this.runner.settleCurrent('resize', 'succeeded', { result });
        this.save();
        return result;
      } catch (err) {
        if (isOutcomeUnknown(err)) {
          this.scheduleReconcile();
          throw new OutcomeUnknownError(`resize of ${this.name}: ${errorMessage(err)}; the node settles it as soon as QEMU's monitor answers (ask for the operation's outcome)`, { cause: err });
        }
        const now = { vcpus: currentVcpus(r), memoryMiB: currentMemoryMiB(r), notes: [] };
        this.runner.settleCurrent('resize', 'failed', { result: now, error: operationError(err) });
        this.save();
        throw err;
      }
    });
  }

  private resizeContext(mon: Monitor, r: ResourceState, pid: number | undefined): Parameters<typeof applyResize>[0] {
    return {
      instance: this.name,
      mon,
      qemuVersion: this.link.qemuVersion,
      cpuUnplugged: pid !== undefined && r.cpuUnpluggedPid === pid,
      pid,
      unplugTimeoutMs: this.unplugTimeout('cpu'),
      save: (state) => {
        this.data.resources = state;
        this.save();
      },
    };
  }

  /**
   * Settles every intent left half-done (by a crash of this process, a
   * command that timed out, a guest that did not answer): an unconfirmed
   * attach that QEMU has is kept, one it lacks is released; a removal is
   * carried to its end or stays pending; vCPU and DIMM intents the same
   * way; operations still running with no intent are settled by what the
   * runtime file holds. Each outcome is recorded in the operation journal.
   */
  reconcile(): Promise<ReconcileReport> {
    return this.serialize(() => this.reconcileNow());
  }

  /**
   * For a QEMU that runs on after this process restarted: connects the
   * monitor and reconciles in one queue entry, so no request for the
   * instance runs before its state is settled.
   */
  openAndReconcile(): Promise<ReconcileReport> {
    return this.serialize(async () => {
      await this.monitor();
      return this.reconcileNow();
    });
  }

  private reconcileTimer: NodeJS.Timeout | undefined;

  /** Reconciles again soon (after an outcome that QEMU could not tell), until nothing is left open. */
  private scheduleReconcile(): void {
    if (this.reconcileTimer) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = undefined;
      if (this.pid === undefined) return;
      this.reconcile().then(
        (r) => this.emit('reconciled', r),
        (err) => {
          this.emit('warning', `reconcile failed, trying again: ${errorMessage(err)}`);
          this.scheduleReconcile();
        },
      );
    }, RECONCILE_RETRY_MS);
    this.reconcileTimer.unref();
  }

  private async reconcileNow(): Promise<ReconcileReport> {
    if (this.pid === undefined) return { completed: [], rolledBack: [], pending: [] };
    const report = await reconcileInstance({
      deviceOps: this.deviceOps,
      runner: this.runner,
      data: () => this.data,
      journal: () => this.journal,
      save: () => this.save(),
      monitor: () => this.monitor(),
      cpuUnplugTimeoutMs: () => this.unplugTimeout('cpu'),
    });
    await this.disks.settle(await this.monitor());
    // Cross-check of the slots against QEMU's own lists (slot-owner.ts).
    await this.slots.refresh(await this.monitor(), this.data);
    return report;
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
  ): Promise<{ instance: KvmInstance; uri?: string; nbd?: string }> {
    const paths = instancePaths(dataDir, carried.instance);
    if (fs.existsSync(paths.runtimeFile)) throw new DeviceExistsError(carried.instance, `a runtime file on this node (${paths.runtimeFile})`);
    const data = checkCarried(carried, options.hostPaths ?? HostPathPolicy.denyAll());
    if (how.incoming) data.migration = { role: 'target', peer: how.peer, since: new Date().toISOString() };
    else delete data.migration;
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const inst = new KvmInstance(data.instance, paths, data, options);
    try {
      inst.save();
      await inst.startNow(how.incoming);
      if (!how.incoming) return { instance: inst };
      const { uri, diskCopy, tls } = await openIncoming(await inst.monitor(), inst.data, how);
      inst.data.migration = { ...inst.data.migration!, uri, ...(diskCopy ? { diskCopy } : {}), ...(tls ? { tls } : {}) };
      inst.save();
      return { instance: inst, uri, ...(diskCopy ? { nbd: diskCopy.nbd } : {}) };
    } catch (err) {
      await inst.destroyNow().catch(() => undefined);
      throw err;
    }
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
    removeInstanceDir(this.paths.dir, this.paths.runtimeFile);
    await waitTapsGone(this.data.nics.map((n) => n.tap).filter((t): t is string => !!t));
  }

  /** Source side: marks the instance as migrating to `peer` and starts the stream; returns at once. */
  migrateTo(uri: string, peer: string, params: MigrationParams = {}, send: SendOptions = {}): Promise<MigrationProgress> {
    return this.serialize(() => this.migrationPart.start(uri, peer, params, send));
  }

  /** Source side of a migration with disk copy, after the stream completed: ends the mirrors (instance-migration.ts). */
  endDiskCopy(): Promise<void> {
    return this.serialize(() => this.migrationPart.endDiskCopy());
  }

  /** Read-only and outside the queue: answers while other operations wait. */
  migrationStatus(): Promise<MigrationView> {
    return this.migrationPart.status();
  }

  /** Target side, once the stream is complete: the guest runs here from now on. Idempotent. */
  finishIncoming(): Promise<void> {
    return this.serialize(() => this.migrationPart.finishIncoming());
  }

  /** Undoes this node's part of a migration (instance-migration.ts). */
  abortMigration(): Promise<'destroyed' | 'resumed' | 'nothing'> {
    return this.serialize(() => this.migrationPart.abort());
  }

  /** The instance runs on another node now: stops QEMU here and forgets it (disks are kept). */
  release(timeoutMs = 10_000): Promise<void> {
    return this.serialize(() => this.migrationPart.release(timeoutMs));
  }

  // ---- verify repairs ----
  // Used by verify --fix (src/noded/verify-service.ts) from inside exclusive():
  // none of them queues. Each changes the runtime data and saves it (save()
  // puts memory back to the file if the save fails).

  /** Applies `change` to the runtime data and saves it when it changed anything; returns whether it did. */
  private verifyRewrite(change: (d: RuntimeData) => boolean): boolean {
    if (!change(this.data)) return false;
    this.save();
    return true;
  }

  /** Drops the record of a device QEMU does not have: a NIC or disk by uuid, a hot-added vCPU or DIMM by id. */
  verifyDropRecord(kind: DeviceKindName | 'cpu' | 'dimm', key: string): boolean {
    return this.verifyRewrite((d) => {
      const r = d.resources;
      const count = (): number => allDevices(d).length + (r ? r.cpus.length + r.dimms.length : 0);
      const before = count();
      if (kind !== 'cpu' && kind !== 'dimm') deviceKind(kind).forget(d, key);
      else if (r && kind === 'cpu') r.cpus = r.cpus.filter((c) => c.id !== key);
      else if (r) r.dimms = r.dimms.filter((m) => m.id !== key);
      return count() !== before;
    });
  }

  /** A hot-add QEMU completed but the record still says "attaching": settles it. */
  verifyCompleteAttach(kind: DeviceKindName, uuid: string): boolean {
    return this.verifyRewrite((d) => {
      const rec = deviceKind(kind).records(d).find((r) => r.uuid === uuid);
      if (rec?.state !== 'attaching') return false;
      delete rec.state;
      return true;
    });
  }

  /** Records the tap QEMU really uses for a NIC. */
  verifyRecordTap(uuid: string, tap: string): boolean {
    return this.verifyRewrite((d) => {
      const nic = d.nics.find((n) => n.uuid === uuid);
      if (!nic || nic.tap === tap) return false;
      nic.tap = tap;
      return true;
    });
  }
}
