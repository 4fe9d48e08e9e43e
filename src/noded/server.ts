/**
 * Wiring of gnt-noded: the instance registry, the storage directory, the
 * NodeDaemon service, and a gRPC server that accepts only mutual TLS with a
 * client certificate signed by the cluster CA, and serves only the master's
 * certificate (role urn:gnt-hotplug:master; common/rpc-guard.ts). There are
 * no node-to-node calls: another node's certificate is always refused.
 */
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNodeProto } from '../common/proto';
import { LiveTls, type Identity, type TlsMaterial } from '../common/pki';
import { certFacts, describeRole, nodeRole, sameRole } from '../common/cert-roles';
import { CHANNEL_LIMITS, guardService } from '../common/rpc-guard';
import { HostPathPolicy } from '../hypervisor/host-paths';
import { renewCertificateHandler } from './cert-service';
import { DEFAULT_CPU_OVERCOMMIT_RATIO } from '../hypervisor/resize';
import type { UnplugTimeouts } from '../hypervisor/unplug-timeouts';
import { InstanceRegistry, type Logger } from './instance-registry';
import { nodeDiskGrowers } from './disk-growers';
import { NodeService } from './node-service';
import { DEFAULT_QEMU_USER, QemuSecurity, type UidRange } from './qemu-user';
import { Storage } from './storage';
import { RbdPool, type RbdPoolConfig } from './rbd-pool';
import { VcpuPolicy } from './vcpu-policy';
import { AUDIT_DIR } from './audit-log';

export interface NodeServerOptions {
  name: string;
  /** HOST:PORT; port 0 picks a free one. */
  listen: string;
  dataDir: string;
  storageDir: string;
  /** Kernels and initrds only beneath it (--image-dir; default <dataDir>/images). */
  imageDir?: string;
  /** Block devices a disk may be: exact paths or globs (--block-device; default none). */
  blockDevices?: string[];
  tls: TlsMaterial;
  qemuBinary?: string;
  /** Address incoming migrations listen on; default: the host of `listen`. */
  migrationHost?: string;
  /** How long to wait for a guest to eject a device (default: the hypervisor layer's). */
  unplugTimeoutMs?: number;
  /** vCPUs per node CPU the node's running instances may have together (default 16, as Nova). */
  cpuOvercommitRatio?: number;
  /** Test hook: a second QMP socket per instance (qmp-test.sock in its runtime dir). */
  testMonitor?: boolean;
  /** Hot-adds wait for the guest agent unless the modify says otherwise (NodeInfoReply.wait_guest_default). */
  waitGuestDefault?: boolean;
  /** Unplug timeouts per device kind (an instance's hvparam unplug_timeout overrides them). */
  unplugTimeouts?: UnplugTimeouts;
  /** The unprivileged user QEMU runs as by default (--qemu-user; default gnt-qemu). */
  qemuUser?: string;
  /** uids for security_model=pool (--uid-pool); with a pool, pool is the default model. */
  uidPool?: UidRange;
  log: Logger;
  /** The files `tls` was read from: NodeRenewCertificate replaces them (absent: renewals stay in memory). */
  tlsFiles?: Identity;
  /** Calls the master may have running at once (default common/rpc-guard DEFAULT_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /** The Ceph pool of RBD disks (--rbd-*); without it an rbd disk is refused. */
  rbd?: RbdPoolConfig;
  /** Where the RBD client conf is written (default /run/gnt-hotplug). */
  rbdConfDir?: string;
}

export interface NodeServer {
  server: grpc.Server;
  registry: InstanceRegistry;
  /** The RBD pool (--rbd-*), if configured. */
  rbdPool?: RbdPool;
  /** The port actually bound. */
  port: number;
  /** Resolves when the reconciles started at load time have finished. */
  reconciled: Promise<void>;
  /** Stops serving and closes every monitor connection; QEMU processes keep running. */
  shutdown(): Promise<void>;
}

/** The node's own certificate must name it: a daemon started with another node's files would answer for that node. */
function checkOwnCertificate(name: string, tls: TlsMaterial): void {
  const { role } = certFacts(tls.cert);
  if (!sameRole(role, nodeRole(name)))
    throw new Error(`the certificate given with --cert is for ${describeRole(role)}, not for node ${name}: issue one with "gnt-cluster issue-node-cert ${name}"`);
}

/**
 * The guarded NodeDaemon service: only the master's certificate is served
 * (there are no node-to-node calls), requests are bounded (rpc-guard.ts).
 */
function guardedNodeService(opts: NodeServerOptions, handlers: object) {
  return guardService(loadNodeProto().gnt.node.v1.NodeDaemon.service, handlers, {
    service: `node daemon ${opts.name}`,
    allow: (_method, role) => (role.kind === 'master' ? undefined : 'the master certificate (urn:gnt-hotplug:master)'),
    longFields: { InstanceReceive: ['runtimeJson'] },
    ...(opts.maxInFlight ? { maxInFlight: opts.maxInFlight } : {}),
    log: opts.log,
  });
}

/** Where kernels and initrds must be when --image-dir is not given. */
export const defaultImageDir = (dataDir: string): string => path.join(dataDir, 'images');

export async function startNodeServer(opts: NodeServerOptions): Promise<NodeServer> {
  for (const dir of [opts.dataDir, opts.storageDir]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const hostPaths = new HostPathPolicy({ storageDir: opts.storageDir, imageDir: opts.imageDir ?? defaultImageDir(opts.dataDir), blockDevices: opts.blockDevices ?? [] });
  const storage = new Storage(opts.name, opts.storageDir, hostPaths);
  storage.init();
  const rbdPool = opts.rbd ? new RbdPool(opts.rbd, opts.rbdConfDir ? { confDir: opts.rbdConfDir } : {}) : undefined;
  const registry = new InstanceRegistry(
    opts.name,
    opts.dataDir,
    {
      qemuBinary: opts.qemuBinary,
      hostPaths,
      ...(opts.unplugTimeoutMs ? { unplugTimeoutMs: opts.unplugTimeoutMs } : {}),
      ...(opts.testMonitor ? { testMonitor: true } : {}),
      ...(opts.unplugTimeouts ? { unplugTimeouts: opts.unplugTimeouts } : {}),
      diskGrowers: nodeDiskGrowers(hostPaths, opts.log, rbdPool),
      ...(rbdPool ? { rbd: rbdPool.host } : {}),
    },
    opts.log,
  );
  const reconciled = registry.load();
  const migrationHost = opts.migrationHost ?? opts.listen.slice(0, opts.listen.lastIndexOf(':'));
  const vcpus = new VcpuPolicy({ registry, ratio: opts.cpuOvercommitRatio ?? DEFAULT_CPU_OVERCOMMIT_RATIO });
  const security = new QemuSecurity({ user: opts.qemuUser ?? DEFAULT_QEMU_USER, ...(opts.uidPool ? { uidPool: opts.uidPool } : {}) }, registry);
  checkOwnCertificate(opts.name, opts.tls);
  const live = new LiveTls(opts.tls);
  fs.mkdirSync(path.join(opts.dataDir, AUDIT_DIR), { recursive: true, mode: 0o700 });
  const service = new NodeService({ nodeName: opts.name, registry, storage, qemuBinary: opts.qemuBinary, migrationHost, vcpus, security, tls: () => live.material, ...(rbdPool ? { rbdPool } : {}), ...(opts.waitGuestDefault ? { waitGuestDefault: true } : {}), log: opts.log, auditDir: path.join(opts.dataDir, AUDIT_DIR) });
  const renew = renewCertificateHandler({ nodeName: opts.name, live, ...(opts.tlsFiles ? { files: opts.tlsFiles } : {}), log: opts.log });
  const guarded = guardedNodeService(opts, { ...service.handlers(), NodeRenewCertificate: renew });
  const server = new grpc.Server(CHANNEL_LIMITS);
  server.addService(guarded.definition, guarded.handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(opts.listen, live.serverCredentials(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    server,
    registry,
    ...(rbdPool ? { rbdPool } : {}),
    port,
    reconciled,
    shutdown: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), 5_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          registry.closeAll();
          resolve();
        });
      }),
  };
}
