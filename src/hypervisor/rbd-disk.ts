/**
 * Disks on Ceph RBD images, opened by QEMU's own rbd block driver
 * (block-rbd.so, librbd): no host file and no fd, QEMU talks to the
 * cluster itself. What QEMU gets:
 *   - the client's key as a QMP `secret` object (format base64, the key
 *     string as the keyring holds it): by object-add at a hot-add, by
 *     `-object secret,file=` at boot from a 0600 root file in the instance's
 *     runtime directory that QEMU reads before it drops privileges (never
 *     `data=` on the command line: /proc/PID/cmdline is world-readable); a
 *     keyring file is never given to QEMU;
 *   - `conf`: a small ceph.conf of ours (RBD_CLIENT_CONF) whose timeouts
 *     bound every call librados makes in QEMU's main loop. Without it an
 *     unreachable monitor freezes QEMU (and the guest) for
 *     client_mount_timeout, 300 s by default; with it the blockdev-add
 *     fails within about 5 s;
 *   - the monitors as the `server` list, the pool, the image and the user.
 *   attach  -> object-add secret, blockdev-add rbd, device_add, sent together
 *              (each undone if a later one fails)
 *   release -> blockdev-del, object-del (harmless when gone)
 * The secret's id is the device id with "-key" appended.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { excerpt } from '../common/excerpt';
import { InstanceStateError, InvalidArgumentError } from './errors';
import { inTransaction } from './hotplug-transaction';
import { deleteBlockNode, deviceAddStep, ignoreNotFound } from './qdev';
import { DEFAULT_UNPLUG_TIMEOUTS } from './unplug-timeouts';
import { qemuOptValue } from './qemu-command';
import type { Monitor } from './qmp-client';
import type { DiskBacking, RbdImage } from './disk-template';

/** One monitor of the cluster. */
export interface RbdServer {
  host: string;
  port: string;
}

/** How this node's QEMU reaches the cluster (gnt-noded --rbd-*). */
export interface RbdAccess {
  monitors: RbdServer[];
  /** The client id without "client." (gnt). */
  user: string;
  /** The client's key, base64 as in its keyring. */
  key: string;
}

export type { RbdImage } from './disk-template';

/**
 * The conf QEMU's librados reads (and only these settings): a monitor that
 * does not answer fails a connect after 5 s, a monitor or OSD call after
 * 10 s, instead of blocking QEMU's main loop for minutes.
 */
export const RBD_CLIENT_CONF = [
  '# Written by gnt-noded for QEMU\'s rbd driver: bounds on every librados call.',
  '[global]',
  'client_mount_timeout = 5',
  'rados_mon_op_timeout = 10',
  'rados_osd_op_timeout = 10',
  '',
].join('\n');

/** The conf file's name (in the node's conf directory, and at the root of a chroot). */
export const RBD_CONF_NAME = 'gnt-rbd-client.conf';

const NAME_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const KEY_RULE = /^[A-Za-z0-9+/]+={0,2}$/;
const HOST_RULE = /^[A-Za-z0-9.:-]{1,253}$/;

/** A pool or image name this node accepts: letters, digits, ".", "_", "-" (no "/", "@" or spaces). */
export function assertRbdName(name: string, what: string): string {
  if (!NAME_RULE.test(name) || name.includes('..'))
    throw new InvalidArgumentError(`RBD ${what} name ${excerpt(name)} is not valid: use 1 to 200 letters, digits, ".", "_" or "-", starting with a letter or digit, without ".."`);
  return name;
}

/** "POOL/IMAGE" as pool and image, each checked. */
export function parseRbdSpec(spec: string): RbdImage {
  const parts = spec.split('/');
  if (parts.length !== 2) throw new InvalidArgumentError(`RBD image ${excerpt(spec)} is not POOL/IMAGE`);
  return { pool: assertRbdName(parts[0], 'pool'), image: assertRbdName(parts[1], 'image') };
}

/** Checks what QEMU will be given (the node checks it once at start-up). */
export function assertRbdAccess(a: RbdAccess): RbdAccess {
  if (!a.monitors.length) throw new InvalidArgumentError('RBD access needs at least one monitor');
  for (const m of a.monitors) {
    if (!HOST_RULE.test(m.host)) throw new InvalidArgumentError(`RBD monitor host ${excerpt(m.host)} is not a host name or address`);
    const port = Number(m.port);
    if (!/^\d{1,5}$/.test(m.port) || port < 1 || port > 65535) throw new InvalidArgumentError(`RBD monitor port ${excerpt(m.port)} is not a port number`);
  }
  if (!NAME_RULE.test(a.user)) throw new InvalidArgumentError(`RBD client id ${excerpt(a.user)} is not valid (give it without "client.")`);
  if (!KEY_RULE.test(a.key)) throw new InvalidArgumentError('the RBD client key is not a base64 string');
  return a;
}

/** The QOM id of a disk's secret object. */
export const rbdSecretId = (deviceId: string): string => `${deviceId}-key`;

/** blockdev-add arguments of an RBD image as block node `id`; `conf` as QEMU sees it. */
export function rbdBlockdevOptions(id: string, img: RbdImage, access: RbdAccess, conf: string): Record<string, unknown> {
  return {
    driver: 'rbd',
    'node-name': id,
    pool: img.pool,
    image: img.image,
    user: access.user,
    'key-secret': rbdSecretId(id),
    'auth-client-required': ['cephx'],
    server: access.monitors.map((m) => ({ host: m.host, port: m.port })),
    conf,
  };
}

/** object-add arguments of the secret (the key as is: the rbd driver reads it back as base64). */
export const rbdSecretObject = (id: string, key: string): Record<string, unknown> => ({ 'qom-type': 'secret', id: rbdSecretId(id), data: key, format: 'base64' });

/**
 * Hot-adds a device whose block node `id` is an RBD image: `check` (the
 * node opens the image outside QEMU: an unreachable monitor, a wrong key or
 * a missing image fail here, QEMU untouched), object-add of the secret,
 * blockdev-add (QEMU connects to the cluster here; should the cluster fail
 * just now, the conf's timeouts bound it), device_add. Undoes every step
 * on failure.
 */
export async function attachRbdDevice(
  mon: Monitor,
  what: string,
  id: string,
  img: RbdImage,
  access: RbdAccess,
  conf: string,
  deviceProps: Record<string, unknown>,
  check?: (img: RbdImage) => Promise<void>,
  setLimits?: () => Promise<void>,
): Promise<void> {
  await inTransaction(`hot-add of ${what} ${id} (RBD ${img.pool}/${img.image})`, async (tx) => {
    if (check) await tx.step('check image', () => check(img));
    // The three go out at once (hotplug-transaction.ts): QEMU runs them in order.
    await tx.pipeline([
      { name: 'object-add secret', send: () => mon.execute('object-add', rbdSecretObject(id, access.key)), undo: () => mon.execute('object-del', { id: rbdSecretId(id) }) },
      { name: 'blockdev-add', send: () => mon.execute('blockdev-add', rbdBlockdevOptions(id, img, access, conf)), undo: () => deleteBlockNode(mon, id) },
      deviceAddStep(mon, id, deviceProps, DEFAULT_UNPLUG_TIMEOUTS.disk),
    ]);
    if (setLimits) await tx.step('block_set_io_throttle', setLimits);
  });
}

/** Frees the block node and the secret; harmless when already gone. */
export async function releaseRbd(mon: Monitor, id: string): Promise<void> {
  await deleteBlockNode(mon, id);
  await ignoreNotFound(mon.execute('object-del', { id: rbdSecretId(id) }));
}

/** -object and -blockdev of an RBD disk at boot: the secret read from `keyFile` (QEMU reads it as root, before the privilege drop). */
export function rbdBootArgs(id: string, img: RbdImage, access: RbdAccess, keyFile: string, conf: string): string[] {
  return [
    '-object', `secret,id=${rbdSecretId(id)},file=${qemuOptValue(keyFile, 'the RBD key file path')},format=base64`,
    '-blockdev', JSON.stringify(rbdBlockdevOptions(id, img, access, conf)),
  ];
}

/** Writes `text` to `file` atomically (temp file, fsync, rename) with `mode`. */
function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, mode);
  try {
    fs.fchmodSync(fd, mode);
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/**
 * Makes sure `dir` holds the client conf (RBD_CLIENT_CONF, 0644: it holds
 * no secret, and QEMU reads it as its unprivileged user); returns its path.
 * Rewritten only when its content differs.
 */
export function ensureRbdConf(dir: string): string {
  const file = path.join(dir, RBD_CONF_NAME);
  try {
    if (fs.readFileSync(file, 'utf8') === RBD_CLIENT_CONF && (fs.statSync(file).mode & 0o777) === 0o644) return file;
  } catch {
    /* missing: written below */
  }
  writeAtomic(file, RBD_CLIENT_CONF, 0o644);
  return file;
}

/**
 * The key file QEMU reads at boot (`-object secret,file=`): 0600, owned by
 * this process (root), in the instance's runtime directory. The caller
 * deletes it once QEMU is up (removeRbdKeyFile).
 */
export function writeRbdKeyFile(file: string, key: string): void {
  writeAtomic(file, key, 0o600);
}

export function removeRbdKeyFile(file: string): void {
  fs.rmSync(file, { force: true });
}

/** What an instance needs from its node for RBD disks (gnt-noded --rbd-*: src/noded/rbd-pool.ts). */
export interface RbdHost {
  access: RbdAccess;
  /** The client conf's host path: QEMU outside a chroot reads it here, and at boot (before it enters a chroot). */
  confFile: string;
  /** Deletes an image the node created, once QEMU has let go of it. */
  removeImage(img: RbdImage): Promise<void>;
  /**
   * Opens the image the way QEMU will (same monitors, client and key,
   * outside QEMU) and throws with librados' words if it cannot: QEMU's rbd
   * driver connects inside its main loop, so a monitor that does not answer
   * would stop the guest for the conf's client_mount_timeout (5 s); checked
   * first, it never reaches QEMU.
   */
  checkImage(img: RbdImage): Promise<void>;
}

/**
 * The conf path a hot-add gives QEMU: inside a chroot, the copy at the
 * chroot's root (ensureRbdConf there; QEMU sees it as /NAME); else the
 * node's file.
 */
export function hotplugConfPath(host: RbdHost, chroot: string | undefined): string {
  if (!chroot) return host.confFile;
  ensureRbdConf(chroot);
  return `/${RBD_CONF_NAME}`;
}

/** The RBD image a disk record names (template rbd), or undefined for a disk on a host file or device. */
export function rbdImageOf(rec: DiskBacking): RbdImage | undefined {
  return rec.template === 'rbd' ? rec.rbd : undefined;
}

/** Whether the node made the image (and so deletes it with the disk): created; an adopted one never is (disk-template.ts isAdopted). */
export function nodeMadeImage(rec: DiskBacking & { created?: boolean }): boolean {
  return rbdImageOf(rec) !== undefined && rec.created === true;
}

/** An RBD disk on a node that has no RBD pool configured (FAILED_PRECONDITION). */
export class NoRbdError extends InstanceStateError {
  constructor(node?: string) {
    super(`${node ? `node ${node}` : 'this node'} has no RBD configured (start gnt-noded with --rbd-monitors, --rbd-pool and --rbd-keyring)`);
  }
}
