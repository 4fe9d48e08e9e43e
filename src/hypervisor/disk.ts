/**
 * Disk hotplug (virtio-blk-pci). QEMU never opens the host path itself: we
 * open it and hand QEMU the fd, so disks work with QEMU running as another
 * user or in a chroot.
 *   prepare  -> validate path, open it O_RDWR
 *   attach   -> add-fd (opaque = device id), blockdev-add on /dev/fdset/N,
 *               device_add (each undone if a later one fails)
 *   detach   -> device_del, wait until QEMU no longer lists the device
 *   release  -> blockdev-del, remove-fd of the fdset whose opaque is the id
 */
import * as fs from 'node:fs';
import { deviceId } from './device-id';
import { InvalidArgumentError } from './errors';
import { inTransaction } from './hotplug-transaction';
import { deleteDevice, ignoreNotFound, pciAddr } from './qdev';
import type { Monitor } from './qmp-client';
import type { DiskRecord } from './runtime-file';

export type DiskKind = 'file' | 'block';

interface FdsetInfo {
  'fdset-id': number;
  fds: Array<{ fd: number; opaque?: string }>;
}

/** Checks the path and tells whether it is a regular file or a block device. */
export function diskKind(diskPath: string): DiskKind {
  if (!diskPath.startsWith('/')) throw new InvalidArgumentError(`disk path "${diskPath}" is not absolute`);
  let st: fs.Stats;
  try {
    st = fs.statSync(diskPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(
      code === 'ENOENT' ? `disk path ${diskPath} does not exist` : `disk path ${diskPath}: ${code ?? String(err)}`,
    );
  }
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'block';
  throw new InvalidArgumentError(`disk path ${diskPath} is neither a regular file nor a block device`);
}

export const diskId = (disk: DiskRecord, slot: number): string => deviceId('disk', disk.uuid, slot);

/** Opens the disk for QEMU; the caller closes the fd once QEMU holds its copy. */
export function openDisk(diskPath: string): number {
  try {
    return fs.openSync(diskPath, fs.constants.O_RDWR);
  } catch (err) {
    throw new InvalidArgumentError(`cannot open disk ${diskPath}: ${(err as Error).message}`);
  }
}

function blockdevOptions(id: string, kind: DiskKind, fdset: number): Record<string, unknown> {
  return {
    driver: kind === 'block' ? 'host_device' : 'file',
    'node-name': id,
    filename: `/dev/fdset/${fdset}`,
    'auto-read-only': false,
  };
}

/** QEMU arguments that create the disk at boot, its fd at child fd `childFd`. */
export function diskBootArgs(disk: DiskRecord, slot: number, childFd: number, fdset: number): string[] {
  const id = diskId(disk, slot);
  return [
    '-add-fd', `fd=${childFd},set=${fdset},opaque=${id}`,
    '-blockdev', JSON.stringify(blockdevOptions(id, diskKind(disk.path), fdset)),
    '-device', `virtio-blk-pci,drive=${id},id=${id},bus=pci.0,addr=${pciAddr(slot)}`,
  ];
}

/** Hot-adds the disk at `slot`. Undoes every step on failure. */
export async function attachDisk(mon: Monitor, disk: DiskRecord, slot: number): Promise<void> {
  const id = diskId(disk, slot);
  const kind = diskKind(disk.path);
  await inTransaction(`hot-add of disk ${id}`, async (tx) => {
    let fd: number | undefined;
    const closeFd = (): void => {
      if (fd !== undefined) fs.closeSync(fd);
      fd = undefined;
    };
    try {
      fd = await tx.step('open disk', () => openDisk(disk.path), closeFd);
      const added = await tx.step(
        'add-fd',
        () => mon.execute<{ 'fdset-id': number; fd: number }>('add-fd', { opaque: id }, { fds: [fd as number] }),
        (r) => mon.execute('remove-fd', { 'fdset-id': r['fdset-id'] }),
      );
      closeFd(); // QEMU holds its copy now
      await tx.step('blockdev-add', () => mon.execute('blockdev-add', blockdevOptions(id, kind, added['fdset-id'])), () =>
        mon.execute('blockdev-del', { 'node-name': id }),
      );
      await tx.step('device_add', () =>
        mon.execute('device_add', { driver: 'virtio-blk-pci', id, drive: id, bus: 'pci.0', addr: pciAddr(slot) }),
      );
    } finally {
      closeFd();
    }
  });
}

export async function detachDisk(mon: Monitor, disk: DiskRecord, slot: number, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, diskId(disk, slot), timeoutMs);
}

/** The fdsets QEMU holds for this device id (normally one). */
export async function fdsetsOf(mon: Monitor, id: string): Promise<number[]> {
  const sets = await mon.execute<FdsetInfo[]>('query-fdsets');
  return sets.filter((s) => s.fds.some((f) => f.opaque === id)).map((s) => s['fdset-id']);
}

/** Frees the disk's block node and fdset; harmless when already gone. */
export async function releaseDisk(mon: Monitor, disk: DiskRecord, slot: number): Promise<void> {
  const id = diskId(disk, slot);
  await ignoreNotFound(mon.execute('blockdev-del', { 'node-name': id }));
  for (const set of await fdsetsOf(mon, id)) await ignoreNotFound(mon.execute('remove-fd', { 'fdset-id': set }));
}
