/**
 * The recorded I/O limits of every disk, applied to a QEMU that was just
 * started (paused with -S, before `cont`), on a migration target too (it
 * starts from the carried runtime file): the runtime file is the truth.
 */
import { DISK_KIND, SCSI_DISK_KIND, type DeviceKind } from './device-kinds';
import { throttleDevice, type GrowableDisk } from './disk-modify';
import { setIoLimits } from './disk-io-limits';
import type { Monitor } from './qmp-client';
import type { RuntimeData } from './runtime-file';

const KINDS: readonly DeviceKind[] = [DISK_KIND as unknown as DeviceKind, SCSI_DISK_KIND as unknown as DeviceKind];

function limited(data: RuntimeData): Array<[DeviceKind, GrowableDisk]> {
  return KINDS.flatMap((k) => (k.records(data) as GrowableDisk[]).filter((r) => r.io_limits && !r.state).map((r): [DeviceKind, GrowableDisk] => [k, r]));
}

/** Whether any disk has limits (QEMU then starts paused until they are set). */
export const hasIoLimits = (data: RuntimeData): boolean => limited(data).length > 0;

export async function applyRecordedIoLimits(mon: Monitor, data: RuntimeData): Promise<void> {
  for (const [kind, rec] of limited(data)) await setIoLimits(mon, throttleDevice(kind, rec), rec.io_limits);
}
