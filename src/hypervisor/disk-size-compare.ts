/**
 * Verify's look at disk grows (pure): a grow left open (grow_to: its backing
 * store may have grown, QEMU's block_resize not yet) is reported until the
 * node's reconcile finishes it; a disk whose recorded size (size_bytes,
 * set by a grow) is not QEMU's (query-named-block-nodes virtual-size) is a
 * difference. Neither has a repair of verify's own: reconcile finishes an
 * open grow, and `gnt-instance grow-disk` to the recorded size (or a
 * restart) makes QEMU follow a record.
 */
import { DISK_KIND, SCSI_DISK_KIND, type DeviceKind } from './device-kinds';
import { aboutRecord, describeRecord, finding, idOfRecord, type Finding } from './inventory-findings';
import type { QemuInventory } from './qemu-inventory';
import type { DiskRecord, RuntimeData, ScsiDiskRecord } from './runtime-file';

const KINDS: readonly DeviceKind[] = [DISK_KIND as unknown as DeviceKind, SCSI_DISK_KIND as unknown as DeviceKind];

export function compareDiskSizes(rt: RuntimeData, q: QemuInventory): Finding[] {
  const size = new Map(q.blockNodes.filter((n) => n.size !== undefined).map((n) => [n.nodeName, n.size as number]));
  const out: Finding[] = [];
  for (const kind of KINDS) {
    for (const rec of kind.records(rt) as Array<DiskRecord | ScsiDiskRecord>) {
      const id = idOfRecord(kind.name, rec);
      if (id === undefined || rec.state) continue;
      const device = describeRecord(kind.name, rec);
      const about = aboutRecord(rec.uuid);
      const has = size.get(id);
      if (rec.grow_to)
        out.push(about(finding(device, 'grow-unfinished', `a grow to ${rec.grow_to} bytes is not finished (QEMU has ${has ?? 'no size for'} ${has === undefined ? 'it' : 'bytes'}); the node finishes it at its next reconcile`)));
      else if (rec.size_bytes !== undefined && has !== undefined && has !== rec.size_bytes)
        out.push(about(finding(device, 'disk-size', `QEMU has ${has} bytes, the runtime file records ${rec.size_bytes} (the size of its last grow)`)));
    }
  }
  return out;
}
