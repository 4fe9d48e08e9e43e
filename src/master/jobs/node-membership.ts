/**
 * gnt-node add and gnt-node remove. A node joins only if the daemon at its
 * address presents a certificate for that node name (role
 * urn:gnt-hotplug:node:NAME) that is not revoked; its fingerprint is
 * recorded with it. Removing a node (no instances left) revokes that
 * fingerprint: the master refuses the certificate on every connection from
 * then on, and re-adding a node with it is refused.
 */
import { ConfigError, type ConfigStore } from '../config/config-store';
import type { CertStore } from '../config/cert-store';
import type { NodeRpc, NodeRpcError } from '../node-rpc';
import { JobError, type JobContext } from './queue';

export interface MembershipDeps {
  config: ConfigStore;
  certs: CertStore;
  rpc: NodeRpc;
}

export async function nodeAdd(deps: MembershipDeps, name: string, address: string, ctx: JobContext): Promise<void> {
  const { config, certs, rpc } = deps;
  if (config.findNode(name)) throw new ConfigError(`node "${name}" already exists`, 'ALREADY_EXISTS');
  const target = { name, address };
  // A fresh channel: its connection checks the certificate now.
  rpc.forget(target);
  ctx.log(`asking the node daemon at ${address} for NodeInfo (its certificate must be for node ${name})`);
  let info;
  try {
    info = await rpc.nodeInfo(target);
  } catch (err) {
    rpc.forget(target);
    throw new JobError(`node ${name} was not added: ${(err as Error).message}`, (err as NodeRpcError).code ?? '');
  }
  const peer = rpc.peerOf(target);
  rpc.forget(target);
  if (!peer) throw new JobError(`node ${name} was not added: the connection to ${address} showed no certificate`, 'UNAUTHENTICATED');
  if (info.name && info.name !== name)
    throw new JobError(`node ${name} was not added: the node daemon at ${address} calls itself "${info.name}"`, 'FAILED_PRECONDITION');
  ctx.log(`node ${name}: ${info.cpus} CPUs, ${info.memoryTotalMib} MiB memory, QEMU ${info.qemuVersion}, storage ${info.storageDir}`);
  config.db.transaction(() => {
    config.addNode(name, address);
    certs.setNodeFingerprint(name, peer.fingerprint);
  })();
  ctx.log(`node ${name} added (certificate ${peer.fingerprint})`);
}

export async function nodeRemove(deps: MembershipDeps, name: string, ctx: JobContext): Promise<void> {
  const { config, certs, rpc } = deps;
  const node = config.getNode(name);
  // The certificate the daemon presents now is revoked too, when it is reachable and differs from the recorded one.
  let current: string | undefined;
  try {
    rpc.forget(node);
    await rpc.nodeInfo(node);
    current = rpc.peerOf(node)?.fingerprint;
  } catch (err) {
    ctx.log(`node ${name} does not answer (${(err as Error).message}); revoking its recorded certificate only`);
  }
  const { fingerprints } = certs.removeNode(name, current);
  rpc.forget(node);
  ctx.log(`node ${name} removed; certificate(s) revoked: ${fingerprints.join(', ') || 'none recorded'}`);
}
