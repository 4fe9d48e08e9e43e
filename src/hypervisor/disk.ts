/**
 * Disk hotplug (virtio-blk-pci). QEMU never opens the host path itself: we
 * open it and hand QEMU the fd, so disks work with QEMU running as another
 * user or in a chroot.
 *   prepare  -> open it O_RDWR through the node's HostPathPolicy (host-paths.ts:
 *               beneath the storage directory by resolution, or an allow-listed
 *               block device); its kind comes from fstat of that fd
 *   attach   -> add-fd (opaque = device id); once it answered, blockdev-add
 *               on /dev/fdset/N and device_add sent together (a pipeline,
 *               hotplug-transaction.ts); each undone if a later one fails
 *   detach   -> device_del, wait until QEMU no longer lists the device
 *   release  -> blockdev-del, remove-fd of the device's fdset (known from
 *               add-fd: fdset-book.ts; query-fdsets only when not known)
 * A disk on an RBD image (template rbd) has no host file: QEMU's rbd driver
 * opens the image itself (rbd-disk.ts); attachBacked and releaseBacked
 * choose the way by the record, for virtio-blk and SCSI LUNs alike.
 */
import * as fs from 'node:fs';
import { deviceId } from './device-id';
import { excerpt } from '../common/excerpt';
import { InvalidArgumentError, isOutcomeUnknown } from './errors';
import type { HostPathPolicy, OpenedHostFile } from './host-paths';
import { forgetFdsets, noteFdsetAdded, removeFdset, removeFdsetsOf } from './fdset-book';
import { inTransaction } from './hotplug-transaction';
import { deleteBlockNode, deleteDevice, deviceAddStep, pciPlacement, pciPlacementArg } from './qdev';
import { DEFAULT_UNPLUG_TIMEOUTS } from './unplug-timeouts';
import type { Monitor } from './qmp-client';
import type { DiskRecord } from './runtime-file';
import { setAttachLimits, type DiskIoLimits } from './disk-io-limits';
import type { DiskBacking } from './disk-template';
import { NoRbdError, attachRbdDevice, hotplugConfPath, rbdImageOf, releaseRbd, type RbdHost } from './rbd-disk';

/** What attaching a disk's backing may need: the host path rules, and for RBD the node's access and the chroot QEMU is in. */
export interface BackingContext {
  hostPaths: HostPathPolicy;
  rbd?: RbdHost;
  /** hvparam chroot, if QEMU runs in one. */
  chroot?: string;
}

export type DiskKind = 'file' | 'block';

/**
 * A disk's kind by name only (stat, no open): used where the policy is not at
 * hand to refuse early what cannot work; every open goes through
 * HostPathPolicy.openDisk, which decides by resolution.
 */
export function diskKind(diskPath: string): DiskKind {
  if (!diskPath.startsWith('/')) throw new InvalidArgumentError(`disk path ${excerpt(diskPath)} is not absolute`);
  let st: fs.Stats;
  try {
    st = fs.statSync(diskPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(
      code === 'ENOENT' ? `disk path ${excerpt(diskPath)} does not exist` : `disk path ${excerpt(diskPath)}: ${code ?? String(err)}`,
    );
  }
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'block';
  throw new InvalidArgumentError(`disk path ${excerpt(diskPath)} is neither a regular file nor a block device`);
}

export const diskId = (disk: DiskRecord, slot: number): string => deviceId('disk', disk.uuid, slot, disk.bus);

export function blockdevOptions(id: string, kind: DiskKind, fdset: number): Record<string, unknown> {
  return {
    driver: kind === 'block' ? 'host_device' : 'file',
    'node-name': id,
    filename: `/dev/fdset/${fdset}`,
    'auto-read-only': false,
  };
}

/** The -device of the disk at boot, on the block node named by its id. */
export function diskDeviceArgs(disk: DiskRecord, slot: number): string[] {
  const id = diskId(disk, slot);
  return ['-device', `virtio-blk-pci,drive=${id},id=${id},${pciPlacementArg(disk, slot)}`];
}

/** QEMU arguments that create the disk at boot, its fd at child fd `childFd`. */
export function diskBootArgs(disk: DiskRecord, slot: number, childFd: number, fdset: number, kind: DiskKind): string[] {
  const id = diskId(disk, slot);
  return [
    '-add-fd', `fd=${childFd},set=${fdset},opaque=${id}`,
    '-blockdev', JSON.stringify(blockdevOptions(id, kind, fdset)),
    ...diskDeviceArgs(disk, slot),
  ];
}

/**
 * Hot-adds a disk device whose block node is `id` (virtio-blk, a SCSI LUN):
 * opens the host path through the node's policy, add-fd (opaque = id),
 * blockdev-add on /dev/fdset/N, then the device itself with `deviceProps`.
 * Undoes every step on failure; QEMU holds its own copy of the fd from
 * add-fd on.
 */
export async function attachBlockDevice(
  mon: Monitor,
  what: string,
  id: string,
  diskPath: string,
  hostPaths: HostPathPolicy,
  deviceProps: Record<string, unknown>,
  ioLimits?: DiskIoLimits,
): Promise<void> {
  await inTransaction(`hot-add of ${what} ${id}`, async (tx) => {
    let file: OpenedHostFile | undefined;
    const closeFd = (): void => file?.close();
    try {
      const opened = await tx.step('open disk', () => hostPaths.openDisk(diskPath), closeFd);
      file = opened;
      const added = await tx.step('add-fd', () => addFd(mon, id, opened.fd), (r) => removeFdset(mon, r['fdset-id']));
      closeFd(); // QEMU holds its copy now
      await tx.pipeline([
        { name: 'blockdev-add', send: () => mon.execute('blockdev-add', blockdevOptions(id, opened.kind, added['fdset-id'])), undo: () => deleteBlockNode(mon, id) },
        deviceAddStep(mon, id, deviceProps, DEFAULT_UNPLUG_TIMEOUTS.disk),
      ]);
      if (ioLimits) await tx.step('block_set_io_throttle', () => setAttachLimits(mon, id, deviceProps, ioLimits));
    } finally {
      closeFd();
    }
  });
}

/** add-fd of `fd` with the device id as opaque; the answer goes into the fdset book. */
export async function addFd(mon: Monitor, id: string, fd: number): Promise<{ 'fdset-id': number; fd: number }> {
  try {
    const added = await mon.execute<{ 'fdset-id': number; fd: number }>('add-fd', { opaque: id }, { fds: [fd] });
    noteFdsetAdded(mon, id, added['fdset-id']);
    return added;
  } catch (err) {
    if (isOutcomeUnknown(err)) forgetFdsets(mon); // QEMU may hold a set the book does not know
    throw err;
  }
}

/**
 * Hot-adds a device on the record's backing: a host file or device by fd
 * (attachBlockDevice), or an RBD image through QEMU's rbd driver.
 */
export async function attachBacked(
  mon: Monitor,
  what: string,
  id: string,
  rec: { path: string; io_limits?: DiskIoLimits } & DiskBacking,
  ctx: BackingContext,
  deviceProps: Record<string, unknown>,
): Promise<void> {
  const img = rbdImageOf(rec);
  if (!img) return attachBlockDevice(mon, what, id, rec.path, ctx.hostPaths, deviceProps, rec.io_limits);
  if (!ctx.rbd) throw new NoRbdError();
  const host = ctx.rbd;
  const limits = rec.io_limits;
  const setLimits = limits ? () => setAttachLimits(mon, id, deviceProps, limits) : undefined;
  return attachRbdDevice(mon, what, id, img, host.access, hotplugConfPath(host, ctx.chroot), deviceProps, (i) => host.checkImage(i), setLimits);
}

/** Frees the block node and what backs it (fdset, or the RBD secret); harmless when already gone. */
export async function releaseBacked(mon: Monitor, id: string, rec: DiskBacking): Promise<void> {
  if (rbdImageOf(rec)) return releaseRbd(mon, id);
  await deleteBlockNode(mon, id);
  await removeFdsetsOf(mon, id);
}

/** Hot-adds the disk at `slot`. Undoes every step on failure. */
export async function attachDisk(mon: Monitor, disk: DiskRecord, slot: number, ctx: BackingContext): Promise<void> {
  const id = diskId(disk, slot);
  await attachBacked(mon, 'disk', id, disk, ctx, { driver: 'virtio-blk-pci', id, drive: id, ...pciPlacement(disk, slot) });
}

export async function detachDisk(mon: Monitor, disk: DiskRecord, slot: number, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, diskId(disk, slot), timeoutMs);
}

/** Frees the disk's block node and fdset (or secret); harmless when already gone. */
export async function releaseDisk(mon: Monitor, disk: DiskRecord, slot: number): Promise<void> {
  await releaseBacked(mon, diskId(disk, slot), disk);
}
