/**
 * The node daemon layer: a real gnt-noded process with a fresh cluster PKI,
 * instances started through InstanceStart, and HotplugDevice /
 * InstanceResize calls over mutual-TLS gRPC.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../src/common/node-client';
import { createCa, issueCertificate } from '../src/common/pki';
import { MASTER_ROLE, nodeRole } from '../src/common/cert-roles';
import type { HotplugDeviceRequest } from '../src/generated/gnt/node/v1/HotplugDeviceRequest';
import { GUEST, GUEST_DIR, KERNEL_ARGS, SHAPE, profileArgs } from './config';
import { waitBooted } from './guest';
import type { LayerOps } from './ops';
import { NODED_MAIN, startDaemon, stopDaemon, type Daemon } from '../test/support/cli-cluster';
import { freePort } from '../test/support/noded';

export const NODED = 'gnt-noded gRPC (mTLS)';

export class NodedBench {
  private constructor(
    readonly client: NodeDaemonClient,
    readonly dataDir: string,
    private readonly daemon: Daemon,
    private readonly started = new Set<string>(),
  ) {}

  static async start(work: string): Promise<NodedBench> {
    const ca = createCa(path.join(work, 'ca'), 'bench-ca');
    const node = issueCertificate(ca, path.join(work, 'certs'), 'bench-node', nodeRole('bench-node'));
    const master = issueCertificate(ca, path.join(work, 'certs'), 'bench-master', MASTER_ROLE);
    const port = await freePort();
    const dataDir = path.join(work, 'noded-data');
    const storageDir = path.join(work, 'noded-storage');
    fs.mkdirSync(dataDir, { recursive: true });
    fs.mkdirSync(storageDir, { recursive: true });
    const daemon = await startDaemon(
      [...profileArgs(), NODED_MAIN, '--name', 'bench-node', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
        '--storage-dir', storageDir, '--image-dir', GUEST_DIR, '--ca', ca.cert, '--cert', node.cert, '--key', node.key],
      /listening on/,
      path.join(work, 'noded.log'),
    );
    const client = connectNode(`127.0.0.1:${port}`, { ca: ca.cert, cert: master.cert, key: master.key }, { serverName: 'localhost' });
    return new NodedBench(client, dataDir, daemon);
  }

  get pid(): number {
    return this.daemon.child.pid as number;
  }

  consoleLog(instance: string): string {
    return path.join(this.dataDir, instance, 'console.log');
  }

  /** InstanceStart with the bench shape; resolves once QEMU runs (not booted yet). */
  async startInstance(name: string): Promise<void> {
    fs.rmSync(this.consoleLog(name), { force: true });
    await callNode(this.client, 'InstanceStart', {
      spec: {
        name, uuid: randomUUID(), vcpus: SHAPE.vcpus, maxvcpus: SHAPE.maxVcpus, memoryMib: SHAPE.memoryMiB, maxmemMib: SHAPE.maxMemoryMiB,
        kernel: GUEST.kernel, initrd: GUEST.initrd, kernelArgs: KERNEL_ARGS, disks: [], nics: [],
      },
    }, { deadline: deadlineIn(120_000) });
    this.started.add(name);
  }

  async bootInstance(name: string): Promise<void> {
    await this.startInstance(name);
    await waitBooted(this.consoleLog(name), `${name} under gnt-noded`);
  }

  async stopInstance(name: string): Promise<void> {
    await callNode(this.client, 'InstanceStop', { name, timeoutMs: 10_000 }, { deadline: deadlineIn(30_000) });
  }

  hotplug(req: HotplugDeviceRequest): Promise<unknown> {
    return callNode(this.client, 'HotplugDevice', req, { deadline: deadlineIn(60_000) });
  }

  resize(instance: string, req: { vcpus?: number; memoryMib?: number }): Promise<unknown> {
    return callNode(this.client, 'InstanceResize', { instance, vcpus: req.vcpus ?? 0, memoryMib: req.memoryMib ?? 0 }, { deadline: deadlineIn(60_000) });
  }

  /** Stops every instance it started, then the daemon. */
  async stop(): Promise<void> {
    await Promise.all([...this.started].map((n) => this.stopInstance(n).catch(() => undefined)));
    this.client.close();
    await stopDaemon(this.daemon);
  }
}

export class NodedLayer implements LayerOps {
  readonly layer = NODED;
  private nic = '';
  private disk = '';
  private dimms = 0;
  private cpuAdds = 0;

  constructor(private readonly nd: NodedBench, readonly instance: string, private readonly diskPath: string) {}

  async nicAdd(): Promise<void> {
    this.nic = randomUUID();
    await this.nd.hotplug({ instance: this.instance, deviceType: 'NIC', action: 'ADD', nic: { uuid: this.nic, mac: '52:54:00:be:00:03' } });
  }

  async nicRemove(): Promise<void> {
    await this.nd.hotplug({ instance: this.instance, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: this.nic } });
  }

  async diskAdd(): Promise<void> {
    this.disk = randomUUID();
    await this.nd.hotplug({ instance: this.instance, deviceType: 'DISK', action: 'ADD', disk: { uuid: this.disk, path: this.diskPath } });
  }

  async diskRemove(): Promise<void> {
    await this.nd.hotplug({ instance: this.instance, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: this.disk } });
  }

  async cpuAdd(): Promise<void> {
    await this.nd.resize(this.instance, { vcpus: SHAPE.vcpus + 1 });
    this.cpuAdds++;
  }

  async cpuRemove(): Promise<void> {
    await this.nd.resize(this.instance, { vcpus: SHAPE.vcpus });
  }

  async dimmAdd(): Promise<void> {
    await this.nd.resize(this.instance, { memoryMib: SHAPE.memoryMiB + SHAPE.dimmMiB * (this.dimms + 1) });
    this.dimms++;
  }

  room(): { cpuAdds: number; dimms: number } {
    return { cpuAdds: SHAPE.cpuAddsPerBoot - this.cpuAdds, dimms: SHAPE.dimmsPerBoot - this.dimms };
  }

  async reset(): Promise<void> {
    await this.nd.stopInstance(this.instance);
    await this.nd.bootInstance(this.instance);
    this.dimms = 0;
    this.cpuAdds = 0;
  }
}
