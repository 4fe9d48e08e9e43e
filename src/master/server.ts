/**
 * gnt-masterd's gRPC service (proto/master.proto) with mutual TLS: only
 * clients whose certificate is signed by the cluster CA and carries the CLI
 * or master role are served (a node's certificate is refused), revoked
 * certificates are refused, and requests are bounded (common/rpc-guard.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { LiveTls, readIdentity } from '../common/pki';
import { boundedDetails } from '../common/excerpt';
import { CHANNEL_LIMITS, callerOf, guardService } from '../common/rpc-guard';
import { identityOfFacts, LOCAL_ADMIN_IDENTITY } from '../common/cert-identity';
import { masterAuditLog } from './audit';
import { LOCAL_ADMIN, type CertFacts, type CertRole } from '../common/cert-roles';
import { CertStore, revokedMessage } from './config/cert-store';
import { RENEW_CRYPTO_OP, runRenewCrypto } from './jobs/renew-crypto';
import { loadMasterProto } from '../common/proto';
import type { MasterHandlers } from '../generated/gnt/master/v1/Master';
import type { Instance } from '../generated/gnt/master/v1/Instance';
import type { InstanceRuntimeView } from '../generated/gnt/master/v1/InstanceRuntimeView';
import type { NodeLive } from '../generated/gnt/master/v1/NodeLive';
import { ClusterDir } from './cluster-dir';
import { openDb, type Db } from './config/db';
import { ConfigError, ConfigStore, diskIoLimits, type InstanceConfig } from './config/config-store';
import { ioLimitsProto } from './io-limits-proto';
import { checkResizeLimits, Executor, nodeTarget } from './jobs/executor';
import { JobStore, type JobRow } from './jobs/job-store';
import { JobError, JobQueue } from './jobs/queue';
import { addPending, reconcilePending, type ReconcileResult } from './jobs/reconcile';
import { prepareJob } from './jobs/ops';
import { streamJob, toJob } from './jobs/job-stream';
import type { SubmitJobRequest__Output } from '../generated/gnt/master/v1/SubmitJobRequest';
import { checkMigrationConflict } from './jobs/submit-guard';
import { NodeRpc, NodeRpcError, type NodeRpcOptions } from './node-rpc';
import { Convergence, DEFAULT_CONVERGE_INTERVAL_MS } from './convergence';
import { recentHistory } from './config/history';
import { listInstanceSummaries } from './config/instance-list';
import { openOperations } from './jobs/operations';
import type { InstanceDetails } from '../generated/gnt/master/v1/InstanceDetails';
import type { GuestAgentView } from '../generated/gnt/master/v1/GuestAgentView';
import { checkAddress, UsageError } from './validate';
import { VERIFY_OP, Verifier } from './verify';
import { checkSocketDir, checkSocketPath, installSocket, tmpSocketPath, type InstalledSocket } from './local-socket';
import * as path from 'node:path';

/** How long GetInstance waits for the guest agent's view (an agent that does not answer must not slow the rest). */
const GUEST_INFO_MS = 1_000;

export { loadMasterProto };

type AuthCall = Parameters<typeof callerOf>[0];

/** The TLS caller's identity ("cli certificate AB:CD:..."); the guard has already admitted it. */
const callerOfTls = (call: AuthCall): string => {
  try {
    return identityOfFacts(callerOf(call));
  } catch {
    return '';
  }
};

function toInstance(i: InstanceConfig): Instance {
  return {
    uuid: i.uuid, name: i.name, node: i.node.name, vcpus: i.vcpus, maxvcpus: i.maxvcpus, memoryMib: i.memory_mib,
    maxmemMib: i.maxmem_mib, kernel: i.kernel, initrd: i.initrd, kernelArgs: i.kernel_args, hvparams: i.hvparams,
    adminState: i.admin_state, createdAt: i.created_at,
    nics: i.nics.map((n) => ({ index: n.idx, uuid: n.uuid, mac: n.mac, link: n.link, removalPending: n.removal_pending !== '', linkState: n.link_state, rateMbit: n.rate_mbit, queues: n.queues, model: n.model })),
    disks: i.disks.map((d) => ({ index: d.idx, uuid: d.uuid, sizeBytes: d.size_bytes, removalPending: d.removal_pending !== '', diskBus: d.disk_bus || 'virtio', diskType: d.disk_type || 'disk', template: d.template || 'file', adopt: d.adopt ?? '', ioLimits: ioLimitsProto(diskIoLimits(d)) })),
  };
}

/** Maps an error to a gRPC status for the caller. */
function toStatus(err: unknown): Partial<grpc.StatusObject> {
  const message = err instanceof Error ? err.message : String(err);
  let code = grpc.status.INTERNAL;
  if (err instanceof UsageError) code = grpc.status.INVALID_ARGUMENT;
  else if (err instanceof ConfigError || err instanceof JobError) {
    const c = (grpc.status as unknown as Record<string, number>)[err.code];
    code = typeof c === 'number' ? c : grpc.status.FAILED_PRECONDITION;
  } else if (err instanceof NodeRpcError) code = err.grpcCode;
  return { code, details: boundedDetails(message) };
}

/** Every Master method is for the CLI and the master; nodes never call the master. */
const masterPolicy = (_method: string, role: CertRole): string | undefined =>
  role.kind === 'cli' || role.kind === 'master' ? undefined : 'the CLI or master certificate (urn:gnt-hotplug:cli or urn:gnt-hotplug:master)';

export interface MasterOptions {
  clusterDir: ClusterDir;
  /** Overrides the address from cluster.json (host:port; port 0 picks one). */
  listen?: string;
  rpc?: NodeRpcOptions;
  /** How long a job asks a node for an operation's outcome after an ambiguous failure, ms (default 60 s). */
  outcomeWindowMs?: number;
  /** Pause between convergence passes, ms (default 1 s). */
  convergeIntervalMs?: number;
  /** Age after which an operation still 'sent' is fenced by the convergence loop, ms (default 10 s). */
  fenceAfterMs?: number;
  /** Calls one client certificate may have running at once (default common/rpc-guard DEFAULT_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /**
   * Also serve the CLI on this unix socket, without certificates
   * (local-socket.ts; gnt-masterd's default is ClusterDir.localSocket).
   * Unset: TCP with mutual TLS only.
   */
  localSocket?: string;
  /** Lines about the local socket (a stale one removed). */
  report?: (line: string) => void;
}

/** Binds `server` to `address`; resolves to the port. */
function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync(address, creds, (err, p) => (err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(p))),
  );
}

/** Lets running calls finish for up to 2 s, then cuts them. */
function shutdown(s: grpc.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      s.forceShutdown();
      resolve();
    }, 2000);
    s.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

export class MasterDaemon {
  readonly db: Db;
  readonly config: ConfigStore;
  readonly jobs: JobStore;
  readonly queue: JobQueue;
  readonly rpc: NodeRpc;
  /** Node certificate fingerprints and the deny-list (config/cert-store.ts). */
  readonly certs: CertStore;
  private liveTls?: LiveTls;
  /** gnt-cluster verify / gnt-instance verify (verify.ts): its jobs run in the same queue. */
  readonly verifier: Verifier;
  /** Operations jobs are sending or resolving now (the convergence loop leaves them to the job). */
  readonly inflight = new Set<string>();
  private convergence?: Convergence;
  private server?: grpc.Server;
  private localServer?: grpc.Server;
  private local?: InstalledSocket;
  /** Ids of the jobs found unfinished at start-up and marked failed. */
  readonly interrupted: number[];

  constructor(readonly options: MasterOptions) {
    const dir = options.clusterDir;
    dir.readClusterFile();
    this.db = openDb(dir.dbFile);
    this.config = new ConfigStore(this.db);
    this.jobs = new JobStore(this.db);
    // Failing the interrupted jobs and noting their instances for
    // reconcile() happen in one transaction (see jobs/reconcile.ts).
    this.interrupted = this.db.transaction(() => {
      const ids = this.jobs.failInterrupted();
      if (ids.length) addPending(this.config, this.jobs, ids);
      return ids;
    })();
    this.certs = new CertStore(this.db);
    this.rpc = new NodeRpc(dir.masterIdentity, { ...options.rpc, refuse: (facts) => this.refusal(facts) });
    const executor = new Executor(this.config, this.rpc, { outcomeWindowMs: options.outcomeWindowMs }, this.inflight);
    this.verifier = new Verifier(this.config, this.jobs, this.rpc);
    this.queue = new JobQueue(this.jobs, (job, ctx) => {
      if (job.op_type === VERIFY_OP) return this.verifier.run(job, ctx);
      if (job.op_type === RENEW_CRYPTO_OP) return this.renewCrypto(JSON.parse(job.op_json) as { newCa: boolean }, ctx);
      return executor.run(job, ctx);
    });
  }

  /** Why a certificate is refused although it is signed and has a fitting role: it is revoked. */
  private refusal(facts: CertFacts): string | undefined {
    const r = this.certs.revoked(facts.fingerprint);
    return r ? revokedMessage(r) : undefined;
  }

  private renewCrypto(op: { newCa: boolean }, ctx: Parameters<typeof runRenewCrypto>[2]): Promise<void> {
    return runRenewCrypto(
      { config: this.config, certs: this.certs, rpc: this.rpc, dir: this.options.clusterDir, reload: () => this.reloadCredentials() },
      op,
      ctx,
    );
  }

  /**
   * Re-reads pki/ca.pem, master.pem and master.key: the server presents and
   * trusts them for every new connection, and every channel to a node
   * reconnects with them (calls already running finish on the old ones).
   */
  reloadCredentials(): void {
    const tls = readIdentity(this.options.clusterDir.masterIdentity);
    this.liveTls?.update(tls);
    this.rpc.setTls(tls);
  }

  /**
   * Brings the configuration of instances touched by interrupted jobs in
   * line with their node's runtime (jobs/reconcile.ts). Call once at
   * start-up, before listen(); safe to call again.
   */
  reconcile(report?: (line: string) => void, timeoutMs = 5000): Promise<ReconcileResult[]> {
    return reconcilePending({ config: this.config, jobs: this.jobs, rpc: this.rpc, report, timeoutMs });
  }

  /**
   * The convergence loop (convergence.ts): runs one pass now and resolves
   * when it is done (call before listen()), then keeps running every
   * convergeIntervalMs until close().
   */
  async startConvergence(report?: (line: string) => void): Promise<void> {
    if (this.convergence) return;
    const c = new Convergence({
      config: this.config, jobs: this.jobs, rpc: this.rpc, inflight: this.inflight, report,
      fenceAfterMs: this.options.fenceAfterMs, timeoutMs: 5000,
    });
    this.convergence = c;
    await c.runOnce();
    c.start(this.options.convergeIntervalMs ?? DEFAULT_CONVERGE_INTERVAL_MS);
  }

  /** One convergence pass now (tests; the loop runs them by itself). */
  converge(): Promise<void> {
    return this.convergence?.runOnce() ?? Promise.resolve();
  }

  /** Starts serving; resolves to the bound host:port. */
  async listen(): Promise<string> {
    const address = this.options.listen ?? this.options.clusterDir.readClusterFile().master_address;
    const { host } = checkAddress(address.replace(/:0$/, ':1'), 'master address');
    this.liveTls = new LiveTls(readIdentity(this.options.clusterDir.masterIdentity));
    const server = this.guardedServer(this.handlers(callerOfTls));
    const port = await bind(server, address, this.liveTls.serverCredentials());
    this.server = server;
    // After the TCP address: a second master of this cluster has already failed there.
    if (this.options.localSocket) await this.listenLocal(this.options.localSocket, this.handlers(() => LOCAL_ADMIN_IDENTITY));
    return `${host}:${port}`;
  }

  /** The path of the local socket being served, if any. */
  get localSocketPath(): string | undefined {
    return this.local?.path;
  }

  /** A server with the Master service, every call through rpc-guard; `caller` for the local socket. */
  private guardedServer(handlers: MasterHandlers, caller?: () => CertFacts): grpc.Server {
    const guarded = guardService(loadMasterProto().gnt.master.v1.Master.service, handlers, {
      service: 'master',
      allow: masterPolicy,
      refuse: (facts) => this.refusal(facts),
      ...(this.options.maxInFlight ? { maxInFlight: this.options.maxInFlight } : {}),
      log: (line) => process.stderr.write(`gnt-masterd: ${line}\n`),
      ...(caller ? { caller } : {}),
    });
    const server = new grpc.Server(CHANNEL_LIMITS);
    server.addService(guarded.definition, guarded.handlers);
    return server;
  }

  /** Serves the CLI without certificates on a 0600 unix socket (local-socket.ts). */
  private async listenLocal(socketPath: string, handlers: MasterHandlers): Promise<void> {
    checkSocketPath(socketPath);
    checkSocketDir(path.dirname(socketPath));
    const tmp = tmpSocketPath(socketPath);
    const server = this.guardedServer(handlers, () => LOCAL_ADMIN);
    try {
      await bind(server, `unix:${tmp}`, grpc.ServerCredentials.createInsecure());
      this.local = await installSocket(tmp, socketPath, this.options.report);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    this.localServer = server;
  }

  async close(): Promise<void> {
    this.local?.remove();
    await Promise.all([this.server, this.localServer].map((s) => (s ? shutdown(s) : undefined)));
    await this.convergence?.stop();
    const running = this.queue.runningIds();
    this.rpc.close();
    this.jobs.flush();
    // A job still running keeps writing its log until the process exits; its
    // row stays "running" and the next master marks it interrupted.
    if (running.length === 0) this.db.close();
  }

  private async nodeLive(target: { name: string; address: string }): Promise<NodeLive> {
    try {
      const info = await this.rpc.nodeInfo(target);
      return { reachable: true, ...info };
    } catch (err) {
      return { reachable: false, error: (err as Error).message };
    }
  }

  /** The guest agent's view from the node, within GUEST_INFO_MS; an unreachable node or an unknown instance is "not answering" with the reason. */
  private async guestAgentView(inst: InstanceConfig): Promise<GuestAgentView> {
    try {
      return await this.rpc.guestInfo(nodeTarget(inst), inst.name, GUEST_INFO_MS);
    } catch (err) {
      return { answers: false, error: (err as Error).message };
    }
  }

  private async runtimeView(inst: InstanceConfig): Promise<InstanceRuntimeView> {
    try {
      const rt = await this.rpc.instanceInfo(nodeTarget(inst), inst.name);
      return { known: true, running: rt.running, pid: rt.pid, nics: rt.nics, disks: rt.disks, guest: rt.guest, resources: rt.resources };
    } catch (err) {
      if (err instanceof NodeRpcError && err.code === 'NOT_FOUND')
        return { known: false, error: `node ${inst.node.name} has no runtime state for ${inst.name} (never started)` };
      return { known: false, error: (err as Error).message };
    }
  }

  /**
   * With `live`, asks every node which instances run (in parallel): an
   * instance is "running" or "stopped" as its node says (not listed by a
   * node that answered: "stopped"), "unknown" when its node did not answer.
   * Without, every instance is "unknown".
   */
  private async operStates(live: boolean): Promise<(node: string, name: string) => string> {
    const states = new Map<string, string>();
    const reachable = new Set<string>();
    if (live)
      await Promise.all(
        this.config.listNodes().map(async (n) => {
          try {
            const list = await this.rpc.instanceList(n);
            reachable.add(n.name);
            for (const rt of list.instances) states.set(`${n.name}/${rt.name}`, rt.running ? 'running' : 'stopped');
          } catch {
            /* the node's instances stay "unknown" */
          }
        }),
      );
    return (node, name) => states.get(`${node}/${name}`) ?? (reachable.has(node) ? 'stopped' : 'unknown');
  }

  /** The handlers; `identity` names the caller of a call (recorded with the jobs it submits, docs/audit.md). */
  private handlers(identity: (call: AuthCall) => string): MasterHandlers {
    const unary =
      <Req, Rep>(fn: (req: Req) => Rep | Promise<Rep>): grpc.handleUnaryCall<Req, Rep> =>
      (call, callback) => {
        Promise.resolve()
          .then(() => fn(call.request))
          .then((r) => callback(null, r), (err) => callback(toStatus(err) as grpc.ServiceError));
      };
    const getJobRow = (id: string | number): JobRow => {
      const row = this.jobs.get(Number(id));
      if (!row) throw new ConfigError(`job ${id} does not exist`, 'NOT_FOUND');
      return row;
    };
    const submit = (req: SubmitJobRequest__Output, requestedBy: string): JobRow => {
      const prepared = prepareJob(req);
      // Limits that need the configuration fail the submission, not a job (checked again when the job runs).
      const op = prepared.op;
      if (op.type === 'instance-modify' && (op.vcpus || op.memoryMib)) {
        const inst = this.config.findInstance(op.name);
        if (inst) checkResizeLimits(inst, op.vcpus, op.memoryMib);
      }
      // Checked and submitted in one synchronous step: no other submission can slip in between.
      checkMigrationConflict(this.jobs, op);
      return this.queue.submit(prepared.op.type, prepared.op, prepared.summary, prepared.locks, requestedBy);
    };
    const streams = { queue: this.queue, store: this.jobs };
    return {
      SubmitJob: (call, callback) => unary((req: SubmitJobRequest__Output) => ({ jobId: submit(req, identity(call)).id }))(call, callback),
      RunJob: (call) => {
        let job: JobRow;
        try {
          job = submit(call.request, identity(call));
        } catch (err) {
          call.emit('error', toStatus(err));
          return;
        }
        call.write({ submittedJobId: job.id });
        streamJob(streams, call, job.id);
      },
      GetJob: unary((req) => {
        const row = getJobRow(req.id);
        return toJob(row, this.jobs.logs(row.id));
      }),
      ListJobs: unary(() => ({ jobs: this.jobs.list().map((r) => toJob(r)) })),
      CancelJob: unary((req) => {
        getJobRow(req.id);
        return toJob(this.queue.cancel(Number(req.id))!);
      }),
      WatchJob: (call) => {
        let row: JobRow;
        try {
          row = getJobRow(call.request.id);
        } catch (err) {
          call.emit('error', toStatus(err));
          return;
        }
        streamJob(streams, call, row.id, Number(call.request.afterSeq) || 0);
      },
      ListNodes: unary(() => ({
        nodes: this.config.listNodes().map((n) => ({ uuid: n.uuid, name: n.name, address: n.address, createdAt: n.created_at, instanceCount: n.instance_count })),
      })),
      GetNode: unary(async (req) => {
        const n = this.config.getNode(req.name);
        const count = this.config.listNodes().find((x) => x.uuid === n.uuid)?.instance_count ?? 0;
        return {
          node: { uuid: n.uuid, name: n.name, address: n.address, createdAt: n.created_at, instanceCount: count },
          live: await this.nodeLive(n),
        };
      }),
      ListInstances: unary(async (req) => {
        const operState = await this.operStates(req.live);
        if (req.summary)
          return {
            instances: listInstanceSummaries(this.db).map((i) => ({
              instance: { name: i.name, node: i.node, adminState: i.admin_state, vcpus: i.vcpus, maxvcpus: i.maxvcpus, memoryMib: i.memory_mib, maxmemMib: i.maxmem_mib },
              operState: operState(i.node, i.name),
              nicCount: i.nic_count, diskCount: i.disk_count, nicsRemovalPending: i.nics_removal_pending, disksRemovalPending: i.disks_removal_pending,
            })),
          };
        return { instances: this.config.listInstances().map((i) => ({ instance: toInstance(i), operState: operState(i.node.name, i.name) })) };
      }),
      Verify: unary((req) => this.verifier.request(this.queue, req)),
      AuditLog: unary((req) => masterAuditLog(this.config, this.rpc, req)),
      GetInstance: unary(async (req): Promise<InstanceDetails> => {
        const inst = this.config.getInstance(req.name);
        const [runtime, guestAgent] = await Promise.all([this.runtimeView(inst), this.guestAgentView(inst)]);
        return {
          instance: toInstance(inst),
          runtime,
          guestAgent,
          history: recentHistory(this.db, inst.uuid),
          operations: openOperations(this.config)
            .filter((o) => o.instance_uuid === inst.uuid)
            .map((o) => ({ id: o.id, jobId: o.job_id ?? 0, kind: o.kind, action: o.action, deviceUuid: o.device_uuid, state: o.state, createdAt: o.created_at })),
        };
      }),
    };
  }
}
