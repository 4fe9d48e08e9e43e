/**
 * A configured disk's template as the node's Disk carries it: a blockdev
 * disk's device is its path; an adopted RBD image is rbd_pool/rbd_image; an
 * RBD disk the node makes has neither (the node picks pool and name).
 */
import type { Disk } from '../../generated/gnt/node/v1/Disk';

export function diskBackingProto(template: string, adopt: string): Pick<Disk, 'template' | 'path' | 'rbdPool' | 'rbdImage'> {
  if (template === 'blockdev') return { template, path: adopt, rbdPool: '', rbdImage: '' };
  if (template === 'rbd') {
    const [pool = '', image = ''] = adopt ? adopt.split('/') : [];
    return { template, path: '', rbdPool: pool, rbdImage: image };
  }
  return { template: '', path: '', rbdPool: '', rbdImage: '' };
}

/** How a disk's template reads in job logs and `gnt-instance info`: "file", "blockdev /dev/sdb", "rbd rbd/img (adopted)". */
export function describeBacking(template: string, adopt: string): string {
  if (template === 'blockdev') return `blockdev ${adopt}`;
  if (template === 'rbd') return adopt ? `rbd ${adopt} (adopted)` : 'rbd';
  return 'file';
}

/** The config flavour of a disk as the node reports it (a disk the config must take over from the node). */
export function flavourOfNodeDisk(d: Pick<Disk, 'diskBus' | 'diskType' | 'template' | 'adopted' | 'path' | 'rbdPool' | 'rbdImage'>): { diskBus: string; diskType: string; template: string; adopt: string } {
  const template = d.template === 'blockdev' || d.template === 'rbd' ? d.template : '';
  const adopt = !d.adopted ? '' : template === 'blockdev' ? d.path ?? '' : template === 'rbd' ? `${d.rbdPool ?? ''}/${d.rbdImage ?? ''}` : '';
  return { diskBus: d.diskBus ?? '', diskType: d.diskType ?? '', template, adopt };
}
