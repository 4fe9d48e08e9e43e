/**
 * The size of a disk's backing store, read through an fd the node's
 * HostPathPolicy opened: a regular file by fstat, a block device by the
 * kernel's own count of its sectors (/sys/dev/block/MAJ:MIN/size, the
 * device fstat names), which `losetup -c` or a grown LV update at once.
 */
import * as fs from 'node:fs';
import type { HostPathPolicy, OpenedHostFile } from './host-paths';
import { InvalidArgumentError } from './errors';

/** major/minor of a Linux dev_t (glibc's gnu_dev_major/minor, for the values Node gives exactly). */
export function devNumbers(rdev: number): { major: number; minor: number } {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff & 0xfffff00);
  return { major, minor };
}

/** Bytes of the opened disk (file or block device). */
export function openedDiskSize(file: OpenedHostFile, what: string): number {
  const st = fs.fstatSync(file.fd);
  if (file.kind === 'file') return st.size;
  const { major, minor } = devNumbers(st.rdev);
  let text: string;
  try {
    text = fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`${what}: the size of block device ${major}:${minor} cannot be read (${(err as Error).message})`);
  }
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors)) throw new InvalidArgumentError(`${what}: block device ${major}:${minor} reports no size`);
  return sectors * 512;
}

/** Opens the disk through the policy, reads its size, closes it. */
export function diskSize(hostPaths: HostPathPolicy, diskPath: string, what: string): number {
  const f = hostPaths.openDisk(diskPath);
  try {
    return openedDiskSize(f, what);
  } finally {
    f.close();
  }
}
