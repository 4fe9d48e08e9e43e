/**
 * gnt-cluster renew-crypto [--new-ca]: reissues the master's, the CLI's and
 * every node's certificate, as a job (its steps are in gnt-job info).
 * Running instances are not touched: a node only swaps the TLS material it
 * presents to new connections (NodeRenewCertificate, proto/node.proto).
 *
 * Without --new-ca the current CA signs the new certificates. With --new-ca
 * the CA is rolled over so that no connection is refused half-way:
 *   1. the master trusts the old and the new CA (pki/ca.pem holds both);
 *   2. every node gets a certificate of the new CA and the two-CA bundle;
 *   3. the master and the CLI get certificates of the new CA;
 *   4. every node gets the bundle with only the new CA;
 *   5. the master trusts only the new CA; the old CA's files are kept in
 *      pki/old-ca-TIME/.
 * The certificates replaced are put on the deny-list. Every node must answer
 * first: nothing is changed when one does not. A job that fails half-way
 * leaves the staging directory (pki/renew-*, holding the new CA during a
 * rollover) and says where it stopped.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { altNamesOf, certFacts, CLI_ROLE, MASTER_ROLE, nodeRole, splitPem, type CertRole } from '../../common/cert-roles';
import { createCa, issueCertificate, writeFileDurably, type CertPaths } from '../../common/pki';
import type { ClusterDir } from '../cluster-dir';
import type { CertStore } from '../config/cert-store';
import type { ConfigStore, NodeRow } from '../config/config-store';
import type { NodeRpc } from '../node-rpc';
import { JobError, type JobContext } from './queue';

export const RENEW_CRYPTO_OP = 'cluster-renew-crypto';

export interface RenewDeps {
  config: ConfigStore;
  certs: CertStore;
  rpc: NodeRpc;
  dir: ClusterDir;
  /** Re-reads pki/ca.pem, master.pem, master.key into the master's server and client credentials. */
  reload(): void;
}

interface Issued {
  cert: Buffer;
  key: Buffer;
}

interface NodePlan {
  node: NodeRow;
  alt: { dns: string[]; ip: string[] };
  oldFingerprint: string;
  issued?: Issued;
}

/** Issues a certificate into the staging dir and reads it back (the files are removed). */
function issue(ca: CertPaths, staging: string, name: string, role: CertRole, alt: { dns?: string[]; ip?: string[] }): Issued {
  const files = issueCertificate(ca, staging, name, role, alt);
  const out = { cert: fs.readFileSync(files.cert), key: fs.readFileSync(files.key) };
  fs.rmSync(files.cert, { force: true });
  fs.rmSync(files.key, { force: true });
  return out;
}

/** Asks every node for NodeInfo over a fresh channel: each must answer with a certificate for itself. */
async function planNodes(deps: RenewDeps, ctx: JobContext): Promise<NodePlan[]> {
  const plans: NodePlan[] = [];
  for (const node of deps.config.listNodes()) {
    deps.rpc.forget(node);
    try {
      await deps.rpc.nodeInfo(node);
    } catch (err) {
      throw new JobError(`nothing was renewed: ${(err as Error).message}; every node must answer (bring it up, or remove it with gnt-node remove)`, 'UNAVAILABLE');
    }
    const peer = deps.rpc.peerOf(node);
    if (!peer) throw new JobError(`nothing was renewed: no certificate seen from node ${node.name}`, 'UNAVAILABLE');
    plans.push({ node, alt: altNamesOf(peer.subjectAltName), oldFingerprint: peer.fingerprint });
    ctx.log(`node ${node.name} answers with certificate ${peer.fingerprint}`);
  }
  return plans;
}

async function pushNode(deps: RenewDeps, plan: NodePlan, bundle: Buffer, ctx: JobContext, step: string): Promise<void> {
  const issued = plan.issued!;
  try {
    const reply = await deps.rpc.nodeRenewCertificate(plan.node, {
      caBundlePem: bundle.toString(), certPem: issued.cert.toString(), keyPem: issued.key.toString(),
    });
    ctx.log(`${step}: node ${plan.node.name} serves certificate ${reply.fingerprint}${reply.persisted ? '' : ' (not written to its files)'}, trusting ${splitPem(bundle).length} CA(s)`);
  } catch (err) {
    throw new JobError(`${step}: node ${plan.node.name}: ${(err as Error).message}`, 'ABORTED');
  }
  // The next connection checks the new certificate.
  deps.rpc.forget(plan.node);
}

function writeMasterAndCli(deps: RenewDeps, master: Issued, cli: Issued): void {
  const { masterIdentity: m, cliIdentity: c } = deps.dir;
  writeFileDurably(m.key, master.key, 0o600);
  writeFileDurably(m.cert, master.cert, 0o644);
  writeFileDurably(c.key, cli.key, 0o600);
  writeFileDurably(c.cert, cli.cert, 0o644);
}

function revokeReplaced(deps: RenewDeps, replaced: { fingerprint: string; subject: string }[]): void {
  for (const r of replaced) if (r.fingerprint) deps.certs.revoke(r.fingerprint, r.subject, 'replaced by gnt-cluster renew-crypto');
}

export async function runRenewCrypto(deps: RenewDeps, op: { newCa: boolean }, ctx: JobContext): Promise<void> {
  const { dir } = deps;
  const oldCaPem = fs.readFileSync(dir.ca.cert);
  if (splitPem(oldCaPem).length !== 1)
    throw new JobError(`nothing was renewed: ${dir.ca.cert} holds ${splitPem(oldCaPem).length} certificates (an unfinished CA rollover?); it must hold the one CA whose key is ${dir.ca.key}`, 'FAILED_PRECONDITION');
  const masterOld = certFacts(fs.readFileSync(dir.masterIdentity.cert));
  const cliOld = certFacts(fs.readFileSync(dir.cliIdentity.cert));
  const plans = await planNodes(deps, ctx);
  const staging = fs.mkdtempSync(path.join(dir.pkiDir, 'renew-'));
  fs.chmodSync(staging, 0o700);
  ctx.log(`staging directory ${staging}`);
  let signer: CertPaths = dir.ca;
  let newCaPem: Buffer | undefined;
  if (op.newCa) {
    signer = createCa(path.join(staging, 'ca'), `gnt-hotplug CA ${dir.readClusterFile().name} ${new Date().toISOString()}`);
    newCaPem = fs.readFileSync(signer.cert);
    ctx.log(`new CA ${certFactsOfCa(newCaPem)}`);
  }
  for (const p of plans) p.issued = issue(signer, staging, p.node.name, nodeRole(p.node.name), p.alt);
  const masterNew = issue(signer, staging, 'master', MASTER_ROLE, altNamesOf(masterOld.subjectAltName));
  const cliNew = issue(signer, staging, 'cli', CLI_ROLE, altNamesOf(cliOld.subjectAltName));

  if (!newCaPem) {
    for (const p of plans) await pushNode(deps, p, oldCaPem, ctx, 'new node certificates');
    writeMasterAndCli(deps, masterNew, cliNew);
    deps.reload();
    ctx.log('the master and the CLI use their new certificates');
  } else {
    const both = Buffer.concat([oldCaPem, Buffer.from('\n'), newCaPem]);
    writeFileDurably(dir.ca.cert, both, 0o644);
    deps.reload();
    ctx.log('step 1: the master trusts the old and the new CA');
    for (const p of plans) await pushNode(deps, p, both, ctx, 'step 2');
    writeMasterAndCli(deps, masterNew, cliNew);
    deps.reload();
    ctx.log('step 3: the master and the CLI use certificates of the new CA');
    for (const p of plans) await pushNode(deps, p, newCaPem, ctx, 'step 4');
    const backup = path.join(dir.pkiDir, `old-ca-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    fs.mkdirSync(backup, { mode: 0o700 });
    writeFileDurably(path.join(backup, 'ca.pem'), oldCaPem, 0o644);
    writeFileDurably(path.join(backup, 'ca.key'), fs.readFileSync(dir.ca.key), 0o600);
    writeFileDurably(dir.ca.key, fs.readFileSync(signer.key), 0o600);
    writeFileDurably(dir.ca.cert, newCaPem, 0o644);
    deps.reload();
    ctx.log(`step 5: the master trusts only the new CA; the old CA is kept in ${backup}`);
  }
  for (const p of plans) deps.certs.setNodeFingerprint(p.node.name, certFacts(p.issued!.cert).fingerprint);
  revokeReplaced(deps, [
    ...plans.map((p) => ({ fingerprint: p.oldFingerprint, subject: `node ${p.node.name}` })),
    { fingerprint: masterOld.fingerprint, subject: 'master' },
    { fingerprint: cliOld.fingerprint, subject: 'cli' },
  ]);
  fs.rmSync(staging, { recursive: true, force: true });
  ctx.log(`renewed the certificates of the master, the CLI and ${plans.length} node(s); the replaced ones are revoked`);
}

function certFactsOfCa(pem: Buffer): string {
  return new crypto.X509Certificate(pem).fingerprint256;
}
