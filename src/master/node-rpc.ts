/**
 * Calls from the master to node daemons (proto/node.proto) over mutual TLS
 * with the master's certificate. Every connection to a node checks that the
 * node's certificate names that node (role urn:gnt-hotplug:node:NAME) and is
 * not revoked (options.refuse). Each call has a deadline; failures become
 * NodeRpcError carrying the gRPC status name (RESOURCE_EXHAUSTED, NOT_FOUND,
 * ...) and a message naming the node.
 */
import * as grpc from '@grpc/grpc-js';
import { callNode, connectNode, type NodeDaemonClient, type NodeMethod, type NodeReply, type NodeRequest } from '../common/node-client';
import { readIdentity, type Identity, type TlsMaterial } from '../common/pki';
import type { CertFacts } from '../common/cert-roles';
import type { NodeRenewCertificateRequest } from '../generated/gnt/node/v1/NodeRenewCertificateRequest';
import type { NodeRenewCertificateReply__Output } from '../generated/gnt/node/v1/NodeRenewCertificateReply';
import type { NodeInfoReply__Output } from '../generated/gnt/node/v1/NodeInfoReply';
import type { InstanceRuntime__Output } from '../generated/gnt/node/v1/InstanceRuntime';
import type { InstanceSpec } from '../generated/gnt/node/v1/InstanceSpec';
import type { InstanceListReply__Output } from '../generated/gnt/node/v1/InstanceListReply';
import type { HotplugSupportedReply__Output } from '../generated/gnt/node/v1/HotplugSupportedReply';
import type { HotplugDeviceRequest } from '../generated/gnt/node/v1/HotplugDeviceRequest';
import type { HotplugDeviceReply__Output } from '../generated/gnt/node/v1/HotplugDeviceReply';
import type { InstanceResizeRequest } from '../generated/gnt/node/v1/InstanceResizeRequest';
import type { InstanceResizeReply__Output } from '../generated/gnt/node/v1/InstanceResizeReply';
import type { InstanceExportReply__Output } from '../generated/gnt/node/v1/InstanceExportReply';
import type { InstanceReceiveRequest } from '../generated/gnt/node/v1/InstanceReceiveRequest';
import type { InstanceReceiveReply__Output } from '../generated/gnt/node/v1/InstanceReceiveReply';
import type { MigrationStartRequest } from '../generated/gnt/node/v1/MigrationStartRequest';
import type { MigrationStatus__Output } from '../generated/gnt/node/v1/MigrationStatus';
import type { InstanceVerifyRequest } from '../generated/gnt/node/v1/InstanceVerifyRequest';
import type { InstanceVerifyReply__Output } from '../generated/gnt/node/v1/InstanceVerifyReply';
import type { OperationRecord__Output } from '../generated/gnt/node/v1/OperationRecord';
import type { OperationCursor } from '../generated/gnt/node/v1/OperationCursor';
import type { OperationLogReply__Output } from '../generated/gnt/node/v1/OperationLogReply';
import type { GuestAgentView__Output } from '../generated/gnt/node/v1/GuestAgentView';
import type { GuestWaitReply__Output } from '../generated/gnt/node/v1/GuestWaitReply';
import type { GuestWaitRequest } from '../generated/gnt/node/v1/GuestWaitRequest';
import type { AuditLogRequest } from '../generated/gnt/node/v1/AuditLogRequest';
import type { AuditLogReply__Output } from '../generated/gnt/node/v1/AuditLogReply';
import { currentRequestedBy } from './jobs/requested-by';

/** Node methods that change an instance: their requests carry requested_by (the node audits them). */
const CHANGES: ReadonlySet<string> = new Set(['InstanceStart', 'InstanceStop', 'InstanceRemove', 'HotplugDevice', 'InstanceResize',
  'InstanceReceive', 'MigrationStart', 'MigrationFinish', 'MigrationAbort', 'InstanceRelease']);

/** Codes the node's handlers answer after deciding that nothing was (or stays) applied. */
const DEFINITIVE = new Set(['INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED',
  'OUT_OF_RANGE', 'UNIMPLEMENTED', 'PERMISSION_DENIED', 'UNAUTHENTICATED', 'ABORTED']);

export class NodeRpcError extends Error {
  /**
   * True when the caller cannot tell whether the node applied the request:
   * the connection dropped or never answered (UNAVAILABLE not about QEMU),
   * the call's own deadline passed, or the call ended CANCELLED, UNKNOWN or
   * INTERNAL. False for an answer of the node's handler (a definitive
   * refusal or failure, including QEMU's monitor gone and QEMU or the guest
   * not answering in time).
   */
  readonly ambiguous: boolean;

  constructor(message: string, readonly code: string, readonly grpcCode: number, ambiguous?: boolean) {
    super(message);
    this.name = 'NodeRpcError';
    this.ambiguous = ambiguous ?? !DEFINITIVE.has(code);
  }
}

/** Whether an error from a node call leaves the outcome of the request unknown (see NodeRpcError.ambiguous). */
export const outcomeUnknown = (err: unknown): boolean => !(err instanceof NodeRpcError) || err.ambiguous;

export const statusName = (code: number): string => grpc.status[code] ?? `CODE_${code}`;

export interface NodeTarget {
  name: string;
  address: string;
}

export interface NodeRpcOptions {
  /** Deadline of quick calls (info, lists), ms. */
  shortTimeoutMs?: number;
  /** Deadline of calls that start, stop or hotplug, ms. */
  longTimeoutMs?: number;
  /** Why a node certificate is refused although it names its node (the deny-list), or undefined. */
  refuse?: (facts: CertFacts) => string | undefined;
}

export class NodeRpc {
  /** One channel per node name and address: its certificate must name that node. */
  private readonly clients = new Map<string, NodeDaemonClient>();
  /** The certificate each channel's last connection presented. */
  private readonly peers = new Map<string, CertFacts>();
  private tls: TlsMaterial;
  private readonly shortMs: number;
  private readonly longMs: number;

  constructor(identity: Identity | TlsMaterial, private readonly options: NodeRpcOptions = {}) {
    this.tls = Buffer.isBuffer(identity.ca) ? (identity as TlsMaterial) : readIdentity(identity as Identity);
    this.shortMs = options.shortTimeoutMs ?? 10_000;
    this.longMs = options.longTimeoutMs ?? 120_000;
  }

  private static key(node: NodeTarget): string {
    return `${node.name}@${node.address}`;
  }

  private client(node: NodeTarget): NodeDaemonClient {
    const key = NodeRpc.key(node);
    let c = this.clients.get(key);
    if (!c) {
      c = connectNode(node.address, this.tls, {
        expectNode: node.name,
        ...(this.options.refuse ? { refuse: this.options.refuse } : {}),
        onPeer: (facts) => this.peers.set(key, facts),
      });
      this.clients.set(key, c);
    }
    return c;
  }

  private drop(node: NodeTarget): void {
    const key = NodeRpc.key(node);
    this.clients.get(key)?.close();
    this.clients.delete(key);
  }

  /** Role and fingerprint of the certificate `node` presented on its channel's last connection. */
  peerOf(node: NodeTarget): CertFacts | undefined {
    return this.peers.get(NodeRpc.key(node));
  }

  /** Closes the channel to `node` (removed, or its certificate changed): the next call connects and checks anew. */
  forget(node: NodeTarget): void {
    this.drop(node);
    this.peers.delete(NodeRpc.key(node));
  }

  /** The master's TLS material from now on: every channel is closed and reconnects with it. */
  setTls(tls: TlsMaterial): void {
    this.tls = tls;
    this.close();
  }

  /**
   * A channel that failed to connect sits in gRPC's reconnect backoff for up
   * to seconds, even once the node daemon is back (restarted). A call that
   * finds no connection is therefore tried once more on a fresh channel
   * before it reports the node unreachable.
   *
   * Only failures to establish a connection are retried here, never a
   * connection that dropped while the node held the call ("Connection
   * dropped": the node may have applied the request). Even a connect failure
   * does not prove the node never saw the request, so a retry is safe only
   * because a changing call carries an operation id: HotplugDevice and
   * InstanceResize are sent again with the same id, and a node that already
   * has it answers the recorded outcome instead of applying it twice
   * (jobs/operations.ts). What remains ambiguous after this is resolved by
   * the caller with OperationStatus (jobs/op-call.ts).
   */
  private async send<M extends NodeMethod>(node: NodeTarget, method: M, req: NodeRequest<M>, deadline: number): Promise<NodeReply<M>> {
    try {
      return await callNode(this.client(node), method, req, { deadline });
    } catch (e) {
      const err = e as grpc.ServiceError;
      if (err.code !== grpc.status.UNAVAILABLE || !/No connection established|ECONNREFUSED|failed to connect/i.test(err.details ?? '')) throw e;
      this.drop(node);
      return await callNode(this.client(node), method, req, { deadline });
    }
  }

  private async call<M extends NodeMethod>(node: NodeTarget, method: M, req: NodeRequest<M>, timeoutMs: number): Promise<NodeReply<M>> {
    // A change to an instance names who asked for the job (docs/audit.md).
    const requestedBy = CHANGES.has(method) ? currentRequestedBy() : '';
    if (requestedBy) req = { ...(req as object), requestedBy } as NodeRequest<M>;
    try {
      return await this.send(node, method, req, Date.now() + timeoutMs);
    } catch (e) {
      const err = e as grpc.ServiceError;
      if (typeof err.code !== 'number') throw e;
      const name = statusName(err.code);
      const detail = (err.details || err.message).replace(/\s*Resolution note:\s*$/, '').trim();
      const where = `node ${node.name} (${node.address})`;
      const unreachable = err.code === grpc.status.UNAVAILABLE && !/^QEMU|monitor/i.test(detail);
      const rpcDeadline = err.code === grpc.status.DEADLINE_EXCEEDED && /Deadline exceeded/i.test(detail);
      const message = unreachable
        ? `cannot reach ${where}: ${detail}`
        : rpcDeadline
          ? `${where} did not answer ${method} within ${Math.round(timeoutMs / 1000)} s`
          : `${where}: ${detail} (${name})`;
      const answered = (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED) && !unreachable && !rpcDeadline;
      throw new NodeRpcError(message, name, err.code, answered ? false : undefined);
    }
  }

  /** The node's audit records (docs/audit.md). */
  auditLog(node: NodeTarget, req: AuditLogRequest): Promise<AuditLogReply__Output> {
    return this.call(node, 'AuditLog', req, this.shortMs);
  }

  nodeInfo(node: NodeTarget): Promise<NodeInfoReply__Output> {
    return this.call(node, 'NodeInfo', {}, this.shortMs);
  }
  instanceList(node: NodeTarget): Promise<InstanceListReply__Output> {
    return this.call(node, 'InstanceList', {}, this.shortMs);
  }
  instanceInfo(node: NodeTarget, name: string, timeoutMs?: number): Promise<InstanceRuntime__Output> {
    return this.call(node, 'InstanceInfo', { name }, timeoutMs ?? this.shortMs);
  }
  /** `timeoutMs`: gnt-instance info gives the agent a short time (the rest of the view must not wait for it). */
  guestInfo(node: NodeTarget, name: string, timeoutMs = this.shortMs): Promise<GuestAgentView__Output> {
    return this.call(node, 'GuestInfo', { name }, timeoutMs);
  }
  /** Waits on the node up to `request.timeoutMs` (plus the RPC's margin). */
  guestWait(node: NodeTarget, request: GuestWaitRequest): Promise<GuestWaitReply__Output> {
    return this.call(node, 'GuestWait', request, (request.timeoutMs || 60_000) + this.shortMs);
  }
  instanceStart(node: NodeTarget, spec: InstanceSpec): Promise<InstanceRuntime__Output> {
    return this.call(node, 'InstanceStart', { spec }, this.longMs);
  }
  instanceStop(node: NodeTarget, name: string, timeoutMs = 0): Promise<InstanceRuntime__Output> {
    return this.call(node, 'InstanceStop', { name, timeoutMs }, this.longMs);
  }
  instanceRemove(node: NodeTarget, name: string): Promise<unknown> {
    return this.call(node, 'InstanceRemove', { name }, this.longMs);
  }
  hotplugSupported(node: NodeTarget, instance: string, deviceType: 'NIC' | 'DISK'): Promise<HotplugSupportedReply__Output> {
    return this.call(node, 'HotplugSupported', { instance, deviceType }, this.shortMs);
  }
  hotplugDevice(node: NodeTarget, req: HotplugDeviceRequest): Promise<HotplugDeviceReply__Output> {
    return this.call(node, 'HotplugDevice', req, this.longMs);
  }
  instanceResize(node: NodeTarget, req: InstanceResizeRequest): Promise<InstanceResizeReply__Output> {
    return this.call(node, 'InstanceResize', req, this.longMs);
  }
  /** The recorded outcome of one operation; fence=true records an unknown id as FAILED (quick). */
  operationStatus(node: NodeTarget, instance: string, operationId: string, fence = false): Promise<OperationRecord__Output> {
    return this.call(node, 'OperationStatus', { instance, operationId, fence }, this.shortMs);
  }
  /** The node's operation records after the given revisions (quick). */
  operationLog(node: NodeTarget, cursors: OperationCursor[], timeoutMs?: number): Promise<OperationLogReply__Output> {
    return this.call(node, 'OperationLog', { cursors, allInstances: false }, timeoutMs ?? this.shortMs);
  }


  // ---- live migration and failover (docs/migration.md) ----

  /** The instance's runtime file as JSON (quick: a file read). */
  instanceExport(node: NodeTarget, name: string): Promise<InstanceExportReply__Output> {
    return this.call(node, 'InstanceExport', { name }, this.shortMs);
  }
  /** Target side: recreates taps, opens disks and starts QEMU from a carried runtime file (long: QEMU starts). */
  instanceReceive(node: NodeTarget, req: InstanceReceiveRequest): Promise<InstanceReceiveReply__Output> {
    return this.call(node, 'InstanceReceive', req, this.longMs);
  }
  /** Source side: starts sending the instance's state; returns at once. */
  migrationStart(node: NodeTarget, req: MigrationStartRequest): Promise<MigrationStatus__Output> {
    return this.call(node, 'MigrationStart', req, this.shortMs);
  }
  /** Either side: the migration as the node's runtime file and QEMU see it. */
  migrationStatus(node: NodeTarget, name: string, timeoutMs?: number): Promise<MigrationStatus__Output> {
    return this.call(node, 'MigrationStatus', { name }, timeoutMs ?? this.shortMs);
  }
  /** Target side: resumes the guest there (long: waits for QEMU). */
  migrationFinish(node: NodeTarget, name: string): Promise<InstanceRuntime__Output> {
    return this.call(node, 'MigrationFinish', { name }, this.longMs);
  }
  /** Undo on either side, safe to repeat (long: may stop QEMU or wait for a cancel). */
  migrationAbort(node: NodeTarget, name: string): Promise<MigrationStatus__Output> {
    return this.call(node, 'MigrationAbort', { name }, this.longMs);
  }
  /** Source side of a migration with disk copy, after the stream: ends the copy consistently (long: flushes what is left). */
  migrationDiskCopyEnd(node: NodeTarget, name: string): Promise<MigrationStatus__Output> {
    return this.call(node, 'MigrationDiskCopyEnd', { name }, this.longMs);
  }
  /** The instance runs elsewhere now: stops QEMU on this node and forgets it, keeping the disks (long). */
  instanceRelease(node: NodeTarget, name: string): Promise<unknown> {
    return this.call(node, 'InstanceRelease', { name }, this.longMs);
  }

  // ---- verification (verify.ts) ----

  /** Compares (and with fix repairs) the node's instances against QEMU and the host (long: repairs wait for unplugs). */
  instanceVerify(node: NodeTarget, req: InstanceVerifyRequest): Promise<InstanceVerifyReply__Output> {
    return this.call(node, 'InstanceVerify', req, this.longMs);
  }

  // ---- certificates (jobs/renew-crypto.ts) ----

  /** Sends the node its new certificate, key and CA bundle (quick: three file writes). */
  nodeRenewCertificate(node: NodeTarget, req: NodeRenewCertificateRequest): Promise<NodeRenewCertificateReply__Output> {
    return this.call(node, 'NodeRenewCertificate', req, this.shortMs);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    this.peers.clear();
  }
}
