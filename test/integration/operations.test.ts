/**
 * Operation ids, intents and the node's operation log, through a real
 * gnt-noded over mutual TLS and the real guest: a request replayed with the
 * same id applies once (also after the node was killed between applying and
 * replying); a fenced id is refused; a removal the paused guest does not
 * acknowledge is "removal pending" with its slot kept, and completes by
 * itself when the guest runs again; a device deleted behind the node's back
 * is reported as the node's own change; a disk file created just before a
 * crash is deleted by reconciliation.
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { QmpClient } from '../../src/hypervisor/qmp-client';
import { loadRuntimeFile } from '../../src/hypervisor/runtime-file';
import type { OperationRecord__Output } from '../../src/generated/gnt/node/v1/OperationRecord';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, tempDir } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';
import { rejectsWith } from '../support/grpc-assert';
import { runtimeTextOf } from '../support/runtime-text';

const NODE = 'node1';
const MiB = 1024 * 1024;
const UNPLUG = ['--unplug-timeout', 'nic=2,disk=2', '--test-monitor'];

describe('operation ids and the operation log, against the real guest', function () {
  let root: string;
  let dataDir: string;
  let storageDir: string;
  let pki: TestPki;
  let noded: Noded;
  let client: NodeDaemonClient;
  let guest: GuestConsole;
  let port: number;
  const name = `op-${newUuid().slice(0, 8)}`;

  const call = <M extends Parameters<typeof callNode>[1]>(method: M, req: Parameters<typeof callNode<M>>[2]) =>
    callNode(client, method, req, { deadline: deadlineIn(60_000) });
  const runtime = () => loadRuntimeFile(instancePaths(dataDir, name).runtimeFile, name);
  const status = (operationId: string, fence = false): Promise<OperationRecord__Output> =>
    call('OperationStatus', { instance: name, operationId, fence });
  const addNic = (operationId: string, uuid: string, mac: string) =>
    call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid, mac }, operationId });
  const removeNic = (operationId: string, uuid: string) =>
    call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid }, operationId });

  async function startDaemon(env: Record<string, string> = {}): Promise<void> {
    noded = await spawnNoded({ name: NODE, dataDir, storageDir, identity: pki.node, port, args: UNPLUG, env });
    client?.close();
    client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
  }

  /** The test's own QMP connection (gnt-noded --test-monitor), for what a test hook must do behind the node. */
  async function withTestMonitor<T>(fn: (mon: QmpClient) => Promise<T>): Promise<T> {
    const mon = await QmpClient.connect(instancePaths(dataDir, name).testQmpSocket as string);
    try {
      return await fn(mon);
    } finally {
      mon.close();
    }
  }

  async function pciIds(): Promise<string[]> {
    return withTestMonitor(async (mon) => {
      const buses = await mon.execute<Array<{ devices: Array<{ qdev_id: string }> }>>('query-pci');
      return buses.flatMap((b) => b.devices.map((d) => d.qdev_id)).filter(Boolean);
    });
  }

  async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await fn();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('ops');
    dataDir = path.join(root, 'data');
    storageDir = path.join(root, 'storage');
    pki = makePki(path.join(root, 'pki'), NODE);
    port = await freePort();
    await startDaemon();
    const { kernel, initrd } = guestFiles();
    await call('InstanceStart', {
      spec: {
        name, uuid: newUuid(), vcpus: 1, maxvcpus: 2, memoryMib: 256, maxmemMib: 256, kernel, initrd,
        kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1', disks: [], nics: [],
      },
    });
    guest = new GuestConsole(instancePaths(dataDir, name).consoleLog);
    await guest.waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await noded?.kill('SIGTERM');
    if (dataDir && fs.existsSync(instancePaths(dataDir, name).runtimeFile)) await KvmInstance.open(dataDir, name).stop(5_000).catch(() => undefined);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('a HotplugDevice replayed with the same operation id applies once and returns the recorded reply', async () => {
    const op = randomUUID();
    const uuid = newUuid();
    const mac = '52:54:00:0b:00:01';
    const first = await addNic(op, uuid, mac);
    const again = await addNic(op, uuid, mac);
    assert.deepEqual(again, first);
    assert.equal(runtime().nics.filter((n) => n.uuid === uuid).length, 1);
    assert.equal((await pciIds()).filter((id) => id === first.deviceId).length, 1);
    const seen = await guest.waitFor((s) => s.nets.some((n) => n.mac === mac), SEEN_TIMEOUT_MS, 'the NIC');
    assert.equal(seen.nets.filter((n) => n.mac === mac).length, 1);
    const st = await status(op);
    assert.equal(st.state, 'OPERATION_SUCCEEDED');
    assert.equal(st.hotplug?.pci, first.pci);
    // Two concurrent copies of a new id: one applies, both get its reply.
    const op2 = randomUUID();
    const uuid2 = newUuid();
    const [a, b] = await Promise.all([addNic(op2, uuid2, '52:54:00:0b:00:02'), addNic(op2, uuid2, '52:54:00:0b:00:02')]);
    assert.deepEqual(a, b);
    assert.equal(runtime().nics.filter((n) => n.uuid === uuid2).length, 1);
    await removeNic(randomUUID(), uuid2);
  });

  it('refuses an operation id reused for another change, naming both, and changes nothing', async () => {
    const op = randomUUID();
    const uuid = newUuid();
    await addNic(op, uuid, '52:54:00:0b:00:03');
    const before = runtimeTextOf(instancePaths(dataDir, name).runtimeFile);
    await rejectsWith(
      call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: newUuid() }, operationId: op }),
      grpc.status.INVALID_ARGUMENT,
      /was used for nic add of .*, not for disk remove of .*: give a new change a new operation id/,
    );
    await rejectsWith(removeNic(op, uuid), grpc.status.INVALID_ARGUMENT, /not for nic remove/);
    assert.equal(runtimeTextOf(instancePaths(dataDir, name).runtimeFile), before);
    assert.equal((await status(op)).state, 'OPERATION_SUCCEEDED');
    await removeNic(randomUUID(), uuid);
  });

  it('applies once when the node is killed between applying and replying, and the replay gets the outcome', async function () {
    this.timeout(120_000);
    await noded.kill('SIGTERM');
    await startDaemon({ GNT_NODED_CRASH_POINT: 'after-hotplug-applied' });
    const op = randomUUID();
    const uuid = newUuid();
    const req = { instance: name, deviceType: 'DISK' as const, action: 'ADD' as const, disk: { uuid, sizeBytes: String(16 * MiB) }, operationId: op };
    await assert.rejects(call('HotplugDevice', req), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.INTERNAL || e.code === grpc.status.CANCELLED);
    await noded.kill('SIGKILL');
    await startDaemon();
    const st = await status(op);
    assert.equal(st.state, 'OPERATION_SUCCEEDED', `after the restart: ${JSON.stringify(st)}`);
    const replay = await call('HotplugDevice', req);
    assert.equal(replay.pci, st.hotplug?.pci);
    assert.equal(runtime().block_devices.filter((d) => d.uuid === uuid).length, 1);
    assert.equal((await pciIds()).filter((id) => id === replay.deviceId).length, 1);
    const seen = await guest.waitFor((s) => s.blks.some((b) => b.sectors === (16 * MiB) / 512), SEEN_TIMEOUT_MS, 'the 16 MiB disk');
    assert.equal(seen.blks.filter((b) => b.sectors === (16 * MiB) / 512).length, 1);
    const removed = await call('HotplugDevice', { ...req, action: 'REMOVE', operationId: randomUUID() });
    assert.equal(removed.removalPending, false);
    assert.ok(!fs.existsSync(path.join(storageDir, name, `${uuid}.img`)), 'the node deleted the file it had created');
  });

  it('a fenced operation id is refused later, and changes nothing', async () => {
    const op = randomUUID();
    assert.equal((await status(op)).state, 'OPERATION_UNKNOWN');
    const fenced = await status(op, true);
    assert.equal(fenced.state, 'OPERATION_FAILED');
    assert.equal(fenced.settledBy, 'fence');
    const before = runtime().nics.length;
    await assert.rejects(addNic(op, newUuid(), '52:54:00:0b:00:03'), (e: grpc.ServiceError) => /fenced/.test(e.details));
    assert.equal(runtime().nics.length, before);
  });

  it('a removal the paused guest does not acknowledge is pending, keeps its slot, and completes by itself when the guest runs', async function () {
    this.timeout(120_000);
    const uuid = newUuid();
    const mac = '52:54:00:0b:00:04';
    const added = await addNic(randomUUID(), uuid, mac);
    await guest.waitFor((s) => s.nets.some((n) => n.mac === mac), SEEN_TIMEOUT_MS, 'the NIC');
    const cursor = Number((await call('OperationLog', { cursors: [{ instance: name, afterRevision: 0 }] })).records.reduce((m, r) => Math.max(m, Number(r.revision)), 0));
    await withTestMonitor((mon) => mon.execute('stop'));
    const op = randomUUID();
    const pending = await removeNic(op, uuid);
    assert.equal(pending.removalPending, true);
    assert.equal(pending.pci, added.pci);
    const info = await call('InstanceInfo', { name });
    assert.equal(info.nics.find((n) => n.uuid === uuid)?.state, 'detaching');
    assert.equal((await status(op)).state, 'OPERATION_REMOVAL_PENDING');
    // Its slot is not reused while pending.
    const other = await addNic(randomUUID(), newUuid(), '52:54:00:0b:00:05');
    assert.notEqual(other.pci, added.pci);
    // Repeating the remove waits again (not NOT_FOUND).
    const again = await removeNic(op, uuid);
    assert.equal(again.removalPending, true);
    await withTestMonitor((mon) => mon.execute('cont'));
    const done = await waitFor('the late acknowledgement in the operation log', async () => {
      const log = await call('OperationLog', { cursors: [{ instance: name, afterRevision: String(cursor) }] });
      return log.records.find((r) => r.operationId === op && r.state === 'OPERATION_SUCCEEDED');
    });
    assert.equal(done.settledBy, 'guest');
    assert.ok(!runtime().nics.some((n) => n.uuid === uuid));
    await guest.waitFor((s) => !s.nets.some((n) => n.mac === mac), SEEN_TIMEOUT_MS, 'the NIC gone from the guest');
    await removeNic(randomUUID(), other.nic?.uuid as string);
  });

  it('a device deleted behind the node is reported as its own change, with no operation id', async function () {
    this.timeout(60_000);
    const uuid = newUuid();
    const added = await addNic(randomUUID(), uuid, '52:54:00:0b:00:06');
    const top = Math.max(0, ...(await call('OperationLog', { cursors: [{ instance: name, afterRevision: 0 }] })).records.map((r) => Number(r.revision)));
    await withTestMonitor((mon) => mon.execute('device_del', { id: added.deviceId }));
    const rec = await waitFor('the guest eject in the operation log', async () => {
      const log = await call('OperationLog', { cursors: [{ instance: name, afterRevision: String(top) }] });
      return log.records.find((r) => r.deviceUuid === uuid && r.action === 'remove');
    });
    assert.equal(rec.operationId, '');
    assert.equal(rec.settledBy, 'guest');
    assert.equal(rec.state, 'OPERATION_SUCCEEDED');
    assert.ok(!runtime().nics.some((n) => n.uuid === uuid));
  });

  it('a disk file created just before a crash is deleted by reconciliation, and the operation fails', async function () {
    this.timeout(120_000);
    await noded.kill('SIGTERM');
    await startDaemon({ GNT_NODED_CRASH_POINT: 'after-disk-file-created' });
    const op = randomUUID();
    const uuid = newUuid();
    const file = path.join(storageDir, name, `${uuid}.img`);
    await assert.rejects(call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid, sizeBytes: String(8 * MiB) }, operationId: op }));
    await noded.kill('SIGKILL');
    assert.ok(fs.existsSync(file), 'the crash left the file');
    assert.equal(runtime().block_devices.find((d) => d.uuid === uuid)?.state, 'attaching', 'with an intent naming it');
    await startDaemon();
    const st = await status(op);
    assert.equal(st.state, 'OPERATION_FAILED');
    assert.equal(st.settledBy, 'reconcile');
    assert.ok(!fs.existsSync(file), 'reconciliation deleted the file');
    assert.ok(!runtime().block_devices.some((d) => d.uuid === uuid));
  });
});
