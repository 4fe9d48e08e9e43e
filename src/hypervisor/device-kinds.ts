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
import { attachDisk, detachDisk, diskId, diskKind, releaseDisk } from './disk';
import type { HostPathPolicy } from './host-paths';
import { attachNic, detachNic, nicId, prepareNicTap, releaseNic, validateNic, type NicDeviceOptions } from './nic';
import type { Monitor } from './qmp-client';
import type { DiskRecord, NicRecord, RuntimeData } from './runtime-file';
import type { UnplugKind } from './unplug-timeouts';

export type DeviceKindName = 'nic' | 'disk';
export type DeviceRecord = NicRecord | DiskRecord;

/** What an attach may need from the instance. */
export interface AttachContext {
  nicOptions: NicDeviceOptions;
  /** The only way to open a host file for the device (host-paths.ts). */
  hostPaths: HostPathPolicy;
}

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
  /** Frees what the node made on the host for the device (a disk file it created); after the save that dropped it. */
  releaseHost(rec: R, ctx: AttachContext): void;
}

export const NIC_KIND: DeviceKind<NicRecord> = {
  name: 'nic',
  label: 'NIC',
  unplugKind: 'nic',
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
  records: (data) => data.block_devices,
  forget: (data, uuid) => {
    data.block_devices = data.block_devices.filter((d) => d.uuid !== uuid);
  },
  id: (rec, slot) => diskId(rec, slot),
  validate: (rec) => void diskKind(rec.path),
  attach: (mon, rec, slot, ctx) => attachDisk(mon, rec, slot, ctx.hostPaths),
  detach: (mon, rec, slot, timeoutMs) => detachDisk(mon, rec, slot, timeoutMs),
  release: (mon, rec, slot) => releaseDisk(mon, rec, slot),
  // A file the node created goes by resolution beneath the storage directory (host-paths.ts), never by following its path.
  releaseHost: (rec, ctx) => {
    if (rec.created) ctx.hostPaths.removeDiskFile(rec.path);
  },
};

export const DEVICE_KINDS: Readonly<Record<DeviceKindName, DeviceKind>> = {
  nic: NIC_KIND as unknown as DeviceKind,
  disk: DISK_KIND as unknown as DeviceKind,
};

export const deviceKind = (name: DeviceKindName): DeviceKind => DEVICE_KINDS[name];

/** Every device record of the instance, with its kind. */
export function allDevices(data: RuntimeData): Array<[DeviceKind, DeviceRecord]> {
  return Object.values(DEVICE_KINDS).flatMap((k) => k.records(data).map((r): [DeviceKind, DeviceRecord] => [k, r]));
}

/** The device id of a record with a slot. */
export const idOf = (kind: DeviceKind, rec: DeviceRecord): string => kind.id(rec, rec.pci as number);
