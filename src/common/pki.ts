/**
 * The cluster's certificates: one CA, and certificates it signs for the
 * master, every node daemon and the CLI. Mutual TLS everywhere: a peer must
 * chain to the cluster CA, and is then authorised by the role its
 * certificate carries as a SAN URI (cert-roles.ts). Keys are 0600.
 * Uses the openssl command line (Node can verify certificates but not make them).
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { roleUri, type CertRole } from './cert-roles';

export interface CertPaths {
  cert: string;
  key: string;
}

export interface Identity extends CertPaths {
  ca: string;
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`openssl ${args[0]} failed: ${stderr || String(err)}`);
  }
}

/** Creates a CA key and self-signed certificate in `dir` (ca.pem, ca.key). */
export function createCa(dir: string, commonName: string): CertPaths {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = path.join(dir, 'ca.pem');
  const key = path.join(dir, 'ca.key');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '3650', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  fs.chmodSync(key, 0o600);
  return { cert, key };
}

export interface AltNames {
  dns?: string[];
  ip?: string[];
}

/**
 * Issues `<name>.pem`/`<name>.key` in `dir`, signed by `ca`, valid as both TLS
 * server and client, for the given DNS names and IP addresses, carrying
 * `role` as a SAN URI (cert-roles.ts).
 */
export function issueCertificate(
  ca: CertPaths,
  dir: string,
  name: string,
  role: CertRole,
  altNames: AltNames = {},
): CertPaths {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  const sans = [...(altNames.dns ?? ['localhost']).map((d) => `DNS:${d}`), ...(altNames.ip ?? ['127.0.0.1']).map((i) => `IP:${i}`), `URI:${roleUri(role)}`];
  fs.writeFileSync(ext, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth,clientAuth',
    `subjectAltName=${sans.join(',')}`,
  ].join('\n'));
  try {
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
    fs.chmodSync(key, 0o600);
    openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial',
      '-out', cert, '-days', '3650', '-extfile', ext]);
  } finally {
    fs.rmSync(csr, { force: true });
    fs.rmSync(ext, { force: true });
  }
  return { cert, key };
}

export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export function readIdentity(id: Identity): TlsMaterial {
  return { ca: fs.readFileSync(id.ca), cert: fs.readFileSync(id.cert), key: fs.readFileSync(id.key) };
}

/**
 * Writes `data` to `file` so that a crash leaves the old or the new content,
 * never a mix: a temporary file in the same directory, fsync, rename over,
 * fsync of the directory.
 */
export function writeFileDurably(file: string, data: Buffer | string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dirFd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

/** Writes an identity's three files durably (the key 0600, certificates 0644). */
export function writeIdentity(id: Identity, tls: TlsMaterial): void {
  writeFileDurably(id.key, tls.key, 0o600);
  writeFileDurably(id.cert, tls.cert, 0o644);
  writeFileDurably(id.ca, tls.ca, 0o644);
}

/** Whether a PEM private key belongs to a PEM certificate. */
export function keyMatchesCert(keyPem: Buffer | string, certPem: Buffer | string): boolean {
  try {
    return new crypto.X509Certificate(certPem).checkPrivateKey(crypto.createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

type CaListener = (update: { caCertificate: Buffer } | null) => void;
type IdListener = (update: { certificate: Buffer; privateKey: Buffer } | null) => void;

/**
 * The TLS material a server presents and trusts, replaceable while it runs
 * (gnt-cluster renew-crypto): a grpc-js CertificateProvider held in memory.
 * New connections use the new material; connections already open keep
 * theirs until they close.
 */
export class LiveTls {
  private readonly caListeners = new Set<CaListener>();
  private readonly idListeners = new Set<IdListener>();
  private readonly creds: grpc.ServerCredentials;

  constructor(private tls: TlsMaterial) {
    const provider = {
      addCaCertificateListener: (l: CaListener) => {
        this.caListeners.add(l);
        process.nextTick(l, { caCertificate: this.tls.ca });
      },
      removeCaCertificateListener: (l: CaListener) => this.caListeners.delete(l),
      addIdentityCertificateListener: (l: IdListener) => {
        this.idListeners.add(l);
        process.nextTick(l, { certificate: this.tls.cert, privateKey: this.tls.key });
      },
      removeIdentityCertificateListener: (l: IdListener) => this.idListeners.delete(l),
    };
    // One provider for both roles: grpc-js 1.14 passes the two arguments to the
    // constructor in the other order, which does not matter then.
    this.creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, true);
  }

  /** Server credentials that require a client certificate signed by the current CA bundle. */
  serverCredentials(): grpc.ServerCredentials {
    return this.creds;
  }

  get material(): TlsMaterial {
    return this.tls;
  }

  /** Presents `tls` to, and trusts its CA bundle for, every connection from now on. */
  update(tls: TlsMaterial): void {
    if (!keyMatchesCert(tls.key, tls.cert)) throw new Error('the new key does not belong to the new certificate');
    this.tls = tls;
    for (const l of this.idListeners) l({ certificate: tls.cert, privateKey: tls.key });
    for (const l of this.caListeners) l({ caCertificate: tls.ca });
  }
}
