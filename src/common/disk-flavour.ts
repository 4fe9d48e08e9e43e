/**
 * The disk kinds master and node agree on: bus "virtio" (virtio-blk, the
 * default) or "scsi" (a LUN on the instance's virtio-scsi controller), type
 * "disk" (the default) or "pmem" (a file-backed virtio-pmem device, not on
 * any bus). Pure.
 */
export const DISK_BUSES = ['virtio', 'scsi'] as const;
export const DISK_TYPES = ['disk', 'pmem'] as const;

export interface DiskFlavourValues {
  /** "" (virtio) or "scsi", as stored and sent. */
  diskBus: string;
  /** "" (disk) or "pmem". */
  diskType: string;
}

/**
 * Checks bus= and type= (undefined: not given) and returns them normalized
 * ("virtio" and "disk" become ""), or the problem in words. `quote` quotes
 * untrusted input (excerpt()).
 */
export function diskFlavourOf(bus: string | undefined, type: string | undefined, quote: (v: string) => string): DiskFlavourValues | string {
  const b = bus ?? '';
  const t = type ?? '';
  if (b !== '' && !(DISK_BUSES as readonly string[]).includes(b)) return `bus=${quote(b)} is not known (bus=virtio or bus=scsi)`;
  if (t !== '' && !(DISK_TYPES as readonly string[]).includes(t)) return `type=${quote(t)} is not known (type=disk or type=pmem)`;
  if (t === 'pmem' && b === 'scsi') return 'a pmem device is not on a disk bus: bus=scsi and type=pmem do not go together';
  return { diskBus: b === 'virtio' ? '' : b, diskType: t === 'disk' ? '' : t };
}
