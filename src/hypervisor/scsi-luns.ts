/**
 * Addresses on the virtio-scsi controller: which scsi-id (target) and LUN a
 * new SCSI disk gets. virtio-scsi allows scsi-id 0..255 and LUN 0..16383,
 * but Linux shows a LUN of 256 or more in its flat-space form (LUN 300 is
 * 0:0:T:16684 in the guest), so this owner hands out LUNs below 256 only,
 * which Linux and QEMU number alike. Each disk gets a target of its own
 * first (LUN 0 of targets 0..255), then LUN 1 of each, and so on: a
 * target without LUN 0 is still found by the guest's scan at boot (QEMU
 * answers REPORT LUNS for it), tested in test/integration/scsi-disks.test.ts.
 */
import { HypervisorError, InvalidArgumentError } from './errors';

export class NoFreeScsiAddressError extends HypervisorError {
  constructor(instance: string, used: number) {
    super('RESOURCE_EXHAUSTED', `no free SCSI address on instance ${instance} (${used} of ${MAX_SCSI_DISKS} used); remove a SCSI disk first`);
  }
}

export const SCSI_TARGETS = 256;
/** LUNs we hand out per target (see above). */
export const SCSI_LUNS = 256;
export const MAX_SCSI_DISKS = SCSI_TARGETS * SCSI_LUNS;

export interface ScsiAddress {
  target: number;
  lun: number;
}

export const addressKey = (a: ScsiAddress): string => `${a.target}:${a.lun}`;

export function assertScsiAddress(a: ScsiAddress): void {
  const ok = (v: number, n: number): boolean => Number.isInteger(v) && v >= 0 && v < n;
  if (!ok(a.target, SCSI_TARGETS) || !ok(a.lun, SCSI_LUNS))
    throw new InvalidArgumentError(`SCSI address ${a.target}:${a.lun} is out of range (target 0 to ${SCSI_TARGETS - 1}, LUN 0 to ${SCSI_LUNS - 1})`);
}

/** The first free address among `used` (every record, pending ones too, so theirs stay reserved). */
export function chooseScsiAddress(instance: string, used: Iterable<ScsiAddress>): ScsiAddress {
  const taken = new Set<string>();
  for (const a of used) taken.add(addressKey(a));
  for (let lun = 0; lun < SCSI_LUNS; lun++)
    for (let target = 0; target < SCSI_TARGETS; target++) if (!taken.has(`${target}:${lun}`)) return { target, lun };
  throw new NoFreeScsiAddressError(instance, taken.size);
}
