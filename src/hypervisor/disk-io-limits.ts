/**
 * Per-disk I/O limits: QMP block_set_io_throttle on the device's qdev id
 * (virtio-blk or scsi-hd), QEMU's throttle fields iops, iops_rd, iops_wr,
 * bps, bps_rd, bps_wr (0: no limit). A total and its read/write split are
 * exclusive in QEMU; we refuse the pair before QEMU is asked. The limits
 * live in the disk's runtime record (io_limits) and are applied at every
 * start (QEMU started with -S, set before `cont`) and on a migration target
 * before the guest resumes: the runtime file is the truth on the node.
 */
import { InvalidArgumentError } from './errors';
import { IO_LIMIT_KEYS, ioLimitsProblem, normalizeIoLimits, type DiskIoLimits, type IoLimitKey } from '../common/io-limits';

export { IO_LIMIT_KEYS, IO_LIMIT_MAX, describeIoLimits, ioLimitsProblem, normalizeIoLimits, sameIoLimits, type DiskIoLimits, type IoLimitKey } from '../common/io-limits';
import type { Monitor } from './qmp-client';

export function checkIoLimits(limits: DiskIoLimits | undefined, what: string): DiskIoLimits | undefined {
  if (!limits) return undefined;
  const problem = ioLimitsProblem(limits);
  if (problem) throw new InvalidArgumentError(`${what}: ${problem}`);
  return normalizeIoLimits(limits);
}

/** A runtime file's io_limits entry; anything invalid reads as none. */
export function ioLimitsFrom(raw: unknown): DiskIoLimits | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  const out: DiskIoLimits = {};
  for (const k of IO_LIMIT_KEYS) if (typeof r[k] === 'number') out[k] = r[k] as number;
  return ioLimitsProblem(out) ? undefined : normalizeIoLimits(out);
}

/** block_set_io_throttle's arguments for device `qdevId`: every field, 0 where no limit. */
export function throttleArgs(qdevId: string, limits: DiskIoLimits | undefined): Record<string, unknown> {
  const args: Record<string, unknown> = { id: qdevId };
  for (const k of IO_LIMIT_KEYS) args[k] = limits?.[k] ?? 0;
  return args;
}

/**
 * Sets the limits of a device just added with `deviceProps` (checked before,
 * checkIoLimits), before the guest can do much I/O on it. virtio-blk takes
 * them on its backend's id.
 */
export async function setAttachLimits(mon: Monitor, id: string, deviceProps: Record<string, unknown>, limits: DiskIoLimits): Promise<void> {
  await setIoLimits(mon, deviceProps.driver === 'virtio-blk-pci' ? `${id}/virtio-backend` : id, limits);
}

/** Sets the device's limits (all six: a field not given is cleared). */
export async function setIoLimits(mon: Monitor, qdevId: string, limits: DiskIoLimits | undefined): Promise<void> {
  await mon.execute('block_set_io_throttle', throttleArgs(qdevId, limits));
}

interface BlockInfo {
  qdev?: string;
  device?: string;
  inserted?: Partial<Record<IoLimitKey, number>> & { image?: { 'virtual-size'?: number } };
}

/** The limits QEMU applies to each device (query-block), by qdev id. */
export async function queryIoLimits(mon: Monitor): Promise<Map<string, DiskIoLimits>> {
  const out = new Map<string, DiskIoLimits>();
  for (const b of await mon.execute<BlockInfo[]>('query-block')) {
    const qdev = b.qdev?.replace(/^\/machine\/peripheral\//, '').replace(/\/virtio-backend$/, '');
    if (!qdev || !b.inserted) continue;
    const l: DiskIoLimits = {};
    for (const k of IO_LIMIT_KEYS) if (b.inserted[k]) l[k] = b.inserted[k];
    out.set(qdev, l);
  }
  return out;
}
