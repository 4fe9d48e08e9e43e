/**
 * Which host files a guest may get, decided by resolution, not by name.
 *
 * A HostPathPolicy is built from the node's configuration:
 *   - the storage directory: disk files only beneath it, opened with
 *     openat2(RESOLVE_BENEATH) relative to it (native.ts openBeneath), so a
 *     symlink or ".." that leaves it fails, and one that stays inside works;
 *   - an allow-list of block devices (exact paths or globs such as
 *     /dev/loop*), compared with the device's resolved path; the device is
 *     opened O_NOFOLLOW at that resolved path and must be S_ISBLK on the fd;
 *   - the image directory: kernels and initrds only beneath it, like disks.
 * It opens what it approves and returns the fd with the kind from fstat of
 * that fd (never a stat of the path, so there is no check-then-open race).
 *
 * This module is the only way to get an fd of a host file for a guest in
 * src/hypervisor: disks at boot and at hot-add, the kernel and initrd, the
 * disk files the node creates. A later device kind that names a host file
 * must open it here too. A policy without a storage or image directory
 * refuses every path of that class (HostPathPolicy.denyAll()).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { excerpt } from '../common/excerpt';
import { InvalidArgumentError } from './errors';
import { isNativeError, openBeneath } from './native';

export type HostFileKind = 'file' | 'block';
export type BootFileRole = 'kernel' | 'initrd';

export interface HostPathConfig {
  /** Disk files only beneath it (gnt-noded --storage-dir). */
  storageDir?: string;
  /** Kernels and initrds only beneath it (gnt-noded --image-dir). */
  imageDir?: string;
  /** Block devices a disk may be: exact paths or globs with * and ? (gnt-noded --block-device). */
  blockDevices?: readonly string[];
}

/** A host file the policy approved and opened; the caller closes it (or hands it on and then closes). */
export interface OpenedHostFile {
  fd: number;
  kind: HostFileKind;
  /** Where the fd really points (readlink of /proc/self/fd/N). */
  realPath: string;
  close(): void;
}

/** A path the node does not accept: names the path (quoted) and the rule. */
export class HostPathError extends InvalidArgumentError {}

const quote = (p: string): string => excerpt(p, 160);

/** A glob of the allow-list as a regular expression: * and ? match within one path component. */
export function globRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${body}$`);
}

function assertAbsolute(p: unknown, what: string): string {
  if (typeof p !== 'string' || !p) throw new HostPathError(`${what} path is empty`);
  if (p.includes('\0')) throw new HostPathError(`${what} path ${quote(p)} contains a NUL byte`);
  if (!p.startsWith('/')) throw new HostPathError(`${what} path ${quote(p)} is not absolute`);
  return p;
}

/** The part of `p` below `dir` as given (".." left for the kernel to resolve beneath dir), or undefined if `p` is lexically outside. */
function relativeBeneath(dir: string, p: string): string | undefined {
  const resolved = path.resolve(p);
  if (resolved === dir || !resolved.startsWith(`${dir}/`)) return undefined;
  return p.startsWith(`${dir}/`) ? p.slice(dir.length + 1) : resolved.slice(dir.length + 1);
}

const fdRealPath = (fd: number): string => fs.readlinkSync(`/proc/self/fd/${fd}`);

function opened(fd: number, kind: HostFileKind): OpenedHostFile {
  let open = true;
  return {
    fd,
    kind,
    realPath: fdRealPath(fd),
    close: () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

function kindOf(st: fs.Stats): HostFileKind | undefined {
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'block';
  return undefined;
}

export class HostPathPolicy {
  readonly storageDir: string | undefined;
  readonly imageDir: string | undefined;
  readonly blockDevices: readonly string[];
  private readonly blockRules: RegExp[];

  constructor(config: HostPathConfig) {
    this.storageDir = config.storageDir === undefined ? undefined : path.resolve(assertAbsolute(config.storageDir, 'storage directory'));
    this.imageDir = config.imageDir === undefined ? undefined : path.resolve(assertAbsolute(config.imageDir, 'image directory'));
    this.blockDevices = [...(config.blockDevices ?? [])];
    for (const b of this.blockDevices) assertAbsolute(b, 'block device allow-list entry');
    this.blockRules = this.blockDevices.map(globRegExp);
  }

  /** Refuses every disk, kernel and initrd: for instance objects nobody configured. */
  static denyAll(): HostPathPolicy {
    return new HostPathPolicy({});
  }

  /** Whether the resolved device path `real` is in the allow-list. */
  blockDeviceAllowed(real: string): boolean {
    return this.blockRules.some((r) => r.test(real));
  }

  /**
   * Opens a disk O_RDWR: a regular file beneath the storage directory, or an
   * allow-listed block device. The fd's kind is from fstat of the fd.
   */
  openDisk(diskPath: string): OpenedHostFile {
    const p = assertAbsolute(diskPath, 'disk');
    const dir = this.storageDir;
    const rel = dir === undefined ? undefined : relativeBeneath(dir, p);
    if (dir === undefined || rel === undefined) return this.openBlockDevice(p);
    const fd = this.openIn(dir, rel, fs.constants.O_RDWR, 0, `disk ${quote(p)}`, 'storage directory', '--storage-dir');
    return this.checkedDisk(fd, p);
  }

  /** Opens and closes the disk: every check openDisk makes, nothing kept. */
  checkDisk(diskPath: string): HostFileKind {
    const f = this.openDisk(diskPath);
    f.close();
    return f.kind;
  }

  /** A disk file the node is to create: its path must lie beneath the storage directory (checked by name; createDiskFile checks by resolution). */
  assertNewDiskPath(diskPath: string): void {
    const p = assertAbsolute(diskPath, 'disk');
    if (this.storageDir === undefined || relativeBeneath(this.storageDir, p) === undefined)
      throw new HostPathError(`disk ${quote(p)} is ${this.outsideStorage()}: the node creates disk files only there`);
  }

  /** Creates a new disk file (O_EXCL, mode 0600) beneath the storage directory, by resolution; returns its fd. */
  createDiskFile(diskPath: string): number {
    this.assertNewDiskPath(diskPath);
    const dir = this.storageDir as string;
    const rel = relativeBeneath(dir, diskPath) as string;
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL;
    return this.openIn(dir, rel, flags, 0o600, `disk ${quote(diskPath)}`, 'storage directory', '--storage-dir');
  }

  /**
   * Deletes a disk file the node created, beneath the storage directory by
   * resolution: its directory is opened with openBeneath and the name is
   * unlinked inside that directory, so a symlink planted on the way cannot
   * make the node delete a file elsewhere. Returns whether a file went;
   * a path outside, or a directory that escapes, deletes nothing.
   */
  removeDiskFile(diskPath: string): boolean {
    const dir = this.storageDir;
    const rel = dir === undefined ? undefined : relativeBeneath(dir, assertAbsolute(diskPath, 'disk'));
    if (dir === undefined || rel === undefined) return false;
    const base = path.posix.basename(rel);
    if (base === '..' || base === '.') return false;
    let dirFd: number;
    try {
      dirFd = openBeneath(dir, path.posix.dirname(rel), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch {
      return false;
    }
    try {
      fs.unlinkSync(`/proc/self/fd/${dirFd}/${base}`);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    } finally {
      fs.closeSync(dirFd);
    }
  }

  /** Opens a kernel or initrd O_RDONLY: a regular file beneath the image directory. */
  openBootFile(filePath: string, role: BootFileRole): OpenedHostFile {
    const p = assertAbsolute(filePath, role);
    const dir = this.imageDir;
    const rel = dir === undefined ? undefined : relativeBeneath(dir, p);
    if (dir === undefined || rel === undefined)
      throw new HostPathError(
        `${role} ${quote(p)} is ${dir === undefined ? 'refused: this node has no image directory configured' : `outside the image directory ${dir}`} (kernels and initrds must be beneath gnt-noded --image-dir)`,
      );
    const fd = this.openIn(dir, rel, fs.constants.O_RDONLY, 0, `${role} ${quote(p)}`, 'image directory', '--image-dir');
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new HostPathError(`${role} ${quote(p)} is not a regular file`);
    }
    return opened(fd, 'file');
  }

  checkBootFile(filePath: string, role: BootFileRole): void {
    this.openBootFile(filePath, role).close();
  }

  private outsideStorage(): string {
    return this.storageDir === undefined ? 'refused: this node has no storage directory configured' : `outside the storage directory ${this.storageDir}`;
  }

  /** openBeneath with the errors said in terms of the rule. */
  private openIn(dir: string, rel: string, flags: number, mode: number, what: string, dirLabel: string, flag: string): number {
    try {
      return openBeneath(dir, rel, flags, mode);
    } catch (err) {
      if (!isNativeError(err)) throw err;
      if (err.message.startsWith(`open(${dir}, O_PATH`))
        throw new HostPathError(`${what} is refused: the node's ${dirLabel} ${dir} cannot be opened (${err.code}; gnt-noded ${flag})`);
      switch (err.code) {
        case 'EXDEV':
          throw new HostPathError(`${what} escapes the ${dirLabel} ${dir} (a symlink or ".." leads outside it; gnt-noded ${flag})`);
        case 'ELOOP':
          throw new HostPathError(`${what}: too many symlinks, or a symlink where none is accepted, beneath the ${dirLabel} ${dir}`);
        case 'ENOENT':
          throw new HostPathError(`${what} does not exist`);
        case 'EEXIST':
          throw new HostPathError(`${what} exists already`);
        case 'EISDIR':
          throw new HostPathError(`${what} is a directory, neither a regular file nor a block device`);
        case 'ENOTDIR':
          throw new HostPathError(`${what}: a component of the path is not a directory`);
        default:
          throw new HostPathError(`cannot open ${what}: ${err.message} (${err.code})`);
      }
    }
  }

  /** A disk fd opened beneath storage: a regular file, or a block device that is allow-listed. */
  private checkedDisk(fd: number, p: string): OpenedHostFile {
    try {
      const kind = kindOf(fs.fstatSync(fd));
      if (!kind) throw new HostPathError(`disk ${quote(p)} is neither a regular file nor a block device`);
      const file = opened(fd, kind);
      if (kind === 'block' && !this.blockDeviceAllowed(file.realPath)) throw this.notAllowed(file.realPath);
      return file;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  private notAllowed(real: string): HostPathError {
    return new HostPathError(`block device ${quote(real)} is not in the node's allow-list (gnt-noded --block-device)`);
  }

  /** A disk path outside the storage directory: only an allow-listed block device, opened at its resolved path without following. */
  private openBlockDevice(p: string): OpenedHostFile {
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new HostPathError(code === 'ENOENT' ? `disk ${quote(p)} does not exist (and is ${this.outsideStorage()})` : `disk ${quote(p)}: ${code ?? String(err)}`);
    }
    if (!this.blockDeviceAllowed(real)) {
      const isBlock = (() => {
        try {
          return fs.statSync(real).isBlockDevice();
        } catch {
          return false;
        }
      })();
      if (isBlock) throw this.notAllowed(real);
      throw new HostPathError(
        `disk ${quote(p)} is ${this.outsideStorage()}${real !== path.resolve(p) ? ` (it resolves to ${quote(real)})` : ''}: disk files must be beneath it, block devices in the node's allow-list (gnt-noded --block-device)`,
      );
    }
    let fd: number;
    try {
      fd = fs.openSync(real, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NOCTTY);
    } catch (err) {
      throw new HostPathError(`cannot open block device ${quote(real)}: ${(err as Error).message}`);
    }
    try {
      if (!fs.fstatSync(fd).isBlockDevice()) throw new HostPathError(`disk ${quote(p)} (${quote(real)}) is not a block device`);
      const file = opened(fd, 'block');
      if (file.realPath !== real) throw new HostPathError(`block device ${quote(real)} changed while it was opened (now ${quote(file.realPath)})`);
      return file;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }
}
