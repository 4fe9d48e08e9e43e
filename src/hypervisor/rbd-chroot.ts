/**
 * QEMU's rbd driver inside a chroot (hvparam chroot=DIR). QEMU loads
 * block-rbd.so when it first needs it, which for a hot-add is after it
 * entered the chroot: there the module and its libraries must be at their
 * host paths. This module gives DIR hardlinks of them (copies when DIR is on
 * another filesystem): the module, every library `ldd` names for it (found
 * at run time, never a fixed list; librados, librbd, libceph-common.so.2
 * under .../ceph/ and the rest), each at its real (resolved) path beneath
 * DIR, and DIR/lib -> usr/lib, DIR/lib64 -> usr/lib64 for the loader's
 * default paths. A link that no longer matches its host file (a package
 * upgrade replaced the file) is made again. QEMU opens nothing else of the
 * host: the rbd conf (ensureRbdConf) sits at DIR's root.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError } from './errors';

/** Where QEMU builds look for block-<name>.so (Debian: /usr/lib/<triplet>/qemu). */
function moduleDirs(): string[] {
  const dirs: string[] = [];
  if (process.env.QEMU_MODULE_DIR) dirs.push(process.env.QEMU_MODULE_DIR);
  for (const base of ['/usr/lib', '/usr/lib64']) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(base);
    } catch {
      continue;
    }
    dirs.push(path.join(base, 'qemu'), ...entries.filter((e) => /-linux-gnu/.test(e)).map((e) => path.join(base, e, 'qemu')));
  }
  return dirs;
}

/** The host's block-rbd.so, or undefined if QEMU's rbd driver is not installed. */
export function findRbdModule(): string | undefined {
  for (const dir of moduleDirs()) {
    const f = path.join(dir, 'block-rbd.so');
    if (fs.existsSync(f)) return fs.realpathSync(f);
  }
  return undefined;
}

/** The paths of the shared libraries `file` needs, as `ldd` names them (the loader's view: often a soname link). */
export function lddDependencies(file: string): string[] {
  const out = execFileSync('/usr/bin/ldd', [file], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    if (/not found/.test(line)) throw new InvalidArgumentError(`${file} needs a library that is missing on this host: ${line.trim()}`);
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]);
  }
  return [...libs];
}

/** Whether `a` and `b` are the same file, or have the same size and mtime (a copy made earlier). */
function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return (a.ino === b.ino && a.dev === b.dev) || (a.size === b.size && Math.floor(a.mtimeMs) === Math.floor(b.mtimeMs));
}

/** Creates `dir` beneath `root`, each new directory 0755 (whatever the umask: the node runs with 077). */
function mkdirs(root: string, dir: string): void {
  let at = root;
  for (const part of dir.split('/').filter(Boolean)) {
    at = path.join(at, part);
    try {
      fs.mkdirSync(at);
      fs.chmodSync(at, 0o755);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/**
 * Puts the file `src` names beneath `root`, as a hardlink (a copy across
 * filesystems) of the real file, at the name the loader asks for (its
 * directory resolved: /lib/x/libfoo.so.1 -> DIR/usr/lib/x/libfoo.so.1) and
 * at the real file's own path.
 */
function mirrorFile(root: string, src: string): string[] {
  const real = fs.realpathSync(src);
  const asked = path.join(fs.realpathSync(path.dirname(src)), path.basename(src));
  const names = asked === real ? [real] : [real, asked];
  for (const name of names) mirrorAt(root, real, name);
  return names;
}

/** A hardlink (or copy) of the host file `src` at `name` beneath `root`. */
function mirrorAt(root: string, src: string, name: string): void {
  const dest = path.join(root, name);
  const st = fs.statSync(src);
  try {
    if (sameFile(fs.lstatSync(dest), st)) return;
    fs.rmSync(dest, { force: true }); // an old version (the host's file was replaced)
  } catch {
    /* missing */
  }
  mkdirs(root, path.dirname(name));
  try {
    fs.linkSync(src, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV' && (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    const tmp = `${dest}.${process.pid}.tmp`;
    fs.copyFileSync(src, tmp);
    fs.chmodSync(tmp, st.mode & 0o755);
    fs.utimesSync(tmp, st.atime, st.mtime);
    fs.renameSync(tmp, dest);
  }
}

/** DIR/lib -> usr/lib (and lib64) where the host has them as such links (merged /usr). */
function mirrorTopLinks(root: string): void {
  for (const name of ['lib', 'lib64']) {
    const host = `/${name}`;
    let target: string;
    try {
      target = fs.readlinkSync(host);
    } catch {
      continue; // not a symlink here (or absent): the files are mirrored at their own paths
    }
    const at = path.join(root, name);
    try {
      if (fs.readlinkSync(at) === target) continue;
    } catch {
      /* missing or not a link */
    }
    if (fs.existsSync(at) && !fs.lstatSync(at).isSymbolicLink()) continue; // a real directory: leave it
    fs.rmSync(at, { force: true });
    fs.symlinkSync(target, at);
  }
}

export interface RbdChrootResult {
  /** The files now beneath the chroot (host paths). */
  files: string[];
}

/**
 * Gives `chroot` what QEMU needs to load its rbd module there. Makes the
 * chroot's root traversable (0711 at least) for the unprivileged QEMU.
 * Throws InvalidArgumentError when the module is not installed.
 */
export function prepareRbdChroot(chroot: string): RbdChrootResult {
  if (!path.isAbsolute(chroot)) throw new InvalidArgumentError(`chroot ${chroot} is not absolute`);
  const st = fs.statSync(chroot);
  if (!st.isDirectory()) throw new InvalidArgumentError(`chroot ${chroot} is not a directory`);
  if ((st.mode & 0o011) !== 0o011) fs.chmodSync(chroot, (st.mode & 0o777) | 0o011);
  const module = findRbdModule();
  if (!module) throw new InvalidArgumentError('QEMU\'s rbd block driver (block-rbd.so) is not installed on this node (Debian: qemu-block-extra)');
  const files = [module, ...lddDependencies(module)].flatMap((f) => mirrorFile(chroot, f));
  mirrorTopLinks(chroot);
  return { files };
}
