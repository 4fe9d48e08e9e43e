/**
 * The node's side of the disk kinds: which hypervisor kind a proto Disk
 * asks for (disk_bus "scsi": a LUN on the virtio-scsi controller;
 * disk_type "pmem": a virtio-pmem device; neither: virtio-blk), and every
 * kind's record as a proto Disk.
 */
import { excerpt } from '../common/excerpt';
import type { Disk } from '../generated/gnt/node/v1/Disk';
import { pmemId } from '../hypervisor/pmem';
import type { DiskRecord, PmemRecord, ScsiDiskRecord } from '../hypervisor/runtime-file';
import { scsiAddress, scsiDiskId } from '../hypervisor/scsi-disk';
import { invalidArgument } from './status';

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

const sizeAndLimits = (r: ScsiDiskRecord): Pick<DiskRecord, 'size_bytes' | 'io_limits'> => ({
  ...(r.size_bytes ? { size_bytes: r.size_bytes } : {}),
  ...(r.io_limits ? { io_limits: r.io_limits } : {}),
});

const isScsi = (r: AnyDiskRecord): r is ScsiDiskRecord => 'target' in r;
const isPmem = (r: AnyDiskRecord): r is PmemRecord => 'sizeMiB' in r;

/** The proto Disk of any disk kind's record; `base` is the virtio-blk conversion (spec.ts diskToProto). */
export function anyDiskToProto(rec: AnyDiskRecord, base: (d: DiskRecord) => Disk): Disk {
  if (isScsi(rec))
    return { ...base({ uuid: rec.uuid, path: rec.path, pci: null, ...(rec.state ? { state: rec.state } : {}), ...sizeAndLimits(rec) }), deviceId: scsiDiskId(rec), diskBus: 'scsi', scsiAddress: scsiAddress(rec) };
  if (isPmem(rec)) {
    const out = { ...base({ uuid: rec.uuid, path: rec.path, pci: rec.pci, ...(rec.bus === undefined ? {} : { bus: rec.bus }), ...(rec.state ? { state: rec.state } : {}) }), diskType: 'pmem', sizeBytes: String(rec.sizeMiB * MiB) };
    return rec.pci === null ? out : { ...out, deviceId: pmemId(rec, rec.pci) };
  }
  return base(rec);
}
