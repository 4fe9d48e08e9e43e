/**
 * Disk templates: where a disk's data lives.
 *   file     a file in the node's storage directory (created by the node) or,
 *            for records from before templates, any file it was given
 *   blockdev an existing block device the operator adopted (on the node's
 *            --block-device allow-list); the node never deletes it
 *   rbd      a Ceph RBD image QEMU reaches over the network with its own rbd
 *            driver; created by the node in its pool or adopted (POOL/IMAGE)
 * The runtime record keeps the template only when it is not `file`. Whether
 * the node may delete the backing is the record's `created` flag: adopted
 * devices and images are never `created`. Pure.
 */
import { isRbdName } from '../common/disk-flavour';
export const DISK_TEMPLATES = ['file', 'blockdev', 'rbd'] as const;
export type DiskTemplate = (typeof DISK_TEMPLATES)[number];

/** An RBD image: pool and image name (rbd template only). */
export interface RbdImage {
  pool: string;
  image: string;
}

/** The template fields a disk record carries (DiskRecord, ScsiDiskRecord). */
export interface DiskBacking {
  /** Absent: file. */
  template?: 'blockdev' | 'rbd';
  /** rbd only. */
  rbd?: RbdImage;
}

export const templateOf = (rec: DiskBacking): DiskTemplate => rec.template ?? 'file';

/** Whether the node took this backing over from the operator (never deletes it). */
export const isAdopted = (rec: DiskBacking & { created?: boolean }): boolean => rec.template !== undefined && rec.created !== true;

/** The informational path of an RBD image in runtime records ("rbd:POOL/IMAGE"); never opened. */
export const rbdPath = (img: RbdImage): string => `rbd:${img.pool}/${img.image}`;

/** The template fields of `b`, only those set (to spread into a record). */
export function backingFields(b: DiskBacking): DiskBacking {
  if (b.template === 'rbd' && b.rbd) return { template: 'rbd', rbd: { pool: b.rbd.pool, image: b.rbd.image } };
  if (b.template === 'blockdev') return { template: 'blockdev' };
  return {};
}


/** Parses "POOL/IMAGE"; undefined when it is not one. */
export function parseRbdImage(s: string): RbdImage | undefined {
  const parts = s.split('/');
  if (parts.length !== 2 || !isRbdName(parts[0]) || !isRbdName(parts[1])) return undefined;
  return { pool: parts[0], image: parts[1] };
}
