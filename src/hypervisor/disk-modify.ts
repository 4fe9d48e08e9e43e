/**
 * A disk modify (HotplugDevice MODIFY of a DISK): a grow to a new total size
 * and/or new I/O limits, on a virtio-blk disk or a SCSI LUN, live when QEMU
 * runs and in the backing store and the record when it does not (the guest
 * sees the size at the next start). Steps, with the operation of the request:
 *
 *   check (record settled, size larger than the backing store's now, limits
 *   valid) -> intent grow_to saved with the operation -> backing store grown
 *   by the template's grower (a file: ftruncate; an adopted block device: its
 *   size checked; rbd: resize) -> QEMU: block_resize (node-name = the disk's
 *   block node), block_set_io_throttle (id = its qdev id) -> record
 *   (size_bytes, io_limits) and outcome saved together
 *
 * The backing store's grow is the point of no return (a disk is never
 * shrunk): a failure before it fails the operation and drops the intent; a
 * failure after it keeps the intent, and settleGrows (at the next reconcile,
 * or the next start) finishes it: backing store at least grow_to -> QEMU
 * resized, the operation succeeded; smaller -> the grow never happened, the
 * operation failed.
 */
import { InstanceStateError, InvalidArgumentError, OutcomeUnknownError, DeviceNotFoundError, errorMessage } from './errors';
import { checkIoLimits, describeIoLimits, sameIoLimits, setIoLimits, type DiskIoLimits } from './disk-io-limits';
import { DISK_KIND, PMEM_KIND, SCSI_DISK_KIND, findDevice, type DeviceKind, type DeviceRecord } from './device-kinds';
import type { OperationRunner } from './operation-runner';
import type { Monitor } from './qmp-client';
import type { DiskRecord, RuntimeData, ScsiDiskRecord } from './runtime-file';

export type GrowableDisk = DiskRecord | ScsiDiskRecord;

/** What a modify asks for; absent: keep. ioLimits null: remove every limit. */
export interface DiskChangeRequest {
  /** The new total size in bytes (> the current one). */
  sizeBytes?: number;
  ioLimits?: DiskIoLimits | null;
}

/** The backing store of one disk template (the node supplies one per template: file, blockdev, rbd). */
export interface DiskGrower {
  /**
   * The backing store is grown outside the node (an adopted device the
   * operator extends): the disk's current size is then what QEMU has (or,
   * stopped, the recorded size), not the store's.
   */
  readonly external?: boolean;
  /** Its size now, bytes. */
  size(rec: GrowableDisk): number | Promise<number>;
  /** Makes it at least `bytes` (idempotent), or refuses saying why. */
  grow(rec: GrowableDisk, bytes: number): void | Promise<void>;
}

export interface DiskModifyResult {
  record: GrowableDisk;
  /** e.g. "size=2G: live", "io_limits=iops=50: live" */
  applied: string[];
}

export interface DiskModifyHost {
  readonly name: string;
  readonly runner: OperationRunner;
  data(): RuntimeData;
  save(): void;
  running(): boolean;
  monitor(): Promise<Monitor>;
  scheduleReconcile(): void;
}

const GROWABLE: readonly DeviceKind[] = [DISK_KIND as unknown as DeviceKind, SCSI_DISK_KIND as unknown as DeviceKind];

/** The disk's QEMU id: its qdev id and its block node's name (the same, disk.ts / scsi-disk.ts). */
export function growableId(kind: DeviceKind, rec: GrowableDisk): string {
  if (kind.takesPciSlot) {
    const pci = (rec as DiskRecord).pci;
    if (pci === null) throw new InstanceStateError(`disk ${rec.uuid} has no PCI slot recorded (old runtime file); restart the instance once first`);
    return kind.id(rec, pci);
  }
  return kind.id(rec, 0);
}

/**
 * The device QMP's block_set_io_throttle (and qemu-io -d) names by `id`: the
 * device that holds the BlockBackend, i.e. a scsi-hd itself, but for a
 * virtio-blk-pci its virtio-blk child (`<id>/virtio-backend`, a path QEMU
 * resolves beneath /machine/peripheral).
 */
export function throttleDevice(kind: DeviceKind, rec: GrowableDisk): string {
  const id = growableId(kind, rec);
  return kind.takesPciSlot ? `${id}/virtio-backend` : id;
}

function settled(rec: GrowableDisk): GrowableDisk {
  const copy = { ...rec };
  delete copy.state;
  delete copy.grow_to;
  return copy;
}

const fmt = (bytes: number): string => {
  for (const [u, m] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const)
    if (bytes >= m) return bytes % m === 0 ? `${bytes / m}${u}` : `${(bytes / m).toFixed(1)}${u}`;
  return `${bytes}B`;
};

/** The disk a modify names: a virtio-blk or SCSI disk whose add or removal is not pending. */
export function findGrowable(data: RuntimeData, name: string, uuid: string): [DeviceKind, GrowableDisk] {
  const found = findDevice(data, uuid, [...GROWABLE, PMEM_KIND as unknown as DeviceKind]);
  if (!found) throw new DeviceNotFoundError(name, `disk with uuid ${uuid}`);
  const [kind, rec] = found as [DeviceKind, DeviceRecord];
  if (kind === (PMEM_KIND as unknown as DeviceKind)) throw new InvalidArgumentError(`pmem device ${uuid} of ${name} cannot be grown or given I/O limits (its size is guest memory)`);
  if (rec.state) throw new InstanceStateError(`disk ${uuid} of ${name} is ${rec.state === 'detaching' ? 'being removed (removal pending)' : 'being added'}; it cannot be modified now`);
  if ((rec as GrowableDisk).grow_to) throw new InstanceStateError(`disk ${uuid} of ${name} has a grow to ${(rec as GrowableDisk).grow_to} bytes in progress; wait for it to settle`);
  return [kind, rec as GrowableDisk];
}

/** Checks the request against the disk; returns the new size (undefined: none), the new limits and what changes. Changes nothing. */
interface BlockSize {
  inserted?: { 'node-name'?: string; image?: { 'virtual-size'?: number } };
}

/** The disk's size as the guest has it: the store's, or for an externally grown store QEMU's (stopped: the recorded one). */
async function currentSize(h: DiskModifyHost, rec: GrowableDisk, grower: DiskGrower, id: string): Promise<number> {
  if (!grower.external) return grower.size(rec);
  if (h.running()) {
    const list = await (await h.monitor()).execute<BlockSize[]>('query-block');
    const size = list.find((b) => b.inserted?.['node-name'] === id)?.inserted?.image?.['virtual-size'];
    if (typeof size === 'number') return size;
  }
  return rec.size_bytes ?? grower.size(rec);
}

async function plan(h: DiskModifyHost, rec: GrowableDisk, req: DiskChangeRequest, grower: DiskGrower, id: string): Promise<{ growTo?: number; limits?: DiskIoLimits; limitsChange: boolean; applied: string[] }> {
  const what = `disk ${rec.uuid} of ${h.name}`;
  const how = h.running() ? 'live' : 'next start';
  // One change per operation: a grow cannot be undone, so nothing may fail after it.
  if (req.sizeBytes !== undefined && req.ioLimits !== undefined) throw new InvalidArgumentError(`modify of ${what}: a grow and an I/O limits change are separate requests`);
  const applied: string[] = [];
  let growTo: number | undefined;
  if (req.sizeBytes !== undefined) {
    if (!Number.isSafeInteger(req.sizeBytes) || req.sizeBytes <= 0) throw new InvalidArgumentError(`${what}: the new size must be a positive number of bytes, not ${req.sizeBytes}`);
    const current = await currentSize(h, rec, grower, id);
    if (req.sizeBytes <= current)
      throw new InvalidArgumentError(`${what}: the asked size ${fmt(req.sizeBytes)} (${req.sizeBytes} bytes) is not larger than its current size ${fmt(current)} (${current} bytes); a disk can only grow`);
    growTo = req.sizeBytes;
    applied.push(`size=${fmt(growTo)}: ${how}`);
  }
  const limits = req.ioLimits === undefined ? rec.io_limits : checkIoLimits(req.ioLimits ?? {}, what);
  const limitsChange = req.ioLimits !== undefined && !sameIoLimits(limits, rec.io_limits);
  if (limitsChange) applied.push(`io_limits=${describeIoLimits(limits)}: ${how}`);
  if (!applied.length) throw new InvalidArgumentError(`modify of ${what}: nothing changes (every given value is the current one)`);
  return { growTo, limits, limitsChange, applied };
}

function recordLimits(rec: GrowableDisk, limits: DiskIoLimits | undefined): void {
  if (limits) rec.io_limits = limits;
  else delete rec.io_limits;
}

/** The modify, inside the instance's queue and its operation. */
export async function runDiskModify(h: DiskModifyHost, uuid: string, req: DiskChangeRequest, growerOf: (rec: GrowableDisk) => DiskGrower): Promise<DiskModifyResult> {
  const [kind, rec] = findGrowable(h.data(), h.name, uuid);
  const grower = growerOf(rec);
  const id = growableId(kind, rec);
  const p = await plan(h, rec, req, grower, id);
  const live = h.running();
  const mon = live ? await h.monitor() : undefined;
  if (p.growTo !== undefined) {
    rec.grow_to = p.growTo;
    if (h.runner.current) h.runner.current.request = { grow_to: p.growTo };
    h.save();
    try {
      await grower.grow(rec, p.growTo);
    } catch (err) {
      delete rec.grow_to;
      h.save();
      throw err;
    }
    if (mon) await finishLive(h, mon, id, rec, p.growTo);
    rec.size_bytes = p.growTo;
    delete rec.grow_to;
  }
  if (mon && p.limitsChange) await setIoLimits(mon, throttleDevice(kind, rec), p.limits);
  recordLimits(rec, p.limits);
  const record = settled(rec);
  h.runner.settleCurrent('modify', 'succeeded', { result: { ...record, applied: p.applied } });
  h.save();
  return { record, applied: p.applied };
}

/** block_resize once the backing store has grown; any failure now keeps the intent for settleGrows. */
async function finishLive(h: DiskModifyHost, mon: Monitor, id: string, rec: GrowableDisk, bytes: number): Promise<void> {
  try {
    await mon.execute('block_resize', { 'node-name': id, size: bytes });
  } catch (err) {
    h.scheduleReconcile();
    throw new OutcomeUnknownError(
      `grow of disk ${rec.uuid} on ${h.name}: its backing store has grown to ${bytes} bytes, but QEMU's block_resize failed (${errorMessage(err)}); the intent is kept and the node finishes the grow at its next reconcile (ask for the operation's outcome)`,
      { cause: err },
    );
  }
}

/**
 * Settles every grow left open (grow_to set) by a crash or a failed
 * block_resize: backing store at least grow_to -> QEMU resized (`mon`: it
 * runs; without it, QEMU opens the grown store at its next start), record
 * updated, operation succeeded; smaller -> the grow never happened,
 * operation failed. Returns a line per disk settled.
 */
export async function settleGrows(h: Pick<DiskModifyHost, 'name' | 'runner' | 'data' | 'save'>, mon: Monitor | undefined, grower: (rec: GrowableDisk) => DiskGrower): Promise<string[]> {
  const out: string[] = [];
  for (const kind of GROWABLE) {
    for (const rec of kind.records(h.data()) as GrowableDisk[]) {
      const target = rec.grow_to;
      if (!target) continue;
      const ops = h.runner.openFor(rec.uuid).filter((o) => o.kind === 'disk' && o.action === 'modify');
      let size: number;
      try {
        size = await grower(rec).size(rec);
      } catch (err) {
        out.push(`disk ${rec.uuid}: the grow to ${target} bytes cannot be settled: ${errorMessage(err)}`);
        continue;
      }
      if (size >= target) {
        if (mon) await mon.execute('block_resize', { 'node-name': growableId(kind, rec), size: target });
        rec.size_bytes = target;
        delete rec.grow_to;
        for (const op of ops) h.runner.settle(op, 'succeeded', 'reconcile', { result: { ...settled(rec), applied: [`size=${fmt(target)}: completed by reconcile`] } });
        out.push(`disk ${rec.uuid}: grow to ${target} bytes completed`);
      } else {
        delete rec.grow_to;
        for (const op of ops)
          h.runner.settle(op, 'failed', 'reconcile', { error: { code: 'ABORTED', message: `the grow of disk ${rec.uuid} to ${target} bytes was interrupted before its backing store grew (${size} bytes); nothing changed` } });
        out.push(`disk ${rec.uuid}: grow to ${target} bytes did not happen`);
      }
      h.save();
    }
  }
  return out;
}
