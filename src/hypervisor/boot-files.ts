/**
 * The host files a QEMU gets at boot, every one opened through the node's
 * HostPathPolicy (host-paths.ts): the kernel and initrd (beneath the image
 * directory) and every disk (beneath the storage directory, or an
 * allow-listed block device). QEMU opens none of them itself: each is an fd
 * it inherits; disks go into fdsets (-add-fd), the kernel and initrd are
 * named as /proc/self/fd/N, which QEMU reads at machine setup, before it
 * drops privileges or enters its chroot. The runtime file keeps the real
 * paths; only the command line of this one start names the fds.
 * A disk on an RBD image has no host file: QEMU's rbd driver opens it, with
 * the client key as a secret object read from a 0600 file that exists only
 * while QEMU starts (rbd-disk.ts).
 */
import { diskBootArgs, diskDeviceArgs, diskId } from './disk';
import { openPmemFile, pmemBootArgs } from './pmem';
import * as path from 'node:path';
import type { DiskBacking } from './disk-template';
import { findRbdModule, prepareRbdChroot } from './rbd-chroot';
import { NoRbdError, ensureRbdConf, rbdBootArgs, rbdImageOf, removeRbdKeyFile, writeRbdKeyFile, type RbdHost } from './rbd-disk';
import { scsiControllerBootArgs, scsiDiskBootArgs, scsiDiskId, scsiHdDeviceArgs } from './scsi-disk';
import type { BootFileRole, HostPathPolicy, OpenedHostFile } from './host-paths';
import { withOption } from './qemu-command';
import type { RuntimeData } from './runtime-file';

/** The first fd number a spawned QEMU sees for what spawnQemu passes after stdio. */
const FIRST_CHILD_FD = 3;

const BOOT_OPTIONS: ReadonlyArray<[string, BootFileRole]> = [
  ['-kernel', 'kernel'],
  ['-initrd', 'initrd'],
];

/** The kernel and initrd paths the fixed command names. */
export function bootFilePaths(cmd: readonly string[]): Array<[BootFileRole, string]> {
  const out: Array<[BootFileRole, string]> = [];
  for (const [option, role] of BOOT_OPTIONS) {
    const i = cmd.indexOf(option);
    if (i >= 0 && i + 1 < cmd.length) out.push([role, cmd[i + 1]]);
  }
  return out;
}

/**
 * Checks every host path of the runtime data with the policy (opens and
 * closes each): every settled disk, and with `boot` the kernel and initrd. Touches
 * nothing; throws HostPathError naming the first refused path.
 */
export function checkHostPaths(policy: HostPathPolicy, data: RuntimeData, opts: { boot: boolean }): void {
  if (opts.boot) for (const [role, p] of bootFilePaths(data.kvm_cmd)) policy.checkBootFile(p, role);
  // A disk with an open intent does not come back at boot (it is dropped first): only settled ones are opened.
  for (const disk of [...data.block_devices, ...(data.scsi_disks ?? []), ...(data.pmem_devices ?? [])]) if (!disk.state && !rbdImageOf(disk as DiskBacking)) policy.checkDisk(disk.path);
}

/** A hot-added disk's host path by the node's rules (a file to create only by where it will be); an RBD disk has none, it needs the node's RBD access. */
export function checkDiskRequest(policy: HostPathPolicy, rbd: RbdHost | undefined, req: { path: string; created?: boolean } & DiskBacking): void {
  if (req.template === 'rbd') {
    if (!rbd) throw new NoRbdError();
  } else if (req.created) policy.assertNewDiskPath(req.path);
  else policy.checkDisk(req.path);
}

export interface OpenedBootFiles {
  /** The fixed command with -kernel/-initrd naming the inherited fds. */
  cmd: string[];
  /** -add-fd/-blockdev/-device of every disk (virtio-blk, the SCSI controller and its LUNs, pmem). */
  diskArgs: string[];
  /** The fds to pass, in order (the child sees them from fd 3 on). */
  fds: number[];
  close(): void;
}

/** What RBD disks at boot need: the node's access and where the key file goes (removed by close()). */
export interface RbdBoot {
  host?: RbdHost;
  keyFile: string;
}

/**
 * The RBD part of a start: where the key file goes (the instance's runtime
 * directory, `<dir>/rbd-key`), and, for a QEMU in a chroot on a node with
 * RBD, the chroot given the rbd module and its libraries (rbd-chroot.ts)
 * and the client conf, so that RBD disks can be hot-added there.
 */
export function rbdBootFor(host: RbdHost | undefined, data: RuntimeData, runtimeDir: string): RbdBoot {
  const chroot = data.hvparams.chroot;
  if (host && typeof chroot === 'string' && chroot) {
    const hasRbd = [...data.block_devices, ...(data.scsi_disks ?? [])].some((d) => rbdImageOf(d));
    // Without QEMU's rbd module an instance may still start, as long as it has no RBD disk (a hot-add then fails with QEMU's words).
    if (hasRbd || findRbdModule()) prepareRbdChroot(chroot);
    ensureRbdConf(chroot);
  }
  return { ...(host ? { host } : {}), keyFile: path.join(runtimeDir, 'rbd-key') };
}

/** The RBD disks' boot arguments: the key file is written (once) on the first one; a node without RBD refuses. */
function rbdBootArgsOf(rbd: RbdBoot | undefined, written: { key: boolean }): (id: string, rec: DiskBacking) => string[] | undefined {
  return (id, rec) => {
    const img = rbdImageOf(rec);
    if (!img) return undefined;
    if (!rbd?.host) throw new NoRbdError();
    if (!written.key) writeRbdKeyFile(rbd.keyFile, rbd.host.access.key);
    written.key = true;
    return rbdBootArgs(id, img, rbd.host.access, rbd.keyFile, rbd.host.confFile);
  };
}

/** Opens the kernel, initrd and every disk of `data`; on any refusal closes what it opened and throws. */
export function openBootFiles(policy: HostPathPolicy, data: RuntimeData, rbd?: RbdBoot): OpenedBootFiles {
  const files: OpenedHostFile[] = [];
  const written = { key: false };
  const close = (): void => {
    files.forEach((f) => f.close());
    if (written.key && rbd) removeRbdKeyFile(rbd.keyFile); // QEMU read it at start-up
  };
  const rbdArgs = rbdBootArgsOf(rbd, written);
  try {
    let cmd = [...data.kvm_cmd];
    for (const [role, p] of bootFilePaths(cmd)) {
      files.push(policy.openBootFile(p, role));
      cmd = withOption(cmd, role === 'kernel' ? '-kernel' : '-initrd', `/proc/self/fd/${FIRST_CHILD_FD + files.length - 1}`);
    }
    const diskArgs: string[] = [];
    data.block_devices.forEach((disk, i) => {
      const onRbd = rbdArgs(diskId(disk, disk.pci as number), disk);
      if (onRbd) return void diskArgs.push(...onRbd, ...diskDeviceArgs(disk, disk.pci as number));
      const f = policy.openDisk(disk.path);
      files.push(f);
      diskArgs.push(...diskBootArgs(disk, disk.pci as number, FIRST_CHILD_FD + files.length - 1, i + 1, f.kind));
    });
    const scsi = data.scsi_disks ?? [];
    if (scsi.length && data.scsi_controller) diskArgs.push(...scsiControllerBootArgs(data.scsi_controller));
    scsi.forEach((disk, i) => {
      const onRbd = rbdArgs(scsiDiskId(disk), disk);
      if (onRbd) return void diskArgs.push(...onRbd, ...scsiHdDeviceArgs(disk));
      const f = policy.openDisk(disk.path);
      files.push(f);
      diskArgs.push(...scsiDiskBootArgs(disk, FIRST_CHILD_FD + files.length - 1, data.block_devices.length + i + 1, f.kind));
    });
    for (const pmem of data.pmem_devices ?? []) {
      files.push(openPmemFile(policy, pmem, data.hvparams));
      diskArgs.push(...pmemBootArgs(pmem, pmem.pci as number, FIRST_CHILD_FD + files.length - 1));
    }
    return { cmd, diskArgs, fds: files.map((f) => f.fd), close };
  } catch (err) {
    close();
    throw err;
  }
}
