/**
 * NodeDaemon.InstanceConsole: gnt-noded as a real process over gRPC with
 * mutual TLS, the real guest with a shell on its serial console.
 */
import type * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { ConsoleInput } from '../../src/generated/gnt/node/v1/ConsoleInput';
import type { ConsoleOutput__Output } from '../../src/generated/gnt/node/v1/ConsoleOutput';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, tempDir } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';

const NODE = 'node1';

interface Session {
  stream: grpc.ClientDuplexStream<ConsoleInput, ConsoleOutput__Output>;
  text: () => string;
  ended: Promise<{ ended?: string; error?: grpc.ServiceError }>;
  waitFor(needle: string): Promise<void>;
}

function open(client: NodeDaemonClient, first: ConsoleInput): Session {
  const stream = client.InstanceConsole();
  let text = '';
  let endedText: string | undefined;
  const ended = new Promise<{ ended?: string; error?: grpc.ServiceError }>((resolve) => {
    stream.on('data', (m: ConsoleOutput__Output) => {
      text += m.data.toString('latin1');
      if (m.ended) endedText = m.ended;
    });
    stream.on('error', (error: grpc.ServiceError) => resolve({ error }));
    stream.on('end', () => resolve({ ended: endedText }));
  });
  stream.write(first);
  return {
    stream,
    text: () => text,
    ended,
    async waitFor(needle) {
      const deadline = Date.now() + SEEN_TIMEOUT_MS;
      while (!text.includes(needle)) {
        if (Date.now() > deadline) throw new Error(`never saw ${needle}; got ${JSON.stringify(text.slice(-400))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

describe('InstanceConsole on gnt-noded (real gRPC, mTLS, QEMU and guest)', function () {
  let root: string;
  let dataDir: string;
  let pki: TestPki;
  let noded: Noded;
  let client: NodeDaemonClient;
  const name = `con-${newUuid().slice(0, 8)}`;
  const fds = (): number => fs.readdirSync(`/proc/${noded.pid}/fd`).length;

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('console-noded');
    dataDir = path.join(root, 'data');
    pki = makePki(path.join(root, 'pki'), NODE);
    noded = await spawnNoded({ name: NODE, dataDir, storageDir: path.join(root, 'storage'), identity: pki.node, port: await freePort() });
    client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
    const { kernel, initrd } = guestFiles();
    await callNode(client, 'InstanceStart', {
      spec: { name, uuid: newUuid(), vcpus: 1, maxvcpus: 1, memoryMib: 256, maxmemMib: 256, kernel, initrd, kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1 gnt.shell=1', disks: [], nics: [] },
    }, { deadline: deadlineIn(60_000) });
    await new GuestConsole(instancePaths(dataDir, name).consoleLog).waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await noded?.kill('SIGTERM');
    if (dataDir && fs.existsSync(instancePaths(dataDir, name).runtimeFile)) await KvmInstance.open(dataDir, name).stop(5_000).catch(() => undefined);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('replays the boot output, runs a command, refuses a second session, and leaks no fds', async () => {
    const before = fds();
    const s = open(client, { instance: name, mode: 'CONSOLE_MODE_INTERACTIVE' });
    await s.waitFor('\n'); // some replayed boot output
    assert.ok(s.text().length > 0);
    const second = open(client, { instance: name, mode: 'CONSOLE_MODE_INTERACTIVE' });
    const refused = await second.ended;
    assert.match(refused.error?.details ?? '', new RegExp(`the console of ${name} is in use by another session`));
    s.stream.write({ data: Buffer.from('\recho gnt-console-$((6*7))\r') });
    await s.waitFor('gnt-console-42');
    s.stream.end();
    const r = await s.ended;
    assert.equal(r.error, undefined);
    const deadline = Date.now() + SEEN_TIMEOUT_MS;
    while (fds() > before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
    assert.ok(fds() <= before, `gnt-noded has ${fds() - before} more fds open after the session`);
    const again = open(client, { instance: name, mode: 'CONSOLE_MODE_INTERACTIVE' });
    again.stream.write({ data: Buffer.from('echo gnt-again-$((2*3))\r') });
    await again.waitFor('gnt-again-6');
    again.stream.end();
    await again.ended;
  });

  it('tail mode replays recent output and refuses input', async () => {
    const t = open(client, { instance: name, mode: 'CONSOLE_MODE_TAIL', replayBytes: 64 * 1024 });
    await t.waitFor('gnt-console-42');
    t.stream.write({ data: Buffer.from('reboot\r') });
    const r = await t.ended;
    assert.match(r.error?.details ?? '', /read-only: input is refused/);
  });
});
