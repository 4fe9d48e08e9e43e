/**
 * The cluster's certificates: one CA, and certificates it signs for the
 * master, every node daemon and the CLI. Mutual TLS everywhere: a peer is
 * trusted only if its certificate chains to the cluster CA. Keys are 0600.
 * Uses the openssl command line (Node can verify certificates but not make them).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

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

/**
 * Issues `<name>.pem`/`<name>.key` in `dir`, signed by `ca`, valid as both TLS
 * server and client, for the given DNS names and IP addresses.
 */
export function issueCertificate(
  ca: CertPaths,
  dir: string,
  name: string,
  altNames: { dns?: string[]; ip?: string[] } = {},
): CertPaths {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  const sans = [...(altNames.dns ?? ['localhost']).map((d) => `DNS:${d}`), ...(altNames.ip ?? ['127.0.0.1']).map((i) => `IP:${i}`)];
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
