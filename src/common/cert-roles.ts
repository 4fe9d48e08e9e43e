/**
 * What a cluster certificate is for. Every certificate the cluster CA signs
 * carries exactly one role as a SAN URI:
 *
 *   urn:gnt-hotplug:master       the master daemon (server to the CLI, client to nodes)
 *   urn:gnt-hotplug:cli          the CLI (client of the master)
 *   urn:gnt-hotplug:node:NAME    the node daemon of node NAME (server to the master)
 *
 * Peers are authorised by this role, never by the CA signature alone. A
 * certificate without a role comes from a cluster made before roles existed:
 * it is refused with a hint to run "gnt-cluster renew-crypto".
 */
import * as crypto from 'node:crypto';
import { excerpt } from './excerpt';

export const ROLE_URI_PREFIX = 'urn:gnt-hotplug:';

export type CertRole = { kind: 'master' } | { kind: 'cli' } | { kind: 'node'; name: string };

export const MASTER_ROLE: CertRole = { kind: 'master' };
export const CLI_ROLE: CertRole = { kind: 'cli' };
export const nodeRole = (name: string): CertRole => ({ kind: 'node', name });

/** Node names in a role (the rule of src/master/validate.ts checkName). */
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The SAN URI of a role, e.g. urn:gnt-hotplug:node:node1. */
export function roleUri(role: CertRole): string {
  if (role.kind !== 'node') return `${ROLE_URI_PREFIX}${role.kind}`;
  if (!NODE_NAME.test(role.name) || role.name.includes('..')) throw new Error(`node name ${excerpt(role.name)} cannot be put in a certificate role`);
  return `${ROLE_URI_PREFIX}node:${role.name}`;
}

/** "master", "cli" or "node NAME", for messages. */
export function describeRole(role: CertRole | undefined): string {
  if (!role) return 'no role';
  return role.kind === 'node' ? `node ${role.name}` : role.kind;
}

export const sameRole = (a: CertRole, b: CertRole): boolean =>
  a.kind === b.kind && (a.kind !== 'node' || (b.kind === 'node' && a.name === b.name));

/** A certificate's role could not be read: missing, several, or unknown. */
export class CertRoleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CertRoleError';
  }
}

/** The message for a certificate without a role (an old cluster). */
export const NO_ROLE_HINT =
  'the certificate carries no gnt-hotplug role (it predates certificate roles): run "gnt-cluster renew-crypto" on the master to reissue the cluster\'s certificates';

function parseUri(uri: string): CertRole {
  const rest = uri.slice(ROLE_URI_PREFIX.length);
  if (rest === 'master') return MASTER_ROLE;
  if (rest === 'cli') return CLI_ROLE;
  if (rest.startsWith('node:')) {
    const name = rest.slice('node:'.length);
    if (NODE_NAME.test(name) && !name.includes('..')) return nodeRole(name);
  }
  throw new CertRoleError(`the certificate's role ${excerpt(uri)} is not one of master, cli, node:NAME`);
}

/**
 * The role in a subjectAltName text as Node prints it
 * ("DNS:localhost, IP Address:127.0.0.1, URI:urn:gnt-hotplug:cli").
 * Throws CertRoleError when there is none, several, or an unknown one.
 */
export function roleFromSubjectAltName(san: string | undefined): CertRole {
  const uris = (san ?? '')
    .split(/,\s*/)
    .filter((e) => e.startsWith('URI:'))
    .map((e) => e.slice(4))
    .filter((u) => u.startsWith(ROLE_URI_PREFIX));
  if (uris.length === 0) throw new CertRoleError(NO_ROLE_HINT);
  if (uris.length > 1) throw new CertRoleError(`the certificate carries ${uris.length} gnt-hotplug roles; exactly one is allowed`);
  return parseUri(uris[0]);
}

/** SHA-256 fingerprint of a DER certificate, as Node prints it (AB:CD:...). */
export function fingerprintOfDer(der: Buffer): string {
  const hex = crypto.createHash('sha256').update(der).digest('hex').toUpperCase();
  return hex.match(/../g)!.join(':');
}

export interface CertFacts {
  role: CertRole;
  fingerprint: string;
  /** The subjectAltName text ("DNS:localhost, IP Address:127.0.0.1, URI:..."). */
  subjectAltName: string;
}

/** The DNS names and IP addresses of a subjectAltName text (to reissue a certificate for the same names). */
export function altNamesOf(san: string): { dns: string[]; ip: string[] } {
  const entries = san.split(/,\s*/);
  return {
    dns: entries.filter((e) => e.startsWith('DNS:')).map((e) => e.slice(4)),
    ip: entries.filter((e) => e.startsWith('IP Address:')).map((e) => e.slice('IP Address:'.length)),
  };
}

/**
 * The caller on the master's local unix socket (master/local-socket.ts):
 * root on the master node, who presents no certificate and has the rights
 * of the cluster's CLI certificate. Its fingerprint is no certificate's, so
 * no revocation applies to it.
 */
export const LOCAL_ADMIN: CertFacts = Object.freeze({ role: CLI_ROLE, fingerprint: 'local-socket', subjectAltName: '' });

/** Role and fingerprint of a PEM certificate (the first in the text). */
export function certFacts(pem: Buffer | string): CertFacts {
  const x = new crypto.X509Certificate(pem);
  return { role: roleFromSubjectAltName(x.subjectAltName), fingerprint: x.fingerprint256, subjectAltName: x.subjectAltName ?? '' };
}

/** Role and fingerprint of a peer certificate from a TLS socket (tls.PeerCertificate). */
export function peerFacts(peer: { subjectaltname?: string; raw?: Buffer; fingerprint256?: string }): CertFacts {
  const fingerprint = peer.raw ? fingerprintOfDer(peer.raw) : (peer.fingerprint256 ?? '');
  return { role: roleFromSubjectAltName(peer.subjectaltname), fingerprint, subjectAltName: peer.subjectaltname ?? '' };
}

/** Whether a PEM certificate is signed by one of the CAs in a PEM bundle, and valid now. */
export function verifiedBy(certPem: Buffer | string, bundlePem: Buffer | string): boolean {
  const cert = new crypto.X509Certificate(certPem);
  const now = Date.now();
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) return false;
  return splitPem(bundlePem).some((ca) => {
    try {
      const x = new crypto.X509Certificate(ca);
      return x.ca && cert.checkIssued(x) && cert.verify(x.publicKey);
    } catch {
      return false;
    }
  });
}

/** The PEM certificates in a bundle. */
export function splitPem(bundle: Buffer | string): string[] {
  return String(bundle).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}
