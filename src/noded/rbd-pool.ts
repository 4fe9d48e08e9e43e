/**
 * The node's Ceph RBD pool (gnt-noded --rbd-monitors, --rbd-pool, --rbd-id,
 * --rbd-keyring): images the node creates for disks, and the access QEMU's
 * own rbd driver gets (src/hypervisor/rbd-disk.ts).
 *
 * The node manages images with the `rbd` CLI: execFile with an absolute
 * path, no shell, a timeout on every call, `-m` (the monitors), `--id`,
 * `--keyring` and `-c` naming the node's bounded client conf (so an
 * unreachable monitor fails a call within seconds, and no /etc/ceph file is
 * read). QEMU never sees the keyring: the node reads the key from it (a
 * root-only file) and gives it to QEMU as a secret object.
 *
 * Images the node creates are named `<instance name>-<disk uuid>` in the
 * configured pool; they are deleted when their disk is removed (after QEMU
 * let go of the image) or the instance is removed. An adopted image
 * (`--disk add:adopt=POOL/IMAGE,template=rbd`) is never deleted.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { excerpt } from '../common/excerpt';
import { assertRbdAccess, assertRbdName, ensureRbdConf, nodeMadeImage, rbdImageOf, type RbdAccess, type RbdHost, type RbdImage, type RbdServer } from '../hypervisor/rbd-disk';
import type { RuntimeData } from '../hypervisor/runtime-file';
import { failedPrecondition, invalidArgument, notFound } from './status';

const run = promisify(execFile);
const MiB = 1024 * 1024;
/** Each rbd CLI call is killed after this long (its own timeouts, from the conf, are shorter). */
const RBD_CALL_TIMEOUT_MS = 60_000;
export const DEFAULT_RBD_ID = 'gnt';
/** Where the node keeps the client conf that QEMU (any user) and the rbd CLI read. */
export const DEFAULT_RBD_CONF_DIR = '/run/gnt-hotplug';

export interface RbdPoolConfig {
  monitors: RbdServer[];
  pool: string;
  /** The client id without "client." (default gnt). */
  clientId: string;
  /** The client's keyring: a root-only file (the node reads the key from it). */
  keyring: string;
}

/** --rbd-monitors HOST:PORT[,HOST:PORT...]; an IPv6 address in brackets ([::1]:3300). */
export function parseRbdMonitors(text: string, what = '--rbd-monitors'): RbdServer[] {
  const out: RbdServer[] = [];
  for (const item of text.split(',')) {
    const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(item) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(item);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
      throw new Error(`${what} ${excerpt(item)} is not HOST:PORT (e.g. 10.0.0.1:3300 or [::1]:3300; several separated by commas)`);
    out.push({ host: m[1], port: m[2] });
  }
  return out;
}

/** The monitors as the rbd CLI's -m takes them. */
const monArg = (monitors: RbdServer[]): string => monitors.map((m) => (m.host.includes(':') ? `[${m.host}]:${m.port}` : `${m.host}:${m.port}`)).join(',');

/**
 * The key of `client.<id>` from a keyring file that only its owner (this
 * process's user) may read: a keyring others can read is refused, as the
 * key gives access to every image of the pool.
 */
export function readRbdKey(file: string, clientId: string): string {
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`--rbd-keyring ${file} cannot be read: ${(err as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`--rbd-keyring ${file} is not a regular file`);
  if (st.mode & 0o077) throw new Error(`--rbd-keyring ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}): make it root-only (chmod 600)`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new Error(`--rbd-keyring ${file} belongs to uid ${st.uid}, not to this node daemon's user`);
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) section = sec[1].trim();
    const key = /^key\s*=\s*(\S+)$/.exec(line);
    if (key && section === `client.${clientId}`) return key[1];
  }
  throw new Error(`--rbd-keyring ${file} has no key for client.${clientId} (a [client.${clientId}] section with key = ...)`);
}

/** The rbd CLI exits with the errno of what failed; the ones it gives for faults of access. */
const ERRNO_TEXT: Record<number, string> = {
  1: 'Operation not permitted',
  2: 'No such file or directory',
  13: 'Permission denied',
  16: 'Device or resource busy',
  17: 'File exists',
  110: 'Connection timed out',
};

/** The words of a failed rbd call: its last stderr lines (librados' and librbd's own, log prefixes cut) and the errno. */
export function rbdWords(err: unknown): string {
  const e = err as { stderr?: string; killed?: boolean; signal?: string; code?: unknown; message?: string };
  if (e.killed || e.signal === 'SIGTERM') return `no answer within ${RBD_CALL_TIMEOUT_MS / 1000} s`;
  const lines = (e.stderr ?? '')
    .split('\n')
    .map((l) => l.replace(/^\d{4}-\d\d-\d\dT\S+\s+\S+\s+-?\d+\s+/, '').trim())
    .filter(Boolean);
  const errno = typeof e.code === 'number' ? ERRNO_TEXT[e.code] : undefined;
  const words = lines.slice(-2).join('; ') || (e.message ?? String(err));
  return errno && !words.includes(errno) ? `${words} (${errno})` : words;
}

const isMissing = (err: unknown): boolean => /\(2\) No such file or directory|No such file or directory/.test((err as { stderr?: string }).stderr ?? '');

export interface RbdImageInfo {
  sizeBytes: number;
}

export class RbdPool {
  readonly pool: string;
  readonly access: RbdAccess;
  /** The client conf (host path; QEMU outside a chroot reads it here). */
  readonly confFile: string;
  readonly confDir: string;

  constructor(
    readonly config: RbdPoolConfig,
    opts: { confDir?: string; rbdBinary?: string } = {},
  ) {
    this.pool = assertRbdName(config.pool, 'pool');
    this.access = assertRbdAccess({ monitors: config.monitors, user: config.clientId, key: readRbdKey(config.keyring, config.clientId) });
    this.confDir = opts.confDir ?? DEFAULT_RBD_CONF_DIR;
    fs.mkdirSync(this.confDir, { recursive: true });
    fs.chmodSync(this.confDir, 0o755);
    this.confFile = ensureRbdConf(this.confDir);
    this.rbdBinary = opts.rbdBinary ?? '/usr/bin/rbd';
  }

  private readonly rbdBinary: string;
  /** Image sizes as the node last saw them (create, info, resize), for its listings. */
  private readonly sizes = new Map<string, number>();

  /**
   * The size of an image as last seen; 0 when not yet known, and then it is
   * looked up in the background (after a restart of the node) for the next
   * listing.
   */
  knownSize(img: RbdImage): number {
    const known = this.sizes.get(`${img.pool}/${img.image}`);
    if (known !== undefined) return known;
    this.sizes.set(`${img.pool}/${img.image}`, 0);
    void this.info(img).catch(() => this.sizes.delete(`${img.pool}/${img.image}`));
    return 0;
  }

  /** The image the node creates for a disk: `<instance>-<disk uuid>` in its pool. */
  imageFor(instance: string, diskUuid: string): RbdImage {
    return { pool: this.pool, image: assertRbdName(`${instance}-${diskUuid}`, 'image') };
  }

  private async rbd(args: string[]): Promise<string> {
    const common = ['-c', this.confFile, '-m', monArg(this.access.monitors), '--id', this.access.user, '--keyring', this.config.keyring];
    const r = await run(this.rbdBinary, [...common, ...args], { timeout: RBD_CALL_TIMEOUT_MS, maxBuffer: 4 * MiB, encoding: 'utf8' });
    return r.stdout;
  }

  /** What the node's instances get (KvmInstanceOptions.rbd). */
  get host(): RbdHost {
    return {
      access: this.access,
      confFile: this.confFile,
      removeImage: async (img) => {
        await this.remove(img);
      },
      checkImage: async (img) => {
        await this.assertOpens(img);
      },
    };
  }

  /** Size of an image; undefined when it does not exist. */
  async info(img: RbdImage): Promise<RbdImageInfo | undefined> {
    try {
      const out = await this.rbd(['info', `${img.pool}/${img.image}`, '--format', 'json']);
      const size = Number((JSON.parse(out) as { size?: number }).size);
      if (!Number.isSafeInteger(size)) throw new Error(`rbd info ${img.pool}/${img.image} gave no size`);
      this.sizes.set(`${img.pool}/${img.image}`, size);
      return { sizeBytes: size };
    } catch (err) {
      if (isMissing(err)) {
        this.sizes.delete(`${img.pool}/${img.image}`);
        return undefined;
      }
      throw failedPrecondition(`RBD image ${img.pool}/${img.image}: rbd info failed: ${rbdWords(err)}`);
    }
  }

  /** An image to adopt must exist: its size. */
  async assertExists(img: RbdImage): Promise<RbdImageInfo> {
    const info = await this.info(img);
    if (!info) throw notFound(`RBD image ${img.pool}/${img.image} does not exist`);
    return info;
  }

  /** The image opens with the node's access (what QEMU gets): else FAILED_PRECONDITION with librados' words. */
  async assertOpens(img: RbdImage): Promise<void> {
    try {
      await this.rbd(['info', `${img.pool}/${img.image}`, '--format', 'json']);
    } catch (err) {
      throw failedPrecondition(`RBD image ${img.pool}/${img.image} cannot be opened as client.${this.access.user} through ${monArg(this.access.monitors)}: ${rbdWords(err)}`);
    }
  }

  /** Creates a new image of `bytes` (whole MiB). */
  async create(img: RbdImage, bytes: number): Promise<void> {
    const mib = wholeMiB(img, bytes);
    try {
      await this.rbd(['create', `${img.pool}/${img.image}`, '--size', `${mib}M`]);
      this.sizes.set(`${img.pool}/${img.image}`, bytes);
    } catch (err) {
      throw failedPrecondition(`creating RBD image ${img.pool}/${img.image} (${mib} MiB) failed: ${rbdWords(err)}`);
    }
  }

  /** Grows an image to `bytes` (whole MiB; never shrinks). */
  async resizeImage(pool: string, image: string, bytes: number): Promise<void> {
    const img = { pool: assertRbdName(pool, 'pool'), image: assertRbdName(image, 'image') };
    const mib = wholeMiB(img, bytes);
    const now = await this.assertExists(img);
    if (bytes < now.sizeBytes) throw invalidArgument(`RBD image ${pool}/${image} is ${now.sizeBytes} bytes; it can only grow, not shrink to ${bytes}`);
    if (bytes === now.sizeBytes) return;
    try {
      await this.rbd(['resize', `${pool}/${image}`, '--size', `${mib}M`, '--no-progress']);
      this.sizes.set(`${pool}/${image}`, bytes);
    } catch (err) {
      throw failedPrecondition(`resizing RBD image ${pool}/${image} to ${mib} MiB failed: ${rbdWords(err)}`);
    }
  }

  /** Deletes an image; returns false when it was gone already. */
  async remove(img: RbdImage): Promise<boolean> {
    try {
      await this.rbd(['rm', `${img.pool}/${img.image}`, '--no-progress']);
      this.sizes.delete(`${img.pool}/${img.image}`);
      return true;
    } catch (err) {
      if (isMissing(err)) return false;
      throw failedPrecondition(`deleting RBD image ${img.pool}/${img.image} failed: ${rbdWords(err)}`);
    }
  }

  /** The node's images of an instance (for instance remove): `<instance>-*` in its pool. */
  async imagesOf(instance: string): Promise<RbdImage[]> {
    let out: string;
    try {
      out = await this.rbd(['ls', this.pool, '--format', 'json']);
    } catch (err) {
      throw failedPrecondition(`listing RBD pool ${this.pool} failed: ${rbdWords(err)}`);
    }
    return (JSON.parse(out) as string[]).filter((n) => n.startsWith(`${instance}-`)).map((image) => ({ pool: this.pool, image }));
  }
}

function wholeMiB(img: RbdImage, bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % MiB !== 0)
    throw invalidArgument(`RBD image ${img.pool}/${img.image}: size ${bytes} bytes is not a positive whole number of MiB`);
  return bytes / MiB;
}

/** --rbd-* options: all of monitors, pool and keyring, or none. */
export function rbdConfigFromFlags(flags: { monitors?: string; pool?: string; id?: string; keyring?: string }): RbdPoolConfig | undefined {
  const given = [flags.monitors, flags.pool, flags.keyring].filter((v) => v !== undefined).length;
  if (given === 0) {
    if (flags.id !== undefined) throw new Error('--rbd-id needs --rbd-monitors, --rbd-pool and --rbd-keyring');
    return undefined;
  }
  if (given !== 3) throw new Error('RBD needs all of --rbd-monitors, --rbd-pool and --rbd-keyring');
  const clientId = flags.id ?? DEFAULT_RBD_ID;
  if (clientId.startsWith('client.')) throw new Error(`--rbd-id ${excerpt(clientId)}: give the id without "client."`);
  try {
    assertRbdName(flags.pool as string, 'pool');
  } catch (err) {
    throw new Error(`--rbd-pool: ${(err as Error).message}`);
  }
  return { monitors: parseRbdMonitors(flags.monitors as string), pool: flags.pool as string, clientId, keyring: flags.keyring as string };
}

/** The RBD images the node made for an instance's disks (adopted ones are not the node's to delete). */
export function createdImages(data: RuntimeData): RbdImage[] {
  return [...data.block_devices, ...(data.scsi_disks ?? [])].filter((r) => nodeMadeImage(r)).map((r) => rbdImageOf(r) as RbdImage);
}

/** Deletes images (nothing holds them: QEMU is stopped or never had them); a failure goes to `failed`. */
export async function removeImages(pool: RbdPool | undefined, images: RbdImage[], failed: (img: RbdImage, why: string) => void): Promise<void> {
  for (const img of images) {
    try {
      if (!pool) throw new Error('this node has no RBD configured');
      await pool.remove(img);
    } catch (err) {
      failed(img, err instanceof Error ? err.message : String(err));
    }
  }
}

/** Creates the missing images of a start (returns those it made); on a failure deletes those again and throws. */
export async function ensureImages(pool: RbdPool | undefined, wanted: Array<{ image: RbdImage; sizeBytes: number }>, failed: (img: RbdImage, why: string) => void): Promise<RbdImage[]> {
  const made: RbdImage[] = [];
  if (!pool) return made;
  try {
    for (const n of wanted) {
      if (await pool.info(n.image)) continue;
      await pool.create(n.image, n.sizeBytes);
      made.push(n.image);
    }
  } catch (err) {
    await removeImages(pool, made, failed);
    throw err;
  }
  return made;
}
