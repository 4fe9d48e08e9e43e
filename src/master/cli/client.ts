/**
 * The CLI's connection to gnt-masterd. On the master node, as root, the
 * master's local unix socket (CLUSTER_DIR/masterd.sock, or
 * GNT_MASTER_SOCKET): no certificate, the caller is the local
 * administrator. Elsewhere, or with GNT_CLI_TRANSPORT=tls: mutual TLS with
 * the CLI certificate of the cluster dir.
 *
 * The socket is spoken by light-client.ts over Node's own HTTP/2, so a
 * command on the master loads neither @grpc/grpc-js nor the TLS stack;
 * TLS uses grpc-js, loaded only then (GNT_CLI_CLIENT=grpc-js uses grpc-js on
 * the socket too, to compare the two).
 */
import type * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import type { MasterClient } from '../../generated/gnt/master/v1/Master';
import type { Job__Output } from '../../generated/gnt/master/v1/Job';
import type { SubmitJobRequest } from '../../generated/gnt/master/v1/SubmitJobRequest';
import type { ClusterDir } from '../cluster-dir';
import { LightChannel, lightClient, Status } from './light-client';

export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

export type Transport = 'socket' | 'tls';

/**
 * Which way to the master: GNT_CLI_TRANSPORT "tls" or "socket" forces one;
 * otherwise the local socket when it exists and this user may open it.
 */
export function chooseTransport(dir: ClusterDir): { transport: Transport; socket: string } {
  const socket = process.env.GNT_MASTER_SOCKET || dir.localSocket;
  const forced = process.env.GNT_CLI_TRANSPORT;
  if (forced && forced !== 'tls' && forced !== 'socket' && forced !== 'auto')
    throw new CliError(`GNT_CLI_TRANSPORT must be "tls", "socket" or "auto", not "${forced}"`, 2);
  if (forced === 'tls' || forced === 'socket') return { transport: forced, socket };
  try {
    if (fs.statSync(socket).isSocket()) {
      fs.accessSync(socket, fs.constants.R_OK | fs.constants.W_OK);
      return { transport: 'socket', socket };
    }
  } catch {
    /* no socket here, or not ours to open: TLS */
  }
  return { transport: 'tls', socket };
}

export function connectMaster(dir: ClusterDir): { client: MasterClient; address: string } {
  const { transport, socket } = chooseTransport(dir);
  if (transport === 'socket') {
    const address = `unix:${socket}`;
    if (process.env.GNT_CLI_CLIENT !== 'grpc-js')
      return { client: lightClient(new LightChannel(socket), 'master.proto', 'gnt.master.v1.Master') as unknown as MasterClient, address };
    const { grpcJs, Ctor, limits } = grpcMaster();
    return { client: new Ctor(address, grpcJs.credentials.createInsecure(), limits), address };
  }
  const { master_address: address } = dir.readClusterFile();
  const id = dir.cliIdentity;
  for (const f of [id.ca, id.cert, id.key])
    if (!fs.existsSync(f)) throw new CliError(`missing ${f}: the CLI certificate of the cluster is needed to talk to the master`);
  let tls;
  try {
    // pki (and its crypto) only for TLS.
    tls = (require('../../common/pki') as typeof import('../../common/pki')).readIdentity(id);
  } catch (err) {
    throw new CliError(`cannot read the CLI certificate: ${(err as Error).message}`);
  }
  const { grpcJs, Ctor, limits } = grpcMaster();
  return { client: new Ctor(address, grpcJs.credentials.createSsl(tls.ca, tls.key, tls.cert), limits), address };
}

/** grpc-js and the Master client constructor, loaded on first use. */
function grpcMaster() {
  const grpcJs = require('@grpc/grpc-js') as typeof grpc;
  const { loadMasterProto } = require('../../common/proto') as typeof import('../../common/proto');
  const { CHANNEL_LIMITS } = require('../../common/rpc-guard') as typeof import('../../common/rpc-guard');
  return { grpcJs, Ctor: loadMasterProto().gnt.master.v1.Master, limits: CHANNEL_LIMITS };
}

type Unary<Req, Rep> = (req: Req, options: grpc.CallOptions, cb: grpc.requestCallback<Rep>) => grpc.ClientUnaryCall;

export function call<Req, Rep>(client: MasterClient, address: string, method: keyof MasterClient & string, req: Req, timeoutMs = 60_000): Promise<Rep> {
  const fn = (client[method] as unknown as Unary<Req, Rep>).bind(client);
  return new Promise((resolve, reject) =>
    fn(req, { deadline: Date.now() + timeoutMs }, (err, reply) => (err ? reject(masterError(err, address)) : resolve(reply as Rep))),
  );
}

export function masterError(err: grpc.ServiceError, address: string): CliError {
  const detail = (err.details || err.message).replace(/\s*Resolution note:\s*$/, '').trim();
  if (err.code === Status.UNAVAILABLE) return new CliError(`cannot reach the master at ${address}: ${detail} (is gnt-masterd running?)`);
  if (err.code === Status.DEADLINE_EXCEEDED) return new CliError(`the master at ${address} did not answer in time`);
  return new CliError(detail, 1);
}

const time = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

/** Streams the job's log lines to stdout until it ends; returns the finished job. */
export function watchJob(client: MasterClient, address: string, id: number | string, out: NodeJS.WritableStream = process.stdout): Promise<Job__Output> {
  return new Promise((resolve, reject) => {
    let done: Job__Output | undefined;
    const stream = client.WatchJob({ id, afterSeq: 0 });
    stream.on('data', (ev: { line?: { time: string; message: string } | null; done?: Job__Output | null }) => {
      if (ev.line) out.write(`${time(ev.line.time)} ${ev.line.message}\n`);
      if (ev.done) done = ev.done;
    });
    stream.on('error', (err: grpc.ServiceError) => reject(masterError(err, address)));
    stream.on('end', () => (done ? resolve(done) : reject(new CliError(`the master ended the watch of job ${id} before it finished`))));
  });
}

type JobEventOut = { line?: { time: string; message: string } | null; done?: Job__Output | null; submittedJobId?: string };

/**
 * Submits and streams the job in one call (RunJob): its log lines to `out`
 * until it ends; returns the finished job. The job runs on if this client
 * goes away (gnt-job watch ID).
 */
export function submitAndWatch(client: MasterClient, address: string, req: SubmitJobRequest, out: NodeJS.WritableStream = process.stdout): Promise<Job__Output> {
  return new Promise((resolve, reject) => {
    let done: Job__Output | undefined;
    let id = '';
    const stream = client.RunJob(req);
    stream.on('data', (ev: JobEventOut) => {
      if (ev.submittedJobId) id = ev.submittedJobId;
      if (ev.line) out.write(`${time(ev.line.time)} ${ev.line.message}\n`);
      if (ev.done) done = ev.done;
    });
    stream.on('error', (err: grpc.ServiceError) => reject(masterError(err, address)));
    stream.on('end', () =>
      done ? resolve(done) : reject(new CliError(`the master ended the stream of job ${id || '(not submitted)'} before it finished${id ? `; see "gnt-job watch ${id}"` : ''}`)),
    );
  });
}

/** Submits; with `submitOnly` prints the job id, else streams it to its end (RunJob). Exit code 0 on success, 1 on failure. */
export async function runJob(dir: ClusterDir, req: SubmitJobRequest, submitOnly: boolean): Promise<number> {
  const { client, address } = connectMaster(dir);
  try {
    if (!submitOnly) return finishedJobExit(await submitAndWatch(client, address, req));
    const reply = await call<SubmitJobRequest, { jobId: string }>(client, address, 'SubmitJob', req);
    process.stdout.write(`${reply.jobId}\n`);
    return 0;
  } finally {
    client.close();
  }
}

export function finishedJobExit(job: Job__Output): number {
  if (job.status === 'success') return 0;
  process.stderr.write(`Failure: job ${job.id} ${job.status === 'canceled' ? 'was canceled' : `failed: ${job.error}`}\n`);
  return 1;
}
