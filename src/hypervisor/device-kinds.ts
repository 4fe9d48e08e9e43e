/**
 * The device kinds that live on a PCI slot and have a record of their own in
 * the runtime file (NICs, disks), each a module (nic.ts, disk.ts) behind one
 * interface, and the registry that maps a kind's name to it. Everything in
 * the instance that works on "a device" (add, remove, the one removal ending,
 * reconcile, verify) goes through this interface, never through a branch on
 * the kind. A new kind is a module implementing DeviceKind, an entry in
 * DEVICE_KINDS, its runtime-file list and its proto message (see
 * docs/reliability.md, "Adding a device kind").
 */
import * as fs from 'node:fs';
import { attachDisk, detachDisk, diskId, diskKind, releaseDisk, type BackingContext } from './disk';
import { nodeMadeImage, rbdImageOf, type RbdHost } from './rbd-disk';
import type { DiskBacking } from './disk-template';
import type { HostPathPolicy } from './host-paths';
import { attachNic, detachNic, nicId, prepareNicTap, releaseNic, validateNic, type NicDeviceOptions } from './nic';
import type { OperationKind } from './operations';
import { PMEM_UNPLUG_REFUSAL, attachPmem, detachPmem, pmemId, releasePmem } from './pmem';
import type { Monitor } from './qmp-client';
import type { DiskRecord, HvParams, NicRecord, PmemRecord, RuntimeData, ScsiDiskRecord } from './runtime-file';
import { attachScsiDisk, detachScsiDisk, releaseScsiDisk, scsiDiskId } from './scsi-disk';
import type { UnplugKind } from './unplug-timeouts';

export type DeviceKindName = 'nic' | 'disk' | 'scsi-disk' | 'pmem';
export type DeviceRecord = NicRecord | DiskRecord | ScsiDiskRecord | PmemRecord;
/** The records of the kinds that hold a PCI slot of their own. */
export type PciDeviceRecord = NicRecord | DiskRecord | PmemRecord;

/** What an attach may need from the instance. */
export interface AttachContext {
  nicOptions: NicDeviceOptions;
  /** The only way to open a host file for the device (host-paths.ts). */
  hostPaths: HostPathPolicy;
  /** The instance's hvparams (who QEMU runs as: a pmem file is given to that user). */
  hvparams: HvParams;
  /** The node's RBD access (gnt-noded --rbd-*), if configured. */
  rbd?: RbdHost;
}

/** What a disk's backing needs from the attach context. */
const backing = (ctx: AttachContext): BackingContext => {
  const chroot = ctx.hvparams.chroot;
  return { hostPaths: ctx.hostPaths, ...(ctx.rbd ? { rbd: ctx.rbd } : {}), ...(typeof chroot === 'string' && chroot ? { chroot } : {}) };
};

/** A disk's kind is checked by its host path; an RBD disk has none. */
const validateBacking = (rec: { path: string } & DiskBacking): void => {
  if (!rbdImageOf(rec)) diskKind(rec.path);
};

/** Host resources made for a device before its intent is recorded (a NIC's tap), held by this process until QEMU has its own copy. */
export interface HostPrep {
  /** The host fds QEMU gets (a multi-queue NIC's tap has one per queue). */
  fds: number[];
  close(): void;
}

export interface DeviceKind<R extends DeviceRecord = DeviceRecord> {
  readonly name: DeviceKindName;
  /** How people call it in messages: "NIC", "disk". */
  readonly label: string;
  readonly unplugKind: UnplugKind;
  /** The kind its operations are journaled under (a SCSI disk is a "disk" to the master). */
  readonly operationKind: OperationKind;
  /**
   * Whether each device holds a PCI slot of its own (`rec.pci`); a SCSI
   * LUN does not (its controller does, see scsi-disk.ts). Generic code
   * asks this, never the kind's name.
   */
  readonly takesPciSlot: boolean;
  /** Why a hot remove cannot be done (QEMU refuses it for the kind); undefined: it can. */
  readonly hotRemoveRefusal?: string;
  /** The instance's records of this kind (the live list: callers may push to it). */
  records(data: RuntimeData): R[];
  /** Drops the record with this uuid. */
  forget(data: RuntimeData, uuid: string): void;
  /** Its QEMU device id at `slot`. */
  id(rec: R, slot: number): string;
  /** Checks what can be checked before anything is touched. */
  validate(rec: R): void;
  /**
   * Makes the host side before the intent is saved, recording its name in
   * the record (a NIC's tap). Dies with this process if it crashes before
   * QEMU holds it, so nothing is left that no record names.
   */
  prepareHost?(rec: R): Promise<HostPrep>;
  /** The QMP steps of a hot-add (each undone if a later one fails). */
  attach(mon: Monitor, rec: R, slot: number, ctx: AttachContext, prep: HostPrep | undefined): Promise<void>;
  /** device_del and wait until QEMU no longer lists the device. */
  detach(mon: Monitor, rec: R, slot: number, timeoutMs: number): Promise<void>;
  /** Frees the QEMU backends (netdev, named fd; block node, fdset); harmless when gone. */
  release(mon: Monitor, rec: R, slot: number): Promise<void>;
  /**
   * Frees what the node made for the device (a disk file or RBD image it
   * created), while the record still names it. An RBD image goes through
   * the rbd CLI: the promise settles when it is gone.
   */
  releaseHost(rec: R, ctx: AttachContext): void | Promise<void>;
}

export const NIC_KIND: DeviceKind<NicRecord> = {
  name: 'nic',
  label: 'NIC',
  unplugKind: 'nic',
  operationKind: 'nic',
  takesPciSlot: true,
  records: (data) => data.nics,
  forget: (data, uuid) => {
    data.nics = data.nics.filter((n) => n.uuid !== uuid);
  },
  id: (rec, slot) => nicId(rec, slot),
  validate: (rec) => validateNic(rec),
  prepareHost: async (rec) => {
    const tap = await prepareNicTap(rec);
    rec.tap = tap.name;
    let open = true;
    return {
      fds: tap.fds,
      close: () => {
        if (open) for (const fd of tap.fds) fs.closeSync(fd);
        open = false;
      },
    };
  },
  attach: (mon, rec, slot, ctx, prep) => attachNic(mon, rec, slot, ctx.nicOptions, (prep as HostPrep).fds),
  detach: (mon, rec, slot, timeoutMs) => detachNic(mon, rec, slot, timeoutMs),
  release: (mon, rec, slot) => releaseNic(mon, rec, slot),
  releaseHost: () => undefined, // the tap goes with QEMU's last fd of it
};

export const DISK_KIND: DeviceKind<DiskRecord> = {
  name: 'disk',
  label: 'disk',
  unplugKind: 'disk',
  operationKind: 'disk',
  takesPciSlot: true,
  records: (data) => data.block_devices,
  forget: (data, uuid) => {
    data.block_devices = data.block_devices.filter((d) => d.uuid !== uuid);
  },
  id: (rec, slot) => diskId(rec, slot),
  validate: validateBacking,
  attach: (mon, rec, slot, ctx) => attachDisk(mon, rec, slot, backing(ctx)),
  detach: (mon, rec, slot, timeoutMs) => detachDisk(mon, rec, slot, timeoutMs),
  release: (mon, rec, slot) => releaseDisk(mon, rec, slot),
  releaseHost: (rec, ctx) => removeCreated(rec, ctx),
};

/**
 * What the node created for a disk goes: a file by resolution beneath the
 * storage directory (host-paths.ts), never by following its path; an RBD
 * image it made (not an adopted one) by the node's rbd CLI.
 */
function removeCreated(rec: { created?: boolean; path: string } & DiskBacking, ctx: AttachContext): void | Promise<void> {
  const img = rbdImageOf(rec);
  if (img) {
    if (!nodeMadeImage(rec)) return undefined;
    return ctx.rbd?.removeImage(img);
  }
  if (rec.created) ctx.hostPaths.removeDiskFile(rec.path);
}

export const SCSI_DISK_KIND: DeviceKind<ScsiDiskRecord> = {
  name: 'scsi-disk',
  label: 'SCSI disk',
  unplugKind: 'disk',
  operationKind: 'disk',
  takesPciSlot: false,
  records: (data) => (data.scsi_disks ??= []),
  forget: (data, uuid) => {
    data.scsi_disks = (data.scsi_disks ?? []).filter((d) => d.uuid !== uuid);
  },
  id: (rec) => scsiDiskId(rec),
  validate: validateBacking,
  attach: (mon, rec, _slot, ctx) => attachScsiDisk(mon, rec, backing(ctx)),
  detach: (mon, rec, _slot, timeoutMs) => detachScsiDisk(mon, rec, timeoutMs),
  release: (mon, rec) => releaseScsiDisk(mon, rec),
  releaseHost: removeCreated,
};

export const PMEM_KIND: DeviceKind<PmemRecord> = {
  name: 'pmem',
  label: 'pmem device',
  unplugKind: 'disk',
  operationKind: 'disk',
  takesPciSlot: true,
  hotRemoveRefusal: PMEM_UNPLUG_REFUSAL,
  records: (data) => (data.pmem_devices ??= []),
  forget: (data, uuid) => {
    data.pmem_devices = (data.pmem_devices ?? []).filter((d) => d.uuid !== uuid);
  },
  id: (rec, slot) => pmemId(rec, slot),
  validate: (rec) => void diskKind(rec.path),
  attach: (mon, rec, slot, ctx) => attachPmem(mon, rec, slot, ctx.hostPaths, ctx.hvparams),
  detach: (mon, rec, slot, timeoutMs) => detachPmem(mon, rec, slot, timeoutMs),
  release: (mon, rec, slot) => releasePmem(mon, rec, slot),
  releaseHost: removeCreated,
};

export const DEVICE_KINDS: Readonly<Record<DeviceKindName, DeviceKind>> = {
  nic: NIC_KIND as unknown as DeviceKind,
  disk: DISK_KIND as unknown as DeviceKind,
  'scsi-disk': SCSI_DISK_KIND as unknown as DeviceKind,
  pmem: PMEM_KIND as unknown as DeviceKind,
};

export const deviceKind = (name: DeviceKindName): DeviceKind => DEVICE_KINDS[name];

/** Every device record of the instance, with its kind. */
export function allDevices(data: RuntimeData): Array<[DeviceKind, DeviceRecord]> {
  return Object.values(DEVICE_KINDS).flatMap((k) => k.records(data).map((r): [DeviceKind, DeviceRecord] => [k, r]));
}

/** The PCI slot a record holds: a number; null for an old record that has none yet; undefined for a kind that takes none. */
export const slotOf = (kind: DeviceKind, rec: DeviceRecord): number | null | undefined => (kind.takesPciSlot ? (rec as PciDeviceRecord).pci : undefined);

/** Whether the record has its place (a PCI slot where the kind takes one): a record from an old runtime file may lack it. */
export const isPlaced = (kind: DeviceKind, rec: DeviceRecord): boolean => slotOf(kind, rec) !== null;

/** The device id of a placed record. */
export const idOf = (kind: DeviceKind, rec: DeviceRecord): string => kind.id(rec, slotOf(kind, rec) as number);

/** The kind whose records hold this uuid, with the record. */
export function findDevice(data: RuntimeData, uuid: string, among: readonly DeviceKind[] = Object.values(DEVICE_KINDS)): [DeviceKind, DeviceRecord] | undefined {
  for (const k of among) {
    const rec = k.records(data).find((r) => r.uuid === uuid);
    if (rec) return [k, rec];
  }
  return undefined;
}
