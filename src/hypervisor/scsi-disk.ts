/**
 * SCSI disks (scsi-hd LUNs on one virtio-scsi-pci controller). A SCSI disk
 * takes no PCI slot: only the controller does, one for all of them. QEMU
 * never opens the host path: as for virtio-blk (disk.ts), we open it
 * through the node's HostPathPolicy and pass the fd.
 *   controller -> virtio-scsi-pci, id scsi0, at a slot from the instance's
 *                 SlotOwner; created at a start with SCSI disks or with the
 *                 first hot-added one; recorded (scsi_controller) so a
 *                 restart or a migration target puts it at the same slot
 *   attach     -> add-fd (opaque = device id), blockdev-add on
 *                 /dev/fdset/N, device_add scsi-hd on scsi0.0 at
 *                 channel 0, scsi-id/lun from scsi-luns.ts (each step
 *                 undone if a later one fails)
 *   detach     -> device_del, wait until QEMU no longer lists the device
 *   release    -> blockdev-del, remove-fd (as disk.ts)
 */
import { assertValidId, uuidPart } from './device-id';
import { attachBacked, blockdevOptions, releaseBacked, type BackingContext, type DiskKind } from './disk';
import { deleteDevice, deviceExists, pciPlacement } from './qdev';
import type { PciPlacement } from './pci-slots';
import type { Monitor } from './qmp-client';
import type { RuntimeData, ScsiControllerRecord, ScsiDiskRecord } from './runtime-file';
import { assertScsiAddress, chooseScsiAddress, type ScsiAddress } from './scsi-luns';

/** The one controller's QEMU id; its bus is `scsi0.0`. */
export const SCSI_CONTROLLER_ID = 'scsi0';

/** `scsi-<uuid part>-<target>-<lun>`, e.g. `scsi-3f2a9c1e-5-0` (at most 22 characters for a uuid). */
export function scsiDiskId(disk: ScsiDiskRecord): string {
  assertScsiAddress(disk);
  return assertValidId(`scsi-${uuidPart(disk.uuid)}-${disk.target}-${disk.lun}`);
}

/** "scsi0:T:L", the address the node reports (proto Disk.scsi_address). */
export const scsiAddress = (disk: ScsiAddress): string => `${SCSI_CONTROLLER_ID}:${disk.target}:${disk.lun}`;

/** The address a new SCSI disk of `data` gets (every record counts, pending ones too). */
export const nextScsiAddress = (data: RuntimeData): ScsiAddress => chooseScsiAddress(data.instance, data.scsi_disks ?? []);

function scsiHdProps(disk: ScsiDiskRecord): Record<string, string | number> {
  const id = scsiDiskId(disk);
  return { driver: 'scsi-hd', id, drive: id, bus: `${SCSI_CONTROLLER_ID}.0`, channel: 0, 'scsi-id': disk.target, lun: disk.lun };
}

const controllerProps = (c: ScsiControllerRecord): Record<string, string> => ({ driver: 'virtio-scsi-pci', id: c.id, ...pciPlacement(c, c.pci) });

const toDeviceArg = (props: Record<string, string | number>): string =>
  [props.driver, ...Object.entries(props).filter(([k]) => k !== 'driver').map(([k, v]) => `${k}=${v}`)].join(',');

/** QEMU arguments that create the controller at boot. */
export const scsiControllerBootArgs = (c: ScsiControllerRecord): string[] => ['-device', toDeviceArg(controllerProps(c))];

/** QEMU arguments that create a SCSI disk at boot (after its controller), its fd at child fd `childFd`. */
export function scsiDiskBootArgs(disk: ScsiDiskRecord, childFd: number, fdset: number, kind: DiskKind): string[] {
  const id = scsiDiskId(disk);
  return [
    '-add-fd', `fd=${childFd},set=${fdset},opaque=${id}`,
    '-blockdev', JSON.stringify(blockdevOptions(id, kind, fdset)),
    '-device', toDeviceArg(scsiHdProps(disk)),
  ];
}

/**
 * Makes sure QEMU has the controller: recorded and present, nothing to do;
 * recorded but gone (the guest ejected it), added again at its slot; none
 * yet, added at `place()` and recorded first (`save`), so a crash leaves a
 * record whose slot stays reserved, never a controller no record names. A
 * refused device_add drops a new record again.
 */
export async function ensureScsiController(mon: Monitor, data: RuntimeData, place: () => Promise<PciPlacement>, save: () => void): Promise<void> {
  const had = data.scsi_controller;
  // One qom-list, not the bus too: a controller still in /machine/peripheral takes LUNs (one on its way out
  // is off that list first, and then its re-add at the same slot is refused while it still holds the slot).
  if (had && (await deviceExists(mon, had.id))) return;
  const at = had ? undefined : await place();
  const c: ScsiControllerRecord = had ?? { id: SCSI_CONTROLLER_ID, pci: (at as PciPlacement).slot, ...(at?.bus === undefined ? {} : { bus: at.bus }) };
  if (!had) {
    data.scsi_controller = c;
    save();
  }
  try {
    await mon.execute('device_add', controllerProps(c));
  } catch (err) {
    if (!had) {
      delete data.scsi_controller;
      save();
    }
    throw err;
  }
}

/** Hot-adds the disk as a LUN on the controller. Undoes every step on failure. */
export async function attachScsiDisk(mon: Monitor, disk: ScsiDiskRecord, ctx: BackingContext): Promise<void> {
  await attachBacked(mon, 'SCSI disk', scsiDiskId(disk), disk, ctx, scsiHdProps(disk));
}

export async function detachScsiDisk(mon: Monitor, disk: ScsiDiskRecord, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, scsiDiskId(disk), timeoutMs);
}

/** Frees the disk's block node and fdset (or RBD secret); harmless when already gone. */
export async function releaseScsiDisk(mon: Monitor, disk: ScsiDiskRecord): Promise<void> {
  await releaseBacked(mon, scsiDiskId(disk), disk);
}

/** The -device of a LUN at boot, on the block node named by its id (an RBD LUN's -blockdev comes from rbd-disk.ts). */
export const scsiHdDeviceArgs = (disk: ScsiDiskRecord): string[] => ['-device', toDeviceArg(scsiHdProps(disk))];
