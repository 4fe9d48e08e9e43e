/**
 * NodeRenewCertificate (proto/node.proto): the master hands this node its
 * new certificate, key and CA bundle (gnt-cluster renew-crypto). Everything
 * is checked before anything is written; then the --ca/--cert/--key files
 * are replaced durably and the server presents the new material to every new
 * connection. Instances and their QEMUs are not touched.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { certFacts, describeRole, sameRole, nodeRole, splitPem, verifiedBy } from '../common/cert-roles';
import { keyMatchesCert, type Identity, type LiveTls, type TlsMaterial } from '../common/pki';
import { boundedDetails } from '../common/excerpt';
import type { NodeRenewCertificateRequest__Output } from '../generated/gnt/node/v1/NodeRenewCertificateRequest';
import type { NodeRenewCertificateReply } from '../generated/gnt/node/v1/NodeRenewCertificateReply';
import type { Logger } from './instance-registry';

export interface CertServiceOptions {
  nodeName: string;
  live: LiveTls;
  /** The files the daemon was started with (--ca, --cert, --key); absent: renewals live in memory only. */
  files?: Identity;
  log: Logger;
}

class RenewRefused extends Error {}

/** Checks the request; returns the material to install. */
function checkRenewal(nodeName: string, req: NodeRenewCertificateRequest__Output, callerDer: Buffer | undefined): TlsMaterial {
  const tls: TlsMaterial = { ca: Buffer.from(req.caBundlePem), cert: Buffer.from(req.certPem), key: Buffer.from(req.keyPem) };
  if (splitPem(tls.ca).length === 0) throw new RenewRefused('the CA bundle holds no PEM certificate');
  let facts;
  try {
    facts = certFacts(tls.cert);
  } catch (err) {
    throw new RenewRefused(`the new certificate is not usable: ${(err as Error).message}`);
  }
  if (!sameRole(facts.role, nodeRole(nodeName)))
    throw new RenewRefused(`the new certificate is for ${describeRole(facts.role)}, not for node ${nodeName}`);
  if (!keyMatchesCert(tls.key, tls.cert)) throw new RenewRefused('the new key does not belong to the new certificate');
  if (!verifiedBy(tls.cert, tls.ca)) throw new RenewRefused('the new CA bundle does not verify the new certificate (or it is not valid now)');
  if (callerDer) {
    const callerPem = new crypto.X509Certificate(callerDer).toString();
    if (!verifiedBy(callerPem, tls.ca))
      throw new RenewRefused("the new CA bundle does not trust the master certificate this request came with: the node would lock the master out");
  }
  return tls;
}

/** Writes the three files: all temporary files first (fsynced), then the renames, then one fsync of each directory. */
function persist(files: Identity, tls: TlsMaterial): void {
  const parts: [string, Buffer, number][] = [
    [files.ca, tls.ca, 0o644],
    [files.cert, tls.cert, 0o644],
    [files.key, tls.key, 0o600],
  ];
  const temps: string[] = [];
  try {
    for (const [file, data, mode] of parts) {
      const tmp = `${file}.renew-${process.pid}`;
      const fd = fs.openSync(tmp, 'w', mode);
      temps.push(tmp);
      try {
        fs.writeSync(fd, data);
        fs.fchmodSync(fd, mode);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  } catch (err) {
    for (const t of temps) fs.rmSync(t, { force: true });
    throw err;
  }
  parts.forEach(([file], i) => fs.renameSync(temps[i], file));
  for (const dir of new Set(parts.map(([file]) => path.dirname(file)))) {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

export function renewCertificateHandler(opts: CertServiceOptions): grpc.handleUnaryCall<NodeRenewCertificateRequest__Output, NodeRenewCertificateReply> {
  return (call, callback) => {
    const caller = (call.getAuthContext()?.sslPeerCertificate as { raw?: Buffer } | undefined)?.raw;
    let tls: TlsMaterial;
    try {
      tls = checkRenewal(opts.nodeName, call.request, caller);
    } catch (err) {
      const details = boundedDetails(`certificate not renewed: ${(err as Error).message}`);
      opts.log(`NodeRenewCertificate INVALID_ARGUMENT: ${details}`);
      callback({ code: grpc.status.INVALID_ARGUMENT, details }, null);
      return;
    }
    try {
      if (opts.files) persist(opts.files, tls);
      opts.live.update(tls);
    } catch (err) {
      const details = boundedDetails(`certificate not renewed: cannot write the new files: ${(err as Error).message}`);
      opts.log(`NodeRenewCertificate INTERNAL: ${details}`);
      callback({ code: grpc.status.INTERNAL, details }, null);
      return;
    }
    const fingerprint = new crypto.X509Certificate(tls.cert).fingerprint256;
    opts.log(`NodeRenewCertificate OK: now serving certificate ${fingerprint} (${splitPem(tls.ca).length} CA certificate(s) trusted)`);
    callback(null, { fingerprint, persisted: Boolean(opts.files) });
  };
}
