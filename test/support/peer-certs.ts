/**
 * Clients with chosen certificates, for the tests of certificate roles and
 * bounded RPC (cert-roles, rpc-bounds, renew-crypto): a Master client, a
 * NodeDaemon client, a raw-bytes client, and certificates made with openssl
 * outside the cluster's rules (no role, another CA).
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Identity } from '../../src/common/pki';
import { CHANNEL_LIMITS } from '../../src/common/rpc-guard';
import { loadMasterProto } from '../../src/master/server';
import type { MasterClient } from '../../src/generated/gnt/master/v1/Master';

export function sslCreds(id: Identity): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(fs.readFileSync(id.ca), fs.readFileSync(id.key), fs.readFileSync(id.cert));
}

export function masterClient(address: string, id: Identity): MasterClient {
  const Master = loadMasterProto().gnt.master.v1.Master;
  return new Master(address, sslCreds(id), CHANNEL_LIMITS);
}

type Unary = (req: unknown, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: unknown) => void) => unknown;

/** Calls a unary method; resolves with the error (null when it succeeded) and the reply. */
export function callRaw(client: grpc.Client, method: string, req: unknown, timeoutMs = 10_000): Promise<{ err: grpc.ServiceError | null; reply: unknown }> {
  const fn = (client as unknown as Record<string, Unary>)[method].bind(client);
  return new Promise((resolve) => fn(req, { deadline: Date.now() + timeoutMs }, (err, reply) => resolve({ err, reply })));
}

/** Sends `bytes` as the request of `path` (e.g. /gnt.node.v1.NodeDaemon/InstanceInfo), unparsed. */
export function sendBytes(client: grpc.Client, methodPath: string, bytes: Buffer, timeoutMs = 10_000): Promise<{ err: grpc.ServiceError | null; reply?: Buffer }> {
  const id = (b: Buffer): Buffer => b;
  return new Promise((resolve) =>
    client.makeUnaryRequest(methodPath, id, id, bytes, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, reply) =>
      resolve({ err: err ?? null, reply }),
    ),
  );
}

/** A certificate signed by `ca` with the given SAN line (no role unless the SAN has one), made with openssl directly. */
export function rawCertificate(ca: { cert: string; key: string }, dir: string, name: string, san: string): { cert: string; key: string } {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`], { stdio: 'pipe' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '30', '-extfile', ext], { stdio: 'pipe' });
  return { cert, key };
}

export const codeName = (err: grpc.ServiceError | null): string => (err ? (grpc.status[err.code] ?? String(err.code)) : 'OK');
