/**
 * The node daemon layer for the benchmark: a real gnt-noded process with a
 * fresh cluster PKI, an instance started through InstanceStart, and
 * HotplugDevice calls over mutual-TLS gRPC.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../src/common/node-client';
import { createCa, issueCertificate } from '../src/common/pki';
import type { Series } from './stats';
import { time } from './stats';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export interface NodedBench {
  client: NodeDaemonClient;
  instance: string;
  stop(): Promise<void>;
}

export async function startNoded(repo: string, work: string, guest: { kernel: string; initrd: string }): Promise<NodedBench> {
  const ca = createCa(path.join(work, 'ca'), 'bench-ca');
  const node = issueCertificate(ca, path.join(work, 'certs'), 'bench-node');
  const master = issueCertificate(ca, path.join(work, 'certs'), 'bench-master');
  const port = await freePort();
  const dataDir = path.join(work, 'noded-data');
  const storageDir = path.join(work, 'noded-storage');
  fs.mkdirSync(dataDir, { recursive: true });
  fs.mkdirSync(storageDir, { recursive: true });
  const proc: ChildProcess = spawn(
    process.execPath,
    [path.join(repo, 'dist/src/noded/main.js'), '--name', 'bench-node', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
      '--storage-dir', storageDir, '--ca', ca.cert, '--cert', node.cert, '--key', node.key],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`gnt-noded did not start: ${out}`)), 30_000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (/listening on/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const client = connectNode(`127.0.0.1:${port}`, { ca: ca.cert, cert: master.cert, key: master.key }, { serverName: 'localhost' });
  const instance = 'bench2';
  await callNode(client, 'InstanceStart', {
    spec: {
      name: instance, uuid: randomUUID(), vcpus: 1, maxvcpus: 4, memoryMib: 256, maxmemMib: 1024,
      kernel: guest.kernel, initrd: guest.initrd, kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1', disks: [], nics: [],
    },
  }, { deadline: deadlineIn(60_000) });
  const consoleLog = path.join(dataDir, instance, 'console.log');
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(consoleLog) || !fs.readFileSync(consoleLog, 'utf8').includes('gnt-guest end')) {
    if (Date.now() > deadline) throw new Error('guest under gnt-noded did not boot');
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    client,
    instance,
    async stop() {
      await callNode(client, 'InstanceStop', { name: instance, timeoutMs: 10_000 }, { deadline: deadlineIn(30_000) }).catch(() => undefined);
      client.close();
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

export async function benchNoded(nd: NodedBench, disk: string, iterations: number, series: Series[]): Promise<void> {
  const add = (op: string): Series => {
    const s = { name: op, layer: 'gnt-noded gRPC (mTLS)', op, samplesMs: [] as number[] };
    series.push(s);
    return s;
  };
  const [na, nr, da, dr] = [add('NIC add'), add('NIC remove'), add('disk add'), add('disk remove')];
  const hp = (req: Parameters<typeof callNode<'HotplugDevice'>>[2]) => callNode(nd.client, 'HotplugDevice', req, { deadline: deadlineIn(60_000) });
  for (let i = 0; i < iterations; i++) {
    const nic = randomUUID();
    na.samplesMs.push(await time(() => hp({ instance: nd.instance, deviceType: 'NIC', action: 'ADD', nic: { uuid: nic, mac: '52:54:00:be:00:03' } })));
    nr.samplesMs.push(await time(() => hp({ instance: nd.instance, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: nic } })));
    const d = randomUUID();
    da.samplesMs.push(await time(() => hp({ instance: nd.instance, deviceType: 'DISK', action: 'ADD', disk: { uuid: d, path: disk } })));
    dr.samplesMs.push(await time(() => hp({ instance: nd.instance, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: d } })));
  }
}
