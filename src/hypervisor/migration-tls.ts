/**
 * TLS for the migration stream and the NBD disk copy: a QEMU
 * `tls-creds-x509` object made from the node's own certificate, key and the
 * cluster CA bundle (the ones it serves gRPC with; their extended key usage
 * is serverAuth and clientAuth, so one certificate serves as the target's
 * server and the source's client certificate).
 *
 * The object is added over QMP at the start of each migration, never on the
 * command line: QEMU reads the files at object-add, as its own user and
 * inside its chroot. So the node writes them into a fresh directory QEMU can
 * reach (inside the chroot when there is one, else beneath the system's
 * temporary directory), owned by QEMU's uid, mode 0700 with 0400 files, adds
 * the object and deletes the directory at once: the key stays on disk for the
 * few milliseconds of object-add, readable only by root and QEMU's user, and
 * afterwards only in QEMU's memory. Each migration reads the node's current
 * material, so after `gnt-cluster renew-crypto` the next migration uses the
 * new certificates; a running QEMU holds no credentials between migrations.
 *
 * The target gets endpoint=server with verify-peer=on (only a client whose
 * certificate the cluster CA signed gets through the handshake), the source
 * endpoint=client and `tls-hostname`: the target's certificate must name the
 * address the stream goes to.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InstanceStateError } from './errors';
import type { Monitor } from './qmp-client';

/** PEM material: the node's certificate and key, and the CA bundle it trusts. */
export interface TlsMaterial {
  ca: Buffer | string;
  cert: Buffer | string;
  key: Buffer | string;
}

/** Where QEMU runs: its uid/gid (undefined: as this process) and chroot. */
export interface QemuFilesOwner {
  owner?: { uid: number; gid: number };
  chroot?: string;
}

/** The one creds object of a QEMU's migration (source or target). */
export const MIGRATION_TLS_ID = 'gnt-migration-tls';

type Endpoint = 'server' | 'client';

/** Writes the creds directory where QEMU can read it; returns [host path, path QEMU opens]. */
function writeCredsDir(tls: TlsMaterial, endpoint: Endpoint, where: QemuFilesOwner): [string, string] {
  const base = where.chroot || os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, '.gnt-tls-'));
  try {
    const files: Array<[string, Buffer | string]> = [
      ['ca-cert.pem', tls.ca],
      [`${endpoint}-cert.pem`, tls.cert],
      [`${endpoint}-key.pem`, tls.key],
    ];
    for (const [name, data] of files) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, data, { mode: 0o400, flag: 'wx' });
      if (where.owner) fs.chownSync(file, where.owner.uid, where.owner.gid);
    }
    if (where.owner) fs.chownSync(dir, where.owner.uid, where.owner.gid);
    fs.chmodSync(dir, 0o700);
    const seen = where.chroot ? path.join('/', path.relative(where.chroot, dir)) : dir;
    return [dir, seen];
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Drops the creds object (and the migration's reference to it). Harmless when there is none. */
export async function removeMigrationTls(mon: Monitor): Promise<void> {
  await mon.execute('migrate-set-parameters', { 'tls-creds': '', 'tls-hostname': '' }).catch(() => undefined);
  await mon.execute('object-del', { id: MIGRATION_TLS_ID }).catch(() => undefined);
}

/** Adds the creds object for `endpoint` from `tls` (see the file comment); returns its id. */
export async function addMigrationTls(mon: Monitor, endpoint: Endpoint, tls: TlsMaterial, where: QemuFilesOwner): Promise<string> {
  await removeMigrationTls(mon);
  const [dir, seen] = writeCredsDir(tls, endpoint, where);
  try {
    await mon.execute('object-add', {
      'qom-type': 'tls-creds-x509', id: MIGRATION_TLS_ID, dir: seen, endpoint, 'verify-peer': true,
    });
  } catch (err) {
    const hint = where.chroot
      ? `; QEMU reads them as its own user inside its chroot ${where.chroot}, which that user must be able to enter (mode o+x or its group)`
      : '';
    throw new InstanceStateError(`QEMU could not load the migration TLS credentials: ${(err as Error).message}${hint}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return MIGRATION_TLS_ID;
}
