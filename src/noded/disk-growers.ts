/**
 * The node's grow table (src/hypervisor/disk-growers.ts): file and blockdev
 * through its HostPathPolicy; rbd through the node's RBD pool (`rbd resize`),
 * refused on a node without --rbd-* options. The file grower carries the crash point after-disk-grown (tests: the
 * window between the file's grow and QEMU's block_resize).
 */
import type { DiskGrowerTable } from '../hypervisor/disk-growers';
import { fileGrower } from '../hypervisor/disk-growers';
import type { HostPathPolicy } from '../hypervisor/host-paths';
import type { GrowableDisk } from '../hypervisor/disk-modify';
import type { RbdImage } from '../hypervisor/disk-template';
import { crashPoint } from './fault-injection';
import type { RbdPool } from './rbd-pool';
import { invalidArgument } from './status';

function imageOf(rec: GrowableDisk): RbdImage {
  if (!rec.rbd) throw invalidArgument(`disk ${rec.uuid} is an rbd disk without an image in its record`);
  return rec.rbd;
}

export function nodeDiskGrowers(hostPaths: HostPathPolicy, log: (line: string) => void, rbd?: RbdPool): Partial<DiskGrowerTable> {
  const file = fileGrower(hostPaths);
  return {
    ...(rbd
      ? {
          rbd: {
            size: async (rec) => (await rbd.assertExists(imageOf(rec))).sizeBytes,
            grow: (rec, bytes) => rbd.resizeImage(imageOf(rec).pool, imageOf(rec).image, bytes),
          },
        }
      : {}),
    file: {
      size: (rec) => file.size(rec),
      grow: async (rec, bytes) => {
        await file.grow(rec, bytes);
        crashPoint('after-disk-grown', log);
      },
    },
  };
}
