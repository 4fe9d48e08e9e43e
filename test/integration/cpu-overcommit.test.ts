/**
 * Issue 10 item 8, vCPU overcommit: gnt-noded as a real process with the test
 * guest. With the default ratio (16) a live grow above the node's CPU count
 * works and the guest sees the CPUs; restarted with --cpu-overcommit-ratio 1
 * the same node refuses a grow, and a start, above its CPU count, with the
 * numbers in the error; a shrink is always allowed.
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { countCpuList, GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { InstanceSpec } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, tempDir } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';
import { rejectsWith } from '../support/grpc-assert';
import { runtimeTextOf } from '../support/runtime-text';

const NODE = 'node1';
/** What gnt-noded counts as the node's CPUs (as NodeInfo reports them). */
const HOST_CPUS = os.availableParallelism();
/** One vCPU more than the node has CPUs (3 on a 2-CPU machine). */
const ABOVE = HOST_CPUS + 1;

describe(`vCPU overcommit through gnt-noded (${HOST_CPUS} host CPUs), against the real guest`, function () {
  let root: string;
  let dataDir: string;
  let pki: TestPki;
  let noded: Noded | undefined;
  let client: NodeDaemonClient | undefined;
  let spec: InstanceSpec;
  const name = `oc-${newUuid().slice(0, 8)}`;

  const call = <M extends Parameters<typeof callNode>[1]>(method: M, req: Parameters<typeof callNode<M>>[2]) =>
    callNode(client as NodeDaemonClient, method, req, { deadline: deadlineIn(60_000) });
  const paths = () => instancePaths(dataDir, name);
  const guestSees = (cpus: number, what: string) =>
    new GuestConsole(paths().consoleLog).waitFor(
      (s) => countCpuList(s.cpusPresent) === cpus && countCpuList(s.cpusOnline) === cpus,
      SEEN_TIMEOUT_MS,
      what,
    );

  async function startDaemon(args: string[] = []): Promise<void> {
    client?.close();
    await noded?.kill('SIGTERM');
    noded = await spawnNoded({ name: NODE, dataDir, storageDir: path.join(root, 'storage'), identity: pki.node, port: await freePort(), args });
    client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
  }

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('overcommit');
    dataDir = path.join(root, 'data');
    pki = makePki(path.join(root, 'pki'), NODE);
    await startDaemon();
    const { kernel, initrd } = guestFiles();
    spec = {
      name,
      uuid: newUuid(),
      vcpus: 1,
      maxvcpus: HOST_CPUS + 2,
      memoryMib: 256,
      kernel,
      initrd,
      kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1',
      disks: [],
      nics: [],
    };
    await call('InstanceStart', { spec });
    await guestSees(1, 'the first state block with 1 CPU');
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await noded?.kill('SIGTERM');
    if (dataDir && fs.existsSync(paths().runtimeFile)) await KvmInstance.open(dataDir, name).stop(5_000).catch(() => undefined);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it(`default ratio 16: a live grow from 1 to ${ABOVE} vCPUs (above the ${HOST_CPUS} host CPUs) works and the guest sees them`, async () => {
    assert.match(noded?.log() ?? '', new RegExp(`vCPU overcommit ratio 16: the running instances may have ${HOST_CPUS * 16} vCPUs together`));
    const r = await call('InstanceResize', { instance: name, vcpus: ABOVE });
    assert.equal(r.vcpus, ABOVE);
    await guestSees(ABOVE, `${ABOVE} present and online CPUs`);
    assert.equal((await call('InstanceInfo', { name })).resources?.vcpus, ABOVE);
  });

  it('ratio 1: a grow above the node CPU count is refused with the numbers, and nothing changes', async function () {
    this.timeout(60_000);
    await startDaemon(['--cpu-overcommit-ratio', '1']);
    const before = runtimeTextOf(paths().runtimeFile);
    await rejectsWith(
      call('InstanceResize', { instance: name, vcpus: ABOVE + 1 }),
      grpc.status.RESOURCE_EXHAUSTED,
      new RegExp(
        `^instance ${name} cannot grow to ${ABOVE + 1} vCPUs: the node has ${HOST_CPUS} CPUs and a vCPU overcommit ratio of 1, ` +
          `so its instances may have ${HOST_CPUS} vCPUs together; the others have 0, so ${ABOVE + 1} asked in all\\. Ask for at most ${HOST_CPUS}`,
      ),
    );
    assert.equal(runtimeTextOf(paths().runtimeFile), before);
    await guestSees(ABOVE, `still ${ABOVE} CPUs`);
  });

  it('ratio 1: an instance above the limit can still shrink live', async () => {
    const r = await call('InstanceResize', { instance: name, vcpus: HOST_CPUS });
    assert.equal(r.vcpus, HOST_CPUS);
    await guestSees(HOST_CPUS, `${HOST_CPUS} CPUs`);
  });

  it('ratio 1: a start follows the same rule, with the numbers', async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    await call('InstanceStop', { name, timeoutMs: 10_000 });
    await rejectsWith(
      call('InstanceStart', { spec: { ...spec, vcpus: ABOVE } }),
      grpc.status.RESOURCE_EXHAUSTED,
      new RegExp(`^instance ${name} cannot start with ${ABOVE} vCPUs: the node has ${HOST_CPUS} CPUs and a vCPU overcommit ratio of 1, so its instances may have ${HOST_CPUS} vCPUs together`),
    );
    assert.equal((await call('InstanceInfo', { name })).running, false);
    fs.writeFileSync(paths().consoleLog, '');
    await call('InstanceStart', { spec: { ...spec, vcpus: HOST_CPUS } });
    await new GuestConsole(paths().consoleLog).waitFor((s) => countCpuList(s.cpusOnline) === HOST_CPUS, BOOT_TIMEOUT_MS, `a boot with ${HOST_CPUS} CPUs`);
  });
});
