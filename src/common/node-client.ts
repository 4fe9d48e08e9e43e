/**
 * The client side of proto/node.proto, shared by the master and the tests:
 * a NodeDaemon client over mutual TLS (the cluster CA, and a certificate it
 * signed), and a typed promise wrapper for its unary calls. With
 * `expectNode` the node's certificate must carry the role of that node
 * (common/cert-roles.ts), checked on every connection the channel makes.
 */
import * as grpc from '@grpc/grpc-js';
import * as tls from 'node:tls';
import { describeRole, nodeRole, peerFacts, sameRole, type CertFacts } from './cert-roles';
import { CHANNEL_LIMITS } from './rpc-guard';
import type { MethodDefinition } from '@grpc/proto-loader';
import type { NodeDaemonClient, NodeDaemonDefinition } from '../generated/gnt/node/v1/NodeDaemon';
import { readIdentity, type Identity, type TlsMaterial } from './pki';
import { loadNodeProto } from './proto';

export type { NodeDaemonClient };

export interface ConnectOptions {
  /** The name the node's certificate is checked against, when it differs from the address's host. */
  serverName?: string;
  /** Extra channel options. */
  channelOptions?: grpc.ChannelOptions;
  /** The node the daemon's certificate must name (role urn:gnt-hotplug:node:NAME). */
  expectNode?: string;
  /** Why a node certificate is refused although it names the node (revoked), or undefined. */
  refuse?: (facts: CertFacts) => string | undefined;
  /** Called with the node certificate's role and fingerprint on each connection that passed the checks. */
  onPeer?: (facts: CertFacts) => void;
}

/**
 * A checkServerIdentity for the TLS connection to a node: the usual host
 * name check, then the role (and the refuse callback).
 */
export function nodeIdentityCheck(options: ConnectOptions): ((host: string, cert: tls.PeerCertificate) => Error | undefined) | undefined {
  const { expectNode, refuse, onPeer } = options;
  if (!expectNode && !refuse && !onPeer) return undefined;
  return (host, cert) => {
    const hostError = tls.checkServerIdentity(options.serverName ?? host, cert);
    if (hostError) return hostError;
    let facts: CertFacts;
    try {
      facts = peerFacts(cert);
    } catch (err) {
      return new Error(`the node daemon's certificate is refused: ${(err as Error).message}`);
    }
    if (expectNode && !sameRole(facts.role, nodeRole(expectNode)))
      return new Error(`the node daemon presented the certificate of ${describeRole(facts.role)}, not of node ${expectNode}`);
    const refused = refuse?.(facts);
    if (refused) return new Error(`the node daemon's certificate is refused: ${refused}`);
    onPeer?.(facts);
    return undefined;
  };
}

/** A client for the node daemon at `address` (HOST:PORT), authenticating with `identity`. */
export function connectNode(address: string, identity: Identity | TlsMaterial, options: ConnectOptions = {}): NodeDaemonClient {
  const material = Buffer.isBuffer(identity.ca) ? (identity as TlsMaterial) : readIdentity(identity as Identity);
  const check = nodeIdentityCheck(options);
  const creds = grpc.credentials.createSsl(material.ca, material.key, material.cert, check ? { checkServerIdentity: check } : {});
  const channelOptions: grpc.ChannelOptions = { ...CHANNEL_LIMITS, ...options.channelOptions };
  if (options.serverName) channelOptions['grpc.ssl_target_name_override'] = options.serverName;
  const NodeDaemon = loadNodeProto().gnt.node.v1.NodeDaemon;
  return new NodeDaemon(address, creds, channelOptions);
}

export type NodeMethod = keyof NodeDaemonDefinition & string;
/** The request type of a NodeDaemon method (as sent). */
export type NodeRequest<M extends NodeMethod> = NodeDaemonDefinition[M] extends MethodDefinition<infer Rq, infer _Rs, infer _RqO, infer _RsO> ? Rq : never;
/** The reply type of a NodeDaemon method (as received: defaults filled in, int64 as strings). */
export type NodeReply<M extends NodeMethod> = NodeDaemonDefinition[M] extends MethodDefinition<infer _Rq, infer _Rs, infer _RqO, infer RsO> ? RsO : never;

type UnaryFn<Req, Res> = (req: Req, metadata: grpc.Metadata, options: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall;

/**
 * Calls a unary NodeDaemon method and resolves with its reply, e.g.
 * `await callNode(client, 'InstanceInfo', { name: 'web1' }, { deadline: deadlineIn(5000) })`.
 * Rejects with the grpc.ServiceError (its `code` is a grpc.status, `details` the message).
 */
export function callNode<M extends NodeMethod>(
  client: NodeDaemonClient,
  method: M,
  req: NodeRequest<M>,
  options: grpc.CallOptions = {},
): Promise<NodeReply<M>> {
  const fn = client[method as keyof NodeDaemonClient] as unknown as UnaryFn<NodeRequest<M>, NodeReply<M>>;
  return new Promise<NodeReply<M>>((resolve, reject) => {
    fn.call(client, req, new grpc.Metadata(), options, (err, reply) => {
      if (err) reject(err);
      else if (reply === undefined) reject(new Error(`${method}: empty reply`));
      else resolve(reply);
    });
  });
}

/** A deadline `ms` from now, for CallOptions. */
export const deadlineIn = (ms: number): Date => new Date(Date.now() + ms);
