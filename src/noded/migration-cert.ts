/**
 * Whether a node certificate can serve a TLS migration to `host`: the
 * source QEMU checks the target's certificate for the address it connects
 * to (tls-hostname), as an IP address SAN or a DNS name SAN.
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';

export function certCoversHost(certPem: Buffer | string, host: string): boolean {
  const x = new crypto.X509Certificate(certPem);
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return net.isIP(bare) ? x.checkIP(bare) !== undefined : x.checkHost(bare) !== undefined;
}
