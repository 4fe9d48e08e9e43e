/**
 * Wiring of gnt-noded: the instance registry, the storage directory, the
 * NodeDaemon service, and a gRPC server that accepts only mutual TLS with a
 * client certificate signed by the cluster CA.
 */
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import { loadNodeProto } from '../common/proto';
import type { TlsMaterial } from '../common/pki';
import { DEFAULT_CPU_OVERCOMMIT_RATIO } from '../hypervisor/resize';
import type { UnplugTimeouts } from '../hypervisor/unplug-timeouts';
import { InstanceRegistry, type Logger } from './instance-registry';
import { NodeService } from './node-service';
import { DEFAULT_QEMU_USER, QemuSecurity, type UidRange } from './qemu-user';
import { Storage } from './storage';
import { VcpuPolicy } from './vcpu-policy';

export interface NodeServerOptions {
  name: string;
  /** HOST:PORT; port 0 picks a free one. */
  listen: string;
  dataDir: string;
  storageDir: string;
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
  /** Unplug timeouts per device kind (an instance's hvparam unplug_timeout overrides them). */
  unplugTimeouts?: UnplugTimeouts;
  /** The unprivileged user QEMU runs as by default (--qemu-user; default gnt-qemu). */
  qemuUser?: string;
  /** uids for security_model=pool (--uid-pool); with a pool, pool is the default model. */
  uidPool?: UidRange;
  log: Logger;
}

export interface NodeServer {
  server: grpc.Server;
  registry: InstanceRegistry;
  /** The port actually bound. */
  port: number;
  /** Resolves when the reconciles started at load time have finished. */
  reconciled: Promise<void>;
  /** Stops serving and closes every monitor connection; QEMU processes keep running. */
  shutdown(): Promise<void>;
}

/** Server credentials: our certificate, and clients must present one signed by the CA. */
export function serverCredentials(tls: TlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(tls.ca, [{ cert_chain: tls.cert, private_key: tls.key }], true);
}

export async function startNodeServer(opts: NodeServerOptions): Promise<NodeServer> {
  for (const dir of [opts.dataDir, opts.storageDir]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const storage = new Storage(opts.name, opts.storageDir);
  storage.init();
  const registry = new InstanceRegistry(
    opts.name,
    opts.dataDir,
    {
      qemuBinary: opts.qemuBinary,
      ...(opts.unplugTimeoutMs ? { unplugTimeoutMs: opts.unplugTimeoutMs } : {}),
      ...(opts.testMonitor ? { testMonitor: true } : {}),
      ...(opts.unplugTimeouts ? { unplugTimeouts: opts.unplugTimeouts } : {}),
    },
    opts.log,
  );
  const reconciled = registry.load();
  const migrationHost = opts.migrationHost ?? opts.listen.slice(0, opts.listen.lastIndexOf(':'));
  const vcpus = new VcpuPolicy({ registry, ratio: opts.cpuOvercommitRatio ?? DEFAULT_CPU_OVERCOMMIT_RATIO });
  const security = new QemuSecurity({ user: opts.qemuUser ?? DEFAULT_QEMU_USER, ...(opts.uidPool ? { uidPool: opts.uidPool } : {}) }, registry);
  const service = new NodeService({ nodeName: opts.name, registry, storage, qemuBinary: opts.qemuBinary, migrationHost, vcpus, security, log: opts.log });
  const server = new grpc.Server();
  server.addService(loadNodeProto().gnt.node.v1.NodeDaemon.service, service.handlers());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(opts.listen, serverCredentials(opts.tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    server,
    registry,
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
