/**
 * The node's storage directory: disk files the node creates itself live in
 * `<storage dir>/<instance>/<disk uuid>.img` (directories 0700, files 0600,
 * sparse). Disks at other paths belong to someone else and are never deleted.
 * Files are created through the node's HostPathPolicy (openat2 beneath the
 * storage directory, O_EXCL), so a symlink planted in the directory cannot
 * make the node create or truncate a file elsewhere.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HostPathPolicy } from '../hypervisor/host-paths';
import { assertInstanceName } from '../hypervisor/instance-paths';
import { invalidArgument, resourceExhausted } from './status';

const UUID_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function assertDeviceUuid(uuid: string, what: string): string {
  if (!uuid) throw invalidArgument(`${what} needs a uuid`);
  if (!UUID_RULE.test(uuid) || uuid.includes('..'))
    throw invalidArgument(`${what} uuid "${uuid}" is not valid: use letters, digits, ".", "_" or "-", without ".."`);
  return uuid;
}

/** A disk file to create: where, and how big. */
export interface NewDisk {
  path: string;
  sizeBytes: number;
}

export class Storage {
  /** The node's rules for host files; by default: disk files beneath `dir`, nothing else. */
  readonly hostPaths: HostPathPolicy;

  constructor(
    readonly nodeName: string,
    readonly dir: string,
    hostPaths?: HostPathPolicy,
  ) {
    this.hostPaths = hostPaths ?? new HostPathPolicy({ storageDir: dir });
  }

  /** Creates the storage directory if it is missing. */
  init(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  freeBytes(): number {
    const st = fs.statfsSync(this.dir);
    return Number(st.bavail) * Number(st.bsize);
  }

  instanceDir(instance: string): string {
    return path.join(this.dir, assertInstanceName(instance));
  }

  defaultDiskPath(instance: string, uuid: string): string {
    return path.join(this.instanceDir(instance), `${assertDeviceUuid(uuid, 'a disk')}.img`);
  }

  /** Whether `file` is a disk this node created for `instance` (and so may delete). */
  owns(instance: string, file: string): boolean {
    const rel = path.relative(this.instanceDir(instance), path.resolve(file));
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) && !rel.includes(path.sep);
  }

  /** Checks that `disks` new disk files of `bytes` in all fit into the storage directory. */
  assertSpace(bytes: number, disks = 1): void {
    const free = this.freeBytes();
    const what = disks === 1 ? 'disk needs' : `${disks} disks need`;
    if (bytes > free) throw resourceExhausted(`node ${this.nodeName} storage dir ${this.dir} has ${free} bytes free, ${what} ${bytes}`);
  }

  /**
   * Creates the missing files among `disks` (sparse, 0600) after checking that
   * their total size fits. Returns the paths it created; nothing is created
   * if the space check fails, and on any error the ones made so far go again.
   */
  createDisks(instance: string, disks: NewDisk[]): string[] {
    const missing = disks.filter((d) => !fs.existsSync(d.path));
    if (!missing.length) return [];
    for (const d of missing) {
      if (!Number.isSafeInteger(d.sizeBytes) || d.sizeBytes <= 0)
        throw invalidArgument(`disk ${d.path} does not exist and cannot be created: size_bytes must be a positive integer, not ${d.sizeBytes}`);
    }
    const total = missing.reduce((sum, d) => sum + d.sizeBytes, 0);
    this.assertSpace(total, missing.length);
    fs.mkdirSync(this.instanceDir(instance), { recursive: true, mode: 0o700 });
    const created: string[] = [];
    try {
      for (const d of missing) {
        const fd = this.hostPaths.createDiskFile(d.path);
        created.push(d.path);
        try {
          fs.ftruncateSync(fd, d.sizeBytes);
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch (err) {
      this.removeFiles(created);
      throw err;
    }
    return created;
  }

  /** Deletes files this node created, beneath the storage directory by resolution (host-paths.ts removeDiskFile). */
  removeFiles(files: string[]): void {
    for (const f of files) this.hostPaths.removeDiskFile(f);
  }

  /** Deletes `<storage dir>/<instance>` with every disk file in it. */
  removeInstance(instance: string): void {
    fs.rmSync(this.instanceDir(instance), { recursive: true, force: true });
  }
}
