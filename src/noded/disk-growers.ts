/**
 * The node's grow table (src/hypervisor/disk-growers.ts): file and blockdev
 * through its HostPathPolicy; rbd is refused ("not yet") until the RBD code
 * gives its entry, which is this one line:
 *   rbd: { size: (rec) => imageSize(rec.rbd), grow: (rec, bytes) => resizeImage(rec.rbd.pool, rec.rbd.image, bytes) }
 * The file grower carries the crash point after-disk-grown (tests: the
 * window between the file's grow and QEMU's block_resize).
 */
import type { DiskGrowerTable } from '../hypervisor/disk-growers';
import { fileGrower } from '../hypervisor/disk-growers';
import type { HostPathPolicy } from '../hypervisor/host-paths';
import { crashPoint } from './fault-injection';

export function nodeDiskGrowers(hostPaths: HostPathPolicy, log: (line: string) => void): Partial<DiskGrowerTable> {
  const file = fileGrower(hostPaths);
  return {
    file: {
      size: (rec) => file.size(rec),
      grow: async (rec, bytes) => {
        await file.grow(rec, bytes);
        crashPoint('after-disk-grown', log);
      },
    },
  };
}
