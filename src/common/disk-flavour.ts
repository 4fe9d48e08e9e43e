/**
 * The disk kinds master and node agree on: bus "virtio" (virtio-blk, the
 * default) or "scsi" (a LUN on the instance's virtio-scsi controller), type
 * "disk" (the default) or "pmem" (a file-backed virtio-pmem device, not on
 * any bus), and the template: where the data lives ("file", the default;
 * "blockdev", an adopted block device; "rbd", a Ceph RBD image, made by the
 * node or adopted as POOL/IMAGE). Pure.
 */

export const DISK_BUSES = ['virtio', 'scsi'] as const;
export const DISK_TYPES = ['disk', 'pmem'] as const;
export const TEMPLATES = ['file', 'blockdev', 'rbd'] as const;

export interface DiskFlavourValues {
  /** "" (virtio) or "scsi", as stored and sent. */
  diskBus: string;
  /** "" (disk) or "pmem". */
  diskType: string;
  /** "" (file), "blockdev" or "rbd". */
  template: string;
  /** "" (the node makes it), "/dev/XYZ" (blockdev) or "POOL/IMAGE" (rbd). */
  adopt: string;
}

const RBD_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Whether `s` is a safe RBD pool or image name (letters, digits, ".", "_", "-"). */
export const isRbdName = (s: string): boolean => RBD_NAME.test(s) && !s.includes('..');

const DEVICE_PATH = /^\/dev\/[A-Za-z0-9._/-]{1,200}$/;

/** template= and adopt= checked together: the template (inferred from adopt when not given), or the problem. */
function templateOf(template: string, adopt: string, quote: (v: string) => string): { template: string; adopt: string } | string {
  if (template !== '' && !(TEMPLATES as readonly string[]).includes(template)) return `template=${quote(template)} is not known (template=file, blockdev or rbd)`;
  const t = template || (adopt === '' ? '' : adopt.startsWith('/') ? 'blockdev' : 'rbd');
  if (t === 'blockdev') {
    if (adopt === '') return 'template=blockdev adopts an existing block device: give adopt=/dev/XYZ';
    if (!DEVICE_PATH.test(adopt) || adopt.split('/').includes('..')) return `adopt=${quote(adopt)} is not a block device path under /dev (e.g. adopt=/dev/sdb)`;
  } else if (t === 'rbd') {
    const parts = adopt.split('/');
    if (adopt !== '' && (parts.length !== 2 || !parts.every(isRbdName))) return `adopt=${quote(adopt)} is not an RBD image POOL/IMAGE (letters, digits, ".", "_", "-")`;
  } else if (adopt !== '') {
    return `adopt= takes over a block device (template=blockdev) or an RBD image (template=rbd); template=${t} disks are files the node makes`;
  }
  return { template: t === 'file' ? '' : t, adopt };
}

/**
 * Checks bus=, type=, template= and adopt= (undefined: not given) and returns
 * them normalized ("virtio", "disk" and "file" become ""), or the problem in
 * words. `quote` quotes untrusted input (excerpt()).
 */
export function diskFlavourOf(bus: string | undefined, type: string | undefined, quote: (v: string) => string, template?: string, adopt?: string): DiskFlavourValues | string {
  const b = bus ?? '';
  const t = type ?? '';
  if (b !== '' && !(DISK_BUSES as readonly string[]).includes(b)) return `bus=${quote(b)} is not known (bus=virtio or bus=scsi)`;
  if (t !== '' && !(DISK_TYPES as readonly string[]).includes(t)) return `type=${quote(t)} is not known (type=disk or type=pmem)`;
  if (t === 'pmem' && b === 'scsi') return 'a pmem device is not on a disk bus: bus=scsi and type=pmem do not go together';
  const tpl = templateOf(template ?? '', adopt ?? '', quote);
  if (typeof tpl === 'string') return tpl;
  if (t === 'pmem' && tpl.template !== '') return `a pmem device is a file the node makes: type=pmem and template=${tpl.template} do not go together`;
  return { diskBus: b === 'virtio' ? '' : b, diskType: t === 'disk' ? '' : t, ...tpl };
}
