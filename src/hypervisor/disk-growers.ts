/**
 * How each disk template's backing store grows (disk-modify.ts calls one):
 *   file     -> opened O_RDWR through the node's HostPathPolicy (beneath the
 *               storage directory by resolution), free space of its file
 *               system checked, ftruncate, fsync
 *   blockdev -> the operator grew the device (lvextend, losetup -c, ...):
 *               its size is read from the opened device and must be at least
 *               the asked size; nothing is written
 *   rbd      -> the image is resized by the node's RBD pool (src/noded/rbd-pool.ts,
 *               `rbd resize`), given as `rbd` in the table; without it: refused
 * A table, so a template is one entry (the node passes its rbd entry in
 * KvmInstanceOptions.diskGrowers).
 */
import * as fs from 'node:fs';
import { HypervisorError, InvalidArgumentError } from './errors';
import type { HostPathPolicy } from './host-paths';
import { openedDiskSize } from './disk-size';
import { templateOf, type DiskTemplate } from './disk-template';
import { runDiskModify, settleGrows, type DiskChangeRequest, type DiskGrower, type DiskModifyHost, type DiskModifyResult, type GrowableDisk } from './disk-modify';
import type { Monitor } from './qmp-client';

export type DiskGrowerTable = Record<DiskTemplate, DiskGrower>;

/** The template of a record (disk-template.ts). */
export const growTemplateOf = (rec: GrowableDisk): DiskTemplate => templateOf(rec);

const what = (rec: GrowableDisk): string => `disk ${rec.uuid}`;

function withDisk<T>(hostPaths: HostPathPolicy, rec: GrowableDisk, body: (fd: number, size: number, kind: 'file' | 'block') => T): T {
  const f = hostPaths.openDisk(rec.path);
  try {
    return body(f.fd, openedDiskSize(f, what(rec)), f.kind);
  } finally {
    f.close();
  }
}

/** A regular file beneath the storage directory: ftruncate to the new size once its file system has room. */
export function fileGrower(hostPaths: HostPathPolicy): DiskGrower {
  return {
    size: (rec) => withDisk(hostPaths, rec, (_fd, size) => size),
    grow: (rec, bytes) =>
      withDisk(hostPaths, rec, (fd, size, kind) => {
        if (kind !== 'file') throw new InvalidArgumentError(`${what(rec)}: ${rec.path} is a block device, not a file (its template says file)`);
        if (size >= bytes) return;
        const st = fs.statfsSync(rec.path);
        const free = Number(st.bavail) * Number(st.bsize);
        const used = fs.fstatSync(fd).blocks * 512;
        // A sparse file may take up to its full size: the grow needs room for every new byte.
        if (bytes - Math.max(size, used) > free)
          throw new HypervisorError('RESOURCE_EXHAUSTED', `${what(rec)}: growing ${rec.path} to ${bytes} bytes needs ${bytes - size} more bytes, its file system has ${free} free`);
        fs.ftruncateSync(fd, bytes);
        fs.fsyncSync(fd);
      }),
  };
}

/** An adopted block device: grown by the operator; we only check that it is large enough. */
export function blockdevGrower(hostPaths: HostPathPolicy): DiskGrower {
  return {
    external: true,
    size: (rec) => withDisk(hostPaths, rec, (_fd, size) => size),
    grow: (rec, bytes) =>
      withDisk(hostPaths, rec, (_fd, size, kind) => {
        if (kind !== 'block') throw new InvalidArgumentError(`${what(rec)}: ${rec.path} is not a block device (its template says blockdev)`);
        if (size < bytes)
          throw new HypervisorError(
            'FAILED_PRECONDITION',
            `${what(rec)}: the adopted device ${rec.path} has ${size} bytes, less than the asked ${bytes}; grow the device first (e.g. lvextend, or losetup -c after growing a loop device's file), then ask again`,
          );
      }),
  };
}

const noRbd = (rec: GrowableDisk): never => {
  throw new HypervisorError('FAILED_PRECONDITION', `${what(rec)}: this node has no RBD configured (gnt-noded --rbd-monitors, --rbd-pool, --rbd-keyring), so it cannot grow an rbd disk`);
};

/** rbd on a node without RBD access. */
export const RBD_ABSENT: DiskGrower = { size: noRbd, grow: noRbd };

/** The node's table: file and blockdev through its HostPathPolicy, rbd as given (or refused). */
export function diskGrowers(hostPaths: HostPathPolicy, extra: Partial<DiskGrowerTable> = {}): DiskGrowerTable {
  return { file: fileGrower(hostPaths), blockdev: blockdevGrower(hostPaths), rbd: RBD_ABSENT, ...extra };
}

/** An instance's disk grows and limit changes, each disk's backing by its template's grower. */
export class DiskModifier {
  constructor(
    private readonly host: DiskModifyHost,
    private readonly table: () => DiskGrowerTable,
  ) {}

  private readonly growerOf = (rec: GrowableDisk): DiskGrower => this.table()[growTemplateOf(rec)];

  modify(uuid: string, change: DiskChangeRequest): Promise<DiskModifyResult> {
    return runDiskModify(this.host, uuid, change, this.growerOf);
  }

  /** Settles grows left open (disk-modify.ts settleGrows); `mon` when QEMU runs. */
  settle(mon: Monitor | undefined): Promise<string[]> {
    return settleGrows(this.host, mon, this.growerOf);
  }
}
