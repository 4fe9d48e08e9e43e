/**
 * The views of a disk's size that must agree after a grow (for the kill test
 * and others): the master's configuration, the node's runtime record
 * (size_bytes, and grow_to while a grow is open), the backing file, QEMU's
 * block node (query-block virtual-size) and the guest's sector count.
 */
import type { Monitor } from '../../src/hypervisor/qmp-client';
import { runtimeOf } from './runtime-text';

/** Every block node QEMU has that belongs to a device, with its size (bytes). */
export async function qemuDiskSizes(mon: Monitor): Promise<Map<string, number>> {
  const list = await mon.execute<Array<{ inserted?: { 'node-name'?: string; image?: { 'virtual-size'?: number } } }>>('query-block');
  const out = new Map<string, number>();
  for (const b of list) {
    const name = b.inserted?.['node-name'];
    const size = b.inserted?.image?.['virtual-size'];
    if (name && typeof size === 'number') out.set(name, size);
  }
  return out;
}

/** A runtime file record's size fields (disk or SCSI disk, by uuid); undefined when the file has no such disk. */
export function recordedDiskSize(runtimeFile: string, uuid: string): { sizeBytes?: number; growTo?: number; path: string } | undefined {
  const rt = runtimeOf(runtimeFile);
  const rec = [...rt.block_devices, ...(rt.scsi_disks ?? [])].find((d) => d.uuid === uuid);
  if (!rec) return undefined;
  return { sizeBytes: rec.size_bytes, growTo: rec.grow_to, path: rec.path };
}

export interface DiskSizeViews {
  config: number;
  /** The runtime record's size_bytes (absent: never grown) and grow_to (absent: no grow open). */
  record?: { sizeBytes?: number; growTo?: number };
  /** The backing file's size (file template); absent for devices. */
  file?: number;
  qemu?: number;
  guestSectors?: number;
}

/** Why the views do not agree, or undefined when they do (a record without size_bytes has the file's size). */
export function diskSizeDivergence(v: DiskSizeViews): string | undefined {
  const problems: string[] = [];
  if (v.record?.growTo !== undefined) problems.push(`a grow to ${v.record.growTo} is still open on the node`);
  const recorded = v.record?.sizeBytes ?? v.file;
  if (recorded !== undefined && recorded !== v.config) problems.push(`config ${v.config}, node ${recorded}`);
  if (v.file !== undefined && v.file !== v.config) problems.push(`config ${v.config}, file ${v.file}`);
  if (v.qemu !== undefined && v.qemu !== v.config) problems.push(`config ${v.config}, QEMU ${v.qemu}`);
  if (v.guestSectors !== undefined && v.guestSectors * 512 !== v.config) problems.push(`config ${v.config}, guest ${v.guestSectors * 512}`);
  return problems.length ? problems.join('; ') : undefined;
}
