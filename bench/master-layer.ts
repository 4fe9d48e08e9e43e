/**
 * The master layer: a one-node cluster as real processes (gnt-cluster init,
 * gnt-masterd, a gnt-noded with a certificate from the cluster, gnt-node add,
 * gnt-instance add), and `gnt-instance modify --hotplug` end to end, either
 * through the master's gRPC API as the CLI uses it (RunJob: submitted and
 * streamed until the job has ended, in one call) or as a CLI process.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { connectMaster, submitAndWatch } from '../src/master/cli/client';
import { ClusterDir } from '../src/master/cluster-dir';
import type { MasterClient } from '../src/generated/gnt/master/v1/Master';
import type { InstanceModifyOp } from '../src/generated/gnt/master/v1/InstanceModifyOp';
import type { SubmitJobRequest } from '../src/generated/gnt/master/v1/SubmitJobRequest';
import { GUEST, GUEST_DIR, KERNEL_ARGS, SHAPE, profileArgs } from './config';
import { waitBooted } from './guest';
import type { LayerOps } from './ops';
import { freePort } from '../test/support/noded';
import { CLI_MAIN, NODED_MAIN, runCli, runCliAsync, startDaemon, stopDaemon, type CliRun, type Daemon } from '../test/support/cli-cluster';

export const API = 'master API (gRPC)';
export const CLI = 'CLI process';
export const INSTANCE = 'mbench1';
const NODE = 'node1';

/** What gnt-masterd and gnt-noded print once they serve. */
const LISTENING = /listening on/;

export class MasterCluster {
  readonly clusterDir: string;
  readonly dir: ClusterDir;
  private master: Daemon | undefined;
  private noded: Daemon | undefined;
  private api: { client: MasterClient; address: string } | undefined;
  /** DIMMs and vCPUs hot-added to the bench instance since its last boot. */
  dimms = 0;
  cpuAdds = 0;

  constructor(readonly work: string) {
    this.clusterDir = path.join(work, 'cluster');
    this.dir = new ClusterDir(this.clusterDir);
  }

  /** A CLI command as a child process (what an operator runs). */
  cli(prog: string, ...args: string[]): Promise<CliRun> {
    return runCliAsync(this.clusterDir, prog, ...args);
  }

  async cliOk(prog: string, ...args: string[]): Promise<CliRun> {
    const r = await this.cli(prog, ...args);
    if (r.code !== 0) throw new Error(`${prog} ${args.join(' ')}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    return r;
  }

  private setupCli(prog: string, ...args: string[]): void {
    const r = runCli(this.clusterDir, prog, ...args);
    if (r.code !== 0) throw new Error(`${prog} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  }

  async start(): Promise<void> {
    this.setupCli('gnt-cluster', 'init', '--master-address', `127.0.0.1:${await freePort()}`, '--name', 'bench');
    this.master = await startDaemon([...profileArgs(), CLI_MAIN, 'gnt-masterd', '--cluster-dir', this.clusterDir], LISTENING, path.join(this.work, 'masterd.log'));
    const certs = path.join(this.work, `${NODE}-certs`);
    this.setupCli('gnt-cluster', 'issue-node-cert', NODE, '--out', certs);
    const port = await freePort();
    const data = path.join(this.work, `${NODE}-data`);
    const storage = path.join(this.work, `${NODE}-storage`);
    for (const d of [data, storage]) fs.mkdirSync(d, { recursive: true });
    this.noded = await startDaemon(
      [...profileArgs(), NODED_MAIN, '--name', NODE, '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--storage-dir', storage, '--image-dir', GUEST_DIR,
        '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key')],
      LISTENING,
      path.join(this.work, `${NODE}.log`),
    );
    await this.cliOk('gnt-node', 'add', NODE, '--address', `127.0.0.1:${port}`);
    await this.cliOk('gnt-instance', 'add', '-n', NODE, '--vcpus', String(SHAPE.vcpus), '--maxvcpus', String(SHAPE.maxVcpus),
      '--memory', `${SHAPE.memoryMiB}M`, '--maxmem', `${SHAPE.maxMemoryMiB}M`, '--kernel', GUEST.kernel, '--initrd', GUEST.initrd,
      '--kernel-args', KERNEL_ARGS, INSTANCE);
    await waitBooted(this.consoleLog(INSTANCE), `${INSTANCE} under the master`);
  }

  consoleLog(instance: string): string {
    return path.join(this.work, `${NODE}-data`, instance, 'console.log');
  }

  /** The API connection, as the CLI makes it (mutual TLS with the cluster's CLI certificate). */
  get client(): { client: MasterClient; address: string } {
    this.api ??= connectMaster(this.dir);
    return this.api;
  }

  /** Submits a job and streams it to its end in one RunJob call, as `runJob` in the CLI does; throws unless it succeeded. */
  async job(req: SubmitJobRequest): Promise<void> {
    const { client, address } = this.client;
    const sink = new Writable({ write: (_chunk, _enc, cb) => cb() });
    const job = await submitAndWatch(client, address, req, sink);
    if (job.status !== 'success') throw new Error(`job ${job.id} ${job.status}: ${job.error}`);
  }

  modify(op: Omit<InstanceModifyOp, 'name' | 'hotplug'>): Promise<void> {
    return this.job({ instanceModify: { name: INSTANCE, hotplug: 'HOTPLUG', ...op } });
  }

  /** Back to boot memory: an ACPI shrink is recorded, then a stop and a start apply it. */
  async restartInstance(): Promise<void> {
    if (this.dimms) await this.modify({ memoryMib: SHAPE.memoryMiB });
    await this.job({ instanceStop: { name: INSTANCE } });
    fs.rmSync(this.consoleLog(INSTANCE), { force: true });
    await this.job({ instanceStart: { name: INSTANCE } });
    await waitBooted(this.consoleLog(INSTANCE), `${INSTANCE} under the master`);
    this.dimms = 0;
    this.cpuAdds = 0;
  }

  async stop(): Promise<void> {
    if (this.master?.child.exitCode === null) await this.job({ instanceStop: { name: INSTANCE } }).catch(() => undefined);
    this.api?.client.close();
    await stopDaemon(this.noded);
    await stopDaemon(this.master);
  }
}

/** One modify, in both forms. */
interface Change {
  api: Omit<InstanceModifyOp, 'name' | 'hotplug'>;
  cli: string[];
}

const CHANGES = {
  nicAdd: { api: { nics: [{ action: 'ADD' }] }, cli: ['--net', 'add'] },
  nicRemove: { api: { nics: [{ action: 'REMOVE', index: 0 }] }, cli: ['--net', '0:remove'] },
  diskAdd: { api: { disks: [{ action: 'ADD', sizeBytes: 16 << 20 }] }, cli: ['--disk', 'add:size=16M'] },
  diskRemove: { api: { disks: [{ action: 'REMOVE', index: 0 }] }, cli: ['--disk', '0:remove'] },
  cpuAdd: { api: { vcpus: SHAPE.vcpus + 1 }, cli: ['-B', `vcpus=${SHAPE.vcpus + 1}`] },
  cpuRemove: { api: { vcpus: SHAPE.vcpus }, cli: ['-B', `vcpus=${SHAPE.vcpus}`] },
} satisfies Record<string, Change>;

const dimmChange = (memoryMib: number): Change => ({ api: { memoryMib }, cli: ['-B', `memory=${memoryMib}M`] });

/** `gnt-instance modify --hotplug` through the API (`form` "api") or as a CLI process ("cli"). */
export class MasterLayer implements LayerOps {
  readonly layer: string;

  constructor(private readonly mc: MasterCluster, private readonly form: 'api' | 'cli') {
    this.layer = form === 'api' ? API : CLI;
  }

  private async run(c: Change): Promise<void> {
    if (this.form === 'api') await this.mc.modify(c.api);
    else await this.mc.cliOk('gnt-instance', 'modify', '--hotplug', ...c.cli, INSTANCE);
  }

  nicAdd = (): Promise<void> => this.run(CHANGES.nicAdd);
  nicRemove = (): Promise<void> => this.run(CHANGES.nicRemove);
  diskAdd = (): Promise<void> => this.run(CHANGES.diskAdd);
  diskRemove = (): Promise<void> => this.run(CHANGES.diskRemove);
  async cpuAdd(): Promise<void> {
    await this.run(CHANGES.cpuAdd);
    this.mc.cpuAdds++;
  }

  cpuRemove = (): Promise<void> => this.run(CHANGES.cpuRemove);

  async dimmAdd(): Promise<void> {
    await this.run(dimmChange(SHAPE.memoryMiB + SHAPE.dimmMiB * (this.mc.dimms + 1)));
    this.mc.dimms++;
  }

  room(): { cpuAdds: number; dimms: number } {
    return { cpuAdds: SHAPE.cpuAddsPerBoot - this.mc.cpuAdds, dimms: SHAPE.dimmsPerBoot - this.mc.dimms };
  }

  reset(): Promise<void> {
    return this.mc.restartInstance();
  }
}
