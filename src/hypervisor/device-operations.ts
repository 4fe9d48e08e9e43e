/**
 * Add, remove and modify of the devices that have a record of their own
 * (device-kinds.ts), for any kind, in libvirt's shape: prepare, attach as
 * undoable steps, detach, and one removal ending (finishRemoval) reached by
 * the API call, a DEVICE_DELETED event, a guest-initiated eject and
 * reconciliation. Every change goes:
 *
 *   intent (record with state attaching/detaching + the operation) saved
 *   -> host and QEMU touched -> result (record + operation outcome) saved
 *
 * A definitive failure leaves the file as before; a failure whose outcome is
 * unknown (timeout, monitor gone) keeps the intent, and settleDevice decides
 * it by QEMU's own lists. Everything here runs inside the instance's queue.
 */
import { backingFields, type DiskBacking } from './disk-template';
import { recordNodeChange, type OperationJournal, type OperationRecord, type SettledBy } from './operations';
import { DeviceExistsError, DeviceNotFoundError, InstanceStateError, InvalidArgumentError, OutcomeUnknownError, errorMessage, isOutcomeUnknown } from './errors';
import { allDevices, DEVICE_KINDS, findDevice, idOf, isPlaced, slotOf, type AttachContext, type DeviceKind, type DeviceRecord, type HostPrep } from './device-kinds';
import { DISK_KIND, NIC_KIND, PMEM_KIND, SCSI_DISK_KIND } from './device-kinds';
import { assertPmemPossible, assertPmemRoom, assertPmemSize } from './pmem';
import { ensureScsiController, nextScsiAddress, scsiDiskId } from './scsi-disk';
import { diskId } from './disk';
import { nicId, normalizeMac, validateNic } from './nic';
import { nicReaddRequest as requestOf, runNicModify, type NicChangeRequest, type NicModifyResult } from './nic-modify';
export type { NicModifyResult } from './nic-modify';
import { operationError, type OperationRunner } from './operation-runner';
import { devicePresent } from './qdev';
import type { PciPlacement } from './pci-slots';
import type { Monitor } from './qmp-client';
import type { DiskRecord, NicRecord, PmemRecord, RuntimeData, ScsiDiskRecord } from './runtime-file';
import { assertBridge } from './tap';
import type { UnplugKind } from './unplug-timeouts';
import type { DiskIoLimits } from './disk-io-limits';

export interface NicRequest {
  uuid: string;
  mac: string;
  link?: string;
  /** A specific PCI slot; by default the first free one. */
  slot?: number;
  /** The bus of that slot (absent: the root bus). */
  bus?: string;
  link_state?: NicRecord['link_state'];
  rate_mbit?: number;
  queues?: number;
  model?: NicRecord['model'];
}

/** The record fields of a NIC request beyond uuid, mac and link, without defaults. */
export function nicExtras(req: Pick<NicRequest, 'link_state' | 'rate_mbit' | 'queues' | 'model'>): Partial<NicRecord> {
  const out: Partial<NicRecord> = {};
  if (req.link_state === 'down') out.link_state = 'down';
  if (req.rate_mbit) out.rate_mbit = req.rate_mbit;
  if (req.queues && req.queues > 1) out.queues = req.queues;
  if (req.model && req.model !== 'virtio') out.model = req.model;
  return out;
}



export interface DiskRequest extends DiskBacking {
  uuid: string;
  /** Host path (file, blockdev), or "rbd:POOL/IMAGE" (disk-template.ts rbdPath). */
  path: string;
  slot?: number;
  /** The PCI bus of that slot (absent: the root bus). */
  bus?: string;
  /** The node made (or makes) this file for the disk: it is deleted when the disk goes. */
  created?: boolean;
  /** At create (runtime-layout.ts): "scsi" puts the disk on the virtio-scsi controller; a hot-add says it by calling addScsiDisk. */
  diskBus?: 'scsi';
  /** At create: "pmem" makes it a virtio-pmem device; a hot-add calls addPmem. */
  diskType?: 'pmem';
  /** pmem devices: the size of the device (and of the file the node makes). */
  sizeMiB?: number;
  /** I/O limits (disk-io-limits.ts, checked by the caller); virtio-blk and SCSI disks. */
  io_limits?: DiskIoLimits;
}

/**
 * Work a caller needs done inside an operation, in the instance's queue, once
 * the cheap checks have passed and the intent is recorded (e.g. creating a
 * disk file). It may return an undo, which runs if the operation fails
 * before it changes anything.
 */
export type PrepareStep = () => (() => void) | void;

/**
 * The prepare step of a hot-add: as PrepareStep, but it may take time (an
 * RBD image the node creates through the rbd CLI); its undo too.
 */
export type HotAddPrepare = () => Promise<(() => void | Promise<void>) | void> | (() => void | Promise<void>) | void;

/** A removal: done, or waiting for the guest to release the device (its slot and id stay reserved). */
export interface RemovalResult<T> {
  record: T;
  pending: boolean;
}

export type DeviceOutcome = 'completed' | 'rolled back' | 'pending';

/** What device operations need from their instance. */
export interface DeviceHost {
  readonly name: string;
  readonly runner: OperationRunner;
  data(): RuntimeData;
  journal(): OperationJournal;
  save(): void;
  monitor(): Promise<Monitor>;
  requireRunning(): void;
  unplugTimeout(kind: UnplugKind): number;
  attachContext(): AttachContext;
  chooseSlot(mon: Monitor, requested: PciPlacement | undefined): Promise<PciPlacement>;
  scheduleReconcile(): void;
  /** QEMU refused an attach: the slot owner reads QEMU's lists again before the next choice. */
  slotsChanged(): void;
  warn(message: string): void;
}

/** The place a request asks for: its slot on its bus (the root bus without one); undefined: the first free one. */
function requestedPlace(req: { slot?: number; bus?: string }): PciPlacement | undefined {
  if (req.slot === undefined) return undefined;
  return req.bus === undefined ? { slot: req.slot } : { bus: req.bus, slot: req.slot };
}

const busOf = (p: PciPlacement): { bus?: string } => (p.bus === undefined ? {} : { bus: p.bus });

/** A device record as callers see it: a copy without its pending state. */
export function publicRecord<T extends DeviceRecord>(rec: T): T {
  const copy = { ...rec };
  delete copy.state;
  return copy;
}

export class DeviceOperations {
  constructor(private readonly host: DeviceHost) {}

  private get runner(): OperationRunner {
    return this.host.runner;
  }

  find(kind: DeviceKind, uuid: string): DeviceRecord | undefined {
    return kind.records(this.host.data()).find((d) => d.uuid === uuid);
  }

  assertNewUuid(uuid: string): void {
    if (!uuid) throw new InvalidArgumentError('a device needs a uuid');
    if (allDevices(this.host.data()).some(([, r]) => r.uuid === uuid)) throw new DeviceExistsError(this.host.name, `a device with uuid ${uuid}`);
  }

  async addNic(req: NicRequest): Promise<NicRecord> {
    const mac = normalizeMac(req.mac);
    if (req.link) assertBridge(req.link);
    validateNic({ ...req, ...nicExtras(req), mac }, this.host.data().resources?.maxVcpus);
    this.assertNewUuid(req.uuid);
    this.host.requireRunning();
    const mon = await this.host.monitor();
    const place = await this.host.chooseSlot(mon, requestedPlace(req));
    const nic: NicRecord = { uuid: req.uuid, mac, pci: place.slot, ...busOf(place), state: 'attaching', ...nicExtras(req) };
    if (req.link) nic.link = req.link;
    nicId(nic, place.slot);
    return this.attachRecorded(NIC_KIND, nic, mon);
  }

  async addDisk(req: DiskRequest, prepare?: HotAddPrepare): Promise<DiskRecord> {
    if (req.diskBus || req.diskType) throw new InvalidArgumentError(`disk ${req.uuid}: a ${req.diskBus ?? req.diskType} disk is hot-added by its own call (addScsiDisk, addPmem)`);
    this.assertNewUuid(req.uuid);
    this.host.requireRunning();
    const mon = await this.host.monitor();
    const place = await this.host.chooseSlot(mon, requestedPlace(req));
    const disk: DiskRecord = { uuid: req.uuid, path: req.path, pci: place.slot, ...busOf(place), ...backingFields(req), state: 'attaching' };
    if (req.created) disk.created = true;
    if (req.io_limits) disk.io_limits = req.io_limits;
    diskId(disk, place.slot);
    return this.attachRecorded(DISK_KIND, disk, mon, prepare);
  }

  /** A LUN on the virtio-scsi controller, which is added first when QEMU lacks it (at a place from the slot owner). */
  async addScsiDisk(req: DiskRequest, prepare?: HotAddPrepare): Promise<ScsiDiskRecord> {
    this.assertNewUuid(req.uuid);
    this.host.requireRunning();
    const mon = await this.host.monitor();
    const disk: ScsiDiskRecord = { uuid: req.uuid, path: req.path, ...nextScsiAddress(this.host.data()), ...backingFields(req), state: 'attaching' };
    if (req.created) disk.created = true;
    if (req.io_limits) disk.io_limits = req.io_limits;
    scsiDiskId(disk);
    await ensureScsiController(mon, this.host.data(), () => this.host.chooseSlot(mon, undefined), () => this.host.save()).catch((err: unknown) => {
      this.host.slotsChanged();
      throw err;
    });
    return this.attachRecorded(SCSI_DISK_KIND, disk, mon, prepare);
  }

  /** A virtio-pmem device: needs maxmem room beside the DIMMs and virtio-mem (pmem.ts). */
  async addPmem(req: DiskRequest, prepare?: HotAddPrepare): Promise<PmemRecord> {
    const data = this.host.data();
    const sizeMiB = req.sizeMiB ?? 0;
    assertPmemSize(sizeMiB);
    if (req.template) throw new InvalidArgumentError(`pmem device ${req.uuid}: a pmem device is a file the node makes; it cannot be a ${req.template} disk`);
    if (!req.created) throw new InvalidArgumentError(`pmem device ${req.uuid}: its backing file must be one the node creates (give a size, no path)`);
    assertPmemPossible(data.hvparams, this.host.name);
    this.assertNewUuid(req.uuid);
    this.host.requireRunning();
    assertPmemRoom(this.host.name, data.resources, data, sizeMiB);
    const mon = await this.host.monitor();
    const place = await this.host.chooseSlot(mon, requestedPlace(req));
    const rec: PmemRecord = { uuid: req.uuid, path: req.path, sizeMiB, pci: place.slot, ...busOf(place), state: 'attaching', created: true };
    PMEM_KIND.id(rec, place.slot);
    return this.attachRecorded(PMEM_KIND, rec, mon, prepare);
  }

  /** A NIC modify: live where it can be, a replug at the same slot for a new MAC or model (nic-modify.ts). */
  modifyNic(uuid: string, change: NicChangeRequest): Promise<NicModifyResult> {
    const old = this.find(NIC_KIND as unknown as DeviceKind, uuid) as NicRecord | undefined;
    return runNicModify(
      {
        name: this.host.name,
        runner: this.runner,
        maxVcpus: this.host.data().resources?.maxVcpus,
        save: () => this.host.save(),
        monitor: () => this.host.monitor(),
        requireRunning: () => this.host.requireRunning(),
        remove: (id) => this.remove(NIC_KIND as unknown as DeviceKind, id),
        addNic: (req) => this.addNic(req),
      },
      uuid,
      old,
      change,
    );
  }

  /**
   * Records the intent (with the operation), prepares the host side,
   * attaches, and records the result with the operation's outcome.
   */
  private async attachRecorded<T extends DeviceRecord>(kind: DeviceKind<T>, rec: T, mon: Monitor, prepare?: HotAddPrepare): Promise<T> {
    const prep = kind.prepareHost ? await kind.prepareHost(rec) : undefined;
    try {
      return await this.attachPrepared(kind, rec, mon, prep, prepare);
    } finally {
      prep?.close(); // QEMU holds its own copy (or the attach failed and the tap goes)
    }
  }

  private async attachPrepared<T extends DeviceRecord>(kind: DeviceKind<T>, rec: T, mon: Monitor, prep: HostPrep | undefined, prepare?: HotAddPrepare): Promise<T> {
    kind.records(this.host.data()).push(rec);
    this.host.save();
    let undoPrepare: (() => void | Promise<void>) | void = undefined;
    try {
      undoPrepare = await prepare?.();
      if (prepare) kind.validate(rec);
      await kind.attach(mon, rec, slotOf(kind as unknown as DeviceKind, rec) as number, this.host.attachContext(), prep);
    } catch (err) {
      if (isOutcomeUnknown(err)) return this.settleUnknownAttach(kind as unknown as DeviceKind, rec, err) as Promise<T>;
      this.host.slotsChanged();
      await undoPrepare?.();
      kind.forget(this.host.data(), rec.uuid);
      this.runner.settleCurrent('add', 'failed', { error: operationError(err) });
      this.host.save();
      throw err;
    }
    delete rec.state;
    this.runner.settleCurrent('add', 'succeeded', { result: publicRecord(rec) });
    this.host.save();
    return publicRecord(rec);
  }

  /** An attach step timed out or the monitor went away: settle by QEMU's lists now if it answers. */
  private async settleUnknownAttach(kind: DeviceKind, rec: DeviceRecord, cause: unknown): Promise<DeviceRecord> {
    try {
      const outcome = await this.settleDevice(kind, rec, 'request');
      if (outcome === 'completed') return publicRecord(rec);
      throw new InstanceStateError(`${errorMessage(cause)}; QEMU does not have the device, everything it had was released`);
    } catch (err) {
      if (err instanceof InstanceStateError) throw err;
      this.host.scheduleReconcile();
      throw new OutcomeUnknownError(
        `hot-add of ${kind.label} ${rec.uuid} on ${this.host.name}: ${errorMessage(cause)}; the intent is kept and the node settles it as soon as QEMU's monitor answers (ask for the operation's outcome)`,
        { cause },
      );
    }
  }

  async remove(kind: DeviceKind, uuid: string): Promise<RemovalResult<DeviceRecord>> {
    const rec = this.find(kind, uuid);
    const name = this.host.name;
    if (!rec) throw new DeviceNotFoundError(name, `${kind.label} with uuid ${uuid}`);
    if (!isPlaced(kind, rec))
      throw new InstanceStateError(`${kind.label} ${uuid} of ${name} has no PCI slot recorded (old runtime file); remove it without hotplug, or restart the instance once to give it a slot`);
    if (kind.hotRemoveRefusal) throw new InstanceStateError(`${kind.label} ${uuid} of ${name} cannot be removed live: ${kind.hotRemoveRefusal}`);
    if (rec.state === 'attaching') throw new InstanceStateError(`${kind.label} ${uuid} of ${name} is still being added; wait for that operation to settle`);
    this.host.requireRunning();
    const mon = await this.host.monitor();
    rec.state = 'detaching';
    this.host.save();
    try {
      await kind.detach(mon, rec, slotOf(kind, rec) as number, this.host.unplugTimeout(kind.unplugKind));
    } catch (err) {
      if (!isOutcomeUnknown(err)) {
        delete rec.state;
        this.host.save();
        throw err;
      }
      // The guest has not let go (or QEMU did not answer): removal pending.
      // The slot and id stay reserved; the guest's release, a repeated
      // remove or reconciliation ends it.
      const result = { record: publicRecord(rec), pending: true };
      this.runner.settleCurrent('remove', 'removal_pending', { result });
      this.host.save();
      this.host.warn(`the guest has not released ${kind.label} ${uuid} within ${this.host.unplugTimeout(kind.unplugKind)} ms: ${errorMessage(err)}; removal pending`);
      return result;
    }
    await this.finishRemovalOrReconcile(kind, rec, mon);
    return { record: publicRecord(rec), pending: false };
  }

  /**
   * The guest let go: the removal ends here. If freeing QEMU's backends fails
   * now, the device is already gone from the guest, so the change is not
   * refused: its outcome is left to the reconcile scheduled here, which ends
   * it through the same finishRemoval and settles the operation.
   */
  private async finishRemovalOrReconcile(kind: DeviceKind, rec: DeviceRecord, mon: Monitor): Promise<void> {
    try {
      await this.finishRemoval(kind, rec, mon, 'request');
    } catch (err) {
      if (isOutcomeUnknown(err)) throw err;
      this.host.scheduleReconcile();
      throw new OutcomeUnknownError(
        `${kind.label} ${rec.uuid} of ${this.host.name} left the guest, but releasing its QEMU backend failed: ${errorMessage(err)}; the node finishes the removal at its next reconcile (ask for the operation's outcome)`,
        { cause: err },
      );
    }
  }

  /**
   * The one path that ends a removal, for the API call, a DEVICE_DELETED
   * event, a guest-initiated eject and reconciliation: QEMU's backends
   * released, what the node made on the host for the device (a disk file)
   * deleted while the record still names it, then the record dropped with
   * the operations it ends. A crash in between leaves a record whose next
   * reconcile finishes the same way, never a file that no record names.
   */
  async finishRemoval(kind: DeviceKind, rec: DeviceRecord, mon: Monitor, by: SettledBy): Promise<void> {
    await kind.release(mon, rec, slotOf(kind, rec) as number);
    await this.releaseHost(kind, rec);
    const wasAttaching = rec.state === 'attaching';
    kind.forget(this.host.data(), rec.uuid);
    if (wasAttaching) this.runner.failOpen(rec.uuid, by, `the hot-add of ${kind.label} ${rec.uuid} did not reach QEMU; everything it had made was released`);
    else {
      if (by === 'request') this.runner.settleCurrent('remove', 'succeeded', { result: { record: publicRecord(rec), pending: false } });
      this.settleRemoved(kind, rec, by);
    }
    this.host.save();
  }

  /** Frees the device's host side (releaseHost of its kind); a failure is a warning. Settles when it is done (an RBD image takes an rbd call). */
  async releaseHost(kind: DeviceKind, rec: DeviceRecord): Promise<void> {
    const warn = (err: unknown): void => this.host.warn(`${kind.label} ${rec.uuid} is gone, but freeing its host side failed: ${errorMessage(err)}`);
    try {
      await kind.releaseHost(rec, this.host.attachContext());
    } catch (err) {
      warn(err);
    }
  }

  /**
   * A removal finished: the other operations still open for the device end
   * with it; with none (the guest ejected it by itself) the change is
   * recorded as the node's own, so the master learns of it.
   */
  private settleRemoved(kind: DeviceKind, rec: DeviceRecord, by: SettledBy): void {
    const result = { record: publicRecord(rec), pending: false };
    const open = this.runner.openFor(rec.uuid);
    for (const op of open) {
      if (op.action === 'remove') this.runner.settle(op, 'succeeded', by, { result });
      else this.runner.settle(op, 'failed', by, { error: { code: 'ABORTED', message: `${kind.label} ${rec.uuid} was removed (${by}) while this operation was open` } });
    }
    if (!open.length && by !== 'request' && this.runner.current?.uuid !== rec.uuid) recordNodeChange(this.host.journal(), kind.operationKind, 'remove', rec.uuid, by, result);
  }

  /**
   * Settles one device's intent against QEMU's lists: an attach QEMU has is
   * kept, one it lacks is released; a removal is carried on (if the guest
   * does not let go in time, it stays pending).
   */
  async settleDevice(kind: DeviceKind, rec: DeviceRecord, by: SettledBy): Promise<DeviceOutcome> {
    const mon = await this.host.monitor();
    const present = await devicePresent(mon, idOf(kind, rec));
    if (rec.state === 'attaching' && present) {
      delete rec.state;
      for (const op of this.runner.openFor(rec.uuid))
        this.runner.settle(op, 'succeeded', by, { result: op.action === 'remove' ? { record: publicRecord(rec), pending: false } : publicRecord(rec) });
      if (this.runner.current?.uuid === rec.uuid) this.runner.settleCurrent('add', 'succeeded', { result: publicRecord(rec) });
      this.host.save();
      return 'completed';
    }
    if (rec.state === 'detaching' && present) {
      try {
        await kind.detach(mon, rec, slotOf(kind, rec) as number, this.host.unplugTimeout(kind.unplugKind));
      } catch (err) {
        if (!isOutcomeUnknown(err)) throw err;
        for (const op of this.runner.openFor(rec.uuid))
          if (op.state === 'running') this.runner.settle(op, 'removal_pending', by, { result: { record: publicRecord(rec), pending: true } });
        this.host.save();
        return 'pending';
      }
    }
    const rolledBack = rec.state === 'attaching';
    await this.finishRemoval(kind, rec, mon, by);
    return rolledBack ? 'rolled back' : 'completed';
  }

  /** At a start (QEMU not running): an unconfirmed add does not come back, an asked removal is done. */
  dropPending(): void {
    const pending = allDevices(this.host.data()).filter(([, rec]) => rec.state);
    if (!pending.length) return;
    for (const [kind, rec] of pending) void this.releaseHost(kind, rec);
    for (const [kind, rec] of pending) {
      kind.forget(this.host.data(), rec.uuid);
      const removed = rec.state === 'detaching';
      for (const op of this.runner.openFor(rec.uuid)) {
        if (removed) this.runner.settle(op, 'succeeded', 'reconcile', { result: { record: publicRecord(rec), pending: false } });
        else this.runner.settle(op, 'failed', 'reconcile', { error: { code: 'ABORTED', message: `the instance stopped before the hot-add of ${kind.label} ${rec.uuid} was confirmed; it was dropped` } });
      }
    }
    this.host.save();
  }

  /**
   * Operations still running whose device has no intent left (e.g. the
   * process died between recording them and touching anything): settled by
   * what the runtime file holds.
   */
  async settleOrphanOperations(inFlight: (id: string) => boolean): Promise<void> {
    let changed = false;
    for (const op of this.host.journal().records.filter((o) => o.state === 'running' && o.kind !== 'resources')) {
      if (inFlight(op.id)) continue;
      const rec = findDevice(this.host.data(), op.uuid, Object.values(DEVICE_KINDS).filter((k) => k.operationKind === op.kind))?.[1];
      // A disk grow in progress is settled by disk-modify.ts settleGrows.
      if (rec?.state || (rec && 'grow_to' in rec && rec.grow_to)) continue;
      if (op.action === 'modify' && !rec) {
        await this.restoreModified(op);
        continue;
      }
      const holds = op.action === 'remove' ? !rec : !!rec;
      const result = op.action === 'remove' ? { record: { uuid: op.uuid }, pending: false } : rec ? publicRecord(rec) : undefined;
      if (holds) this.runner.settle(op, 'succeeded', 'reconcile', { result });
      else this.runner.settle(op, 'failed', 'reconcile', { error: { code: 'ABORTED', message: `operation ${op.id} was interrupted before it changed anything` } });
      changed = true;
    }
    if (changed) this.host.save();
  }

  /** A NIC modify cut off between the removal and the new add: the old NIC goes back at its slot. */
  private async restoreModified(op: OperationRecord): Promise<void> {
    const before = (op.request as { before?: NicRecord } | undefined)?.before;
    let how: string;
    try {
      if (!before) throw new InstanceStateError('the old NIC was not recorded');
      await this.addNic(requestOf(before));
      how = 'the old NIC was put back at its slot';
    } catch (err) {
      how = `putting the old NIC back failed (${errorMessage(err)}): the NIC is gone from the instance`;
    }
    this.runner.settle(op, 'failed', 'reconcile', { error: { code: 'ABORTED', message: `the modify of NIC ${op.uuid} was interrupted after the old NIC was removed; ${how}` } });
    this.host.save();
  }
}
