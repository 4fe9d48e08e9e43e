/**
 * The node's side of the disk kinds: which hypervisor kind a proto Disk
 * asks for (disk_bus "scsi": a LUN on the virtio-scsi controller;
 * disk_type "pmem": a virtio-pmem device; neither: virtio-blk), and every
 * kind's record as a proto Disk.
 */
import { excerpt } from '../common/excerpt';
import { backingFields, isAdopted, parseRbdImage, rbdPath, templateOf, type DiskBacking } from '../hypervisor/disk-template';
import type { Disk } from '../generated/gnt/node/v1/Disk';
import { pmemId } from '../hypervisor/pmem';
import type { DiskRecord, PmemRecord, ScsiDiskRecord } from '../hypervisor/runtime-file';
import { scsiAddress, scsiDiskId } from '../hypervisor/scsi-disk';
import { failedPrecondition, invalidArgument } from './status';

export type DiskFlavour = 'blk' | 'scsi' | 'pmem';
export type AnyDiskRecord = DiskRecord | ScsiDiskRecord | PmemRecord;

const MiB = 1024 * 1024;

/** The kind a Disk asks for; refuses unknown values and combinations that cannot be. */
export function diskFlavour(d: Pick<Disk, 'uuid' | 'diskBus' | 'diskType' | 'path'>): DiskFlavour {
  const bus = d.diskBus ?? '';
  const type = d.diskType ?? '';
  if (!['', 'virtio', 'scsi'].includes(bus)) throw invalidArgument(`disk ${d.uuid}: disk_bus ${excerpt(bus)} is not known (virtio or scsi)`);
  if (!['', 'disk', 'pmem'].includes(type)) throw invalidArgument(`disk ${d.uuid}: disk_type ${excerpt(type)} is not known (disk or pmem)`);
  if (type === 'pmem' && bus === 'scsi') throw invalidArgument(`disk ${d.uuid}: a pmem device is not on a bus; disk_bus=scsi and disk_type=pmem do not go together`);
  if (type === 'pmem' && d.path) throw invalidArgument(`disk ${d.uuid}: a pmem device is backed by a file the node creates; give its size, not a path`);
  return type === 'pmem' ? 'pmem' : bus === 'scsi' ? 'scsi' : 'blk';
}

/** A pmem device's size in MiB from the proto's bytes (whole MiB). */
export function pmemMiB(uuid: string, sizeBytes: number): number {
  if (!Number.isInteger(sizeBytes / MiB) || sizeBytes <= 0) throw invalidArgument(`pmem device ${uuid}: size_bytes ${sizeBytes} is not a whole number of MiB`);
  return sizeBytes / MiB;
}

const isScsi = (r: AnyDiskRecord): r is ScsiDiskRecord => 'target' in r;
const isPmem = (r: AnyDiskRecord): r is PmemRecord => 'sizeMiB' in r;

/** The proto Disk of any disk kind's record; `base` is the virtio-blk conversion (spec.ts diskToProto). */
export function anyDiskToProto(rec: AnyDiskRecord, base: (d: DiskRecord) => Disk): Disk {
  if (isScsi(rec))
    return { ...base({ uuid: rec.uuid, path: rec.path, pci: null, ...(rec.state ? { state: rec.state } : {}), ...(rec.created ? { created: true } : {}), ...backingFields(rec) }), deviceId: scsiDiskId(rec), diskBus: 'scsi', scsiAddress: scsiAddress(rec) };
  if (isPmem(rec)) {
    const out = { ...base({ uuid: rec.uuid, path: rec.path, pci: rec.pci, ...(rec.bus === undefined ? {} : { bus: rec.bus }), ...(rec.state ? { state: rec.state } : {}) }), diskType: 'pmem', sizeBytes: String(rec.sizeMiB * MiB) };
    return rec.pci === null ? out : { ...out, deviceId: pmemId(rec, rec.pci) };
  }
  return base(rec);
}

/** Where a requested disk's data lives and what the node does with it. */
export interface RequestedBacking {
  backing: DiskBacking;
  /** The host path (file, blockdev) or rbd:POOL/IMAGE; "" when the node makes a file at its default path. */
  path: string;
  /** The node makes it (a file, an RBD image) and deletes it when the disk goes. */
  create: boolean;
}

/**
 * The template of a proto Disk, checked: "" or "file" (path empty: the node
 * makes a file; a path: an existing file or block device, as before
 * templates), "blockdev" (an existing device at path, adopted), "rbd"
 * (refused here: this node has no RBD configured).
 */
export function requestedBacking(d: Pick<Disk, 'uuid' | 'template' | 'path' | 'rbdPool' | 'rbdImage' | 'diskType'>, nodeName: string): RequestedBacking {
  const t = d.template ?? '';
  const path = d.path ?? '';
  if (path && !path.startsWith('/')) throw invalidArgument(`disk ${d.uuid}: path ${excerpt(path)} is not absolute`);
  if ((t === 'blockdev' || t === 'rbd') && d.diskType === 'pmem') throw invalidArgument(`disk ${d.uuid}: a pmem device is a file the node makes; it cannot be a ${t} disk`);
  if (t === '' || t === 'file') {
    if (d.rbdPool || d.rbdImage) throw invalidArgument(`disk ${d.uuid}: rbd_pool and rbd_image belong to template "rbd", not "file"`);
    return { backing: {}, path, create: path === '' };
  }
  if (t === 'blockdev') {
    if (!path) throw invalidArgument(`disk ${d.uuid}: a blockdev disk adopts an existing block device: give its path (e.g. /dev/sdb)`);
    return { backing: { template: 'blockdev' }, path, create: false };
  }
  if (t === 'rbd') {
    if (path) throw invalidArgument(`disk ${d.uuid}: an rbd disk has no host path; give rbd_pool and rbd_image to adopt an image, or neither to have one made`);
    const image = d.rbdImage ? parseRbdImage(`${d.rbdPool ?? ''}/${d.rbdImage}`) : undefined;
    if (d.rbdImage && !image) throw invalidArgument(`disk ${d.uuid}: rbd image ${excerpt(`${d.rbdPool ?? ''}/${d.rbdImage}`)} is not POOL/IMAGE (letters, digits, ".", "_", "-")`);
    throw failedPrecondition(`disk ${d.uuid}: node ${nodeName} has no RBD configured (start gnt-noded with --rbd-monitors, --rbd-pool, --rbd-keyring)${image ? ` to adopt ${rbdPath(image)}` : ''}`);
  }
  throw invalidArgument(`disk ${d.uuid}: template ${excerpt(t)} is not known (file, blockdev or rbd)`);
}

/** The template fields of a record, as the proto Disk carries them. */
export function backingToProto(rec: DiskBacking & { created?: boolean }): Pick<Disk, 'template' | 'adopted' | 'rbdPool' | 'rbdImage'> {
  return { template: templateOf(rec), adopted: isAdopted(rec), rbdPool: rec.rbd?.pool ?? '', rbdImage: rec.rbd?.image ?? '' };
}
