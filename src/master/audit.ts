/**
 * The master's AuditLog RPC (docs/audit.md): the audit records of an
 * instance, read from the node it is on, or every record of a node.
 */
import type { ConfigStore } from './config/config-store';
import type { MasterAuditReply } from '../generated/gnt/master/v1/MasterAuditReply';
import type { MasterAuditRequest__Output } from '../generated/gnt/master/v1/MasterAuditRequest';
import type { NodeRpc } from './node-rpc';
import { UsageError } from './validate';

export async function masterAuditLog(config: ConfigStore, rpc: NodeRpc, req: MasterAuditRequest__Output): Promise<MasterAuditReply> {
  if (!req.instance === !req.node) throw new UsageError('give either an instance or a node');
  const node = req.instance ? config.getInstance(req.instance).node : config.getNode(req.node);
  const reply = await rpc.auditLog({ name: node.name, address: node.address }, { instance: req.instance, since: req.since, limit: req.limit });
  return { node: node.name, records: reply.records, skipped: reply.skipped };
}
