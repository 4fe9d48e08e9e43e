/**
 * gnt-noded as a real process, driven over gRPC with mutual TLS, with the test
 * guest booted under it: every hotplug is judged by what the guest reports on
 * its console.
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { loadNodeProto } from '../../src/common/proto';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { runningPid } from '../../src/hypervisor/qemu-process';
import { loadRuntimeFile, saveRuntimeFile } from '../../src/hypervisor/runtime-file';
import type { InstanceSpec } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, slotAddr, tempDir } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';
import { rejectsWith } from '../support/grpc-assert';
import { runtimeTextOf } from '../support/runtime-text';

const NODE = 'node1';
const MiB = 1024 * 1024;

describe('gnt-noded over gRPC with mutual TLS, against the real guest', function () {
  let root: string;
  let dataDir: string;
  let storageDir: string;
  let pki: TestPki;
  let noded: Noded;
  let client: NodeDaemonClient;
  let guest: GuestConsole;
  let spec: InstanceSpec;
  const name = `nd-${newUuid().slice(0, 8)}`;
  const bootDisk = newUuid();

  const call = <M extends Parameters<typeof callNode>[1]>(method: M, req: Parameters<typeof callNode<M>>[2]) =>
    callNode(client, method, req, { deadline: deadlineIn(60_000) });
  const runtimeText = (): string => runtimeTextOf(instancePaths(dataDir, name).runtimeFile);
  const storageFiles = (): string[] => fs.readdirSync(path.join(storageDir, name)).sort();
  const mode = (p: string): number => fs.statSync(p).mode & 0o777;

  async function startDaemon(): Promise<void> {
    noded = await spawnNoded({ name: NODE, dataDir, storageDir, identity: pki.node, port: await freePort() });
    client?.close();
    client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
  }

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('noded');
    dataDir = path.join(root, 'data');
    storageDir = path.join(root, 'storage');
    pki = makePki(path.join(root, 'pki'), NODE);
    await startDaemon();
    const { kernel, initrd } = guestFiles();
    spec = {
      name,
      uuid: newUuid(),
      vcpus: 1,
      maxvcpus: 4,
      memoryMib: 256,
      maxmemMib: 1024,
      kernel,
      initrd,
      kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1',
      disks: [{ uuid: bootDisk, sizeBytes: String(8 * MiB) }],
      nics: [],
    };
    await call('InstanceStart', { spec });
    guest = new GuestConsole(instancePaths(dataDir, name).consoleLog);
    await guest.waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await noded?.kill('SIGTERM');
    // Whatever the tests left running: stop the QEMU our daemon started (found by its verified pid file).
    if (dataDir && fs.existsSync(instancePaths(dataDir, name).runtimeFile)) {
      const inst = KvmInstance.open(dataDir, name);
      await inst.stop(5_000).catch(() => undefined);
    }
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('started the instance with its disk created sparse in the storage dir, private files, and the guest sees it', async () => {
    const info = await call('InstanceInfo', { name });
    assert.equal(info.running, true);
    assert.ok(info.pid > 1);
    assert.equal(info.disks.length, 1);
    const disk = info.disks[0];
    assert.equal(disk.path, path.join(storageDir, name, `${bootDisk}.img`));
    assert.equal(disk.sizeBytes, String(8 * MiB));
    assert.match(disk.deviceId, new RegExp(`^disk-${bootDisk.split('-')[0]}-pci-${disk.pci}$`));
    assert.ok(fs.statSync(disk.path).blocks * 512 < 8 * MiB, 'the disk file is sparse');
    assert.equal(mode(disk.path), 0o600);
    for (const d of [dataDir, storageDir, path.join(dataDir, name), path.join(storageDir, name)]) assert.equal(mode(d), 0o700, d);
    const paths = instancePaths(dataDir, name);
    for (const f of [paths.runtimeFile, paths.consoleLog, paths.pidFile]) assert.equal(mode(f) & 0o077, 0, `${f} is private`);
    const seen = await guest.waitFor((s) => s.blks.some((b) => b.sectors === 16384), SEEN_TIMEOUT_MS, 'the 8 MiB disk');
    assert.equal(seen.blks.find((b) => b.sectors === 16384)?.pci, slotAddr(disk.pci));
    assert.equal(info.guest?.known, true);
  });

  it('NodeInfo reports memory, CPUs, QEMU and the storage dir', async () => {
    const n = await call('NodeInfo', {});
    assert.equal(n.name, NODE);
    assert.ok(Number(n.memoryTotalMib) > 0 && Number(n.memoryFreeMib) > 0);
    assert.ok(Number(n.memoryFreeMib) <= Number(n.memoryTotalMib));
    assert.ok(n.cpus >= 1);
    assert.match(n.qemuVersion, /^\d+\.\d+\.\d+$/);
    assert.equal(n.storageDir, storageDir);
    assert.ok(Number(n.storageFreeBytes) > 0);
    assert.match(noded.log(), /NodeInfo \d+ms OK/);
  });

  it('hot-adds a NIC and a 32 MiB disk the guest sees, shows them in InstanceInfo, and removes both', async () => {
    assert.deepEqual(await call('HotplugSupported', { instance: name, deviceType: 'NIC' }), { supported: true, reason: '' });
    const mac = '52:54:00:4e:44:01';
    const nicUuid = newUuid();
    const nic = await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: nicUuid, mac } });
    assert.ok(nic.pci > 3, `NIC slot ${nic.pci}`);
    assert.equal(nic.deviceId, `nic-${nicUuid.split('-')[0]}-pci-${nic.pci}`);
    assert.ok(nic.nic?.tap, 'the reply names the tap');
    await guest.waitFor((s) => s.nets.some((n) => n.mac === mac && n.pci === slotAddr(nic.pci)), SEEN_TIMEOUT_MS, 'the new MAC at its slot');

    const diskUuid = newUuid();
    const disk = await call('HotplugDevice', {
      instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid: diskUuid, sizeBytes: String(32 * MiB) },
    });
    assert.ok(disk.pci > 3 && disk.pci !== nic.pci, `disk slot ${disk.pci}`);
    const diskFile = path.join(storageDir, name, `${diskUuid}.img`);
    assert.equal(disk.disk?.path, diskFile);
    assert.equal(fs.statSync(diskFile).size, 32 * MiB);
    assert.equal(mode(diskFile), 0o600);
    await guest.waitFor((s) => s.blks.some((b) => b.sectors === 65536 && b.pci === slotAddr(disk.pci)), SEEN_TIMEOUT_MS, '65536 sectors at the disk slot');

    const info = await call('InstanceInfo', { name });
    assert.deepEqual(
      info.nics.map((n) => [n.uuid, n.mac, n.pci, n.deviceId]),
      [[nicUuid, mac, nic.pci, nic.deviceId]],
    );
    assert.ok(info.nics[0].tap);
    assert.deepEqual(
      info.disks.map((d) => [d.uuid, d.pci]).sort(),
      [[bootDisk, info.disks.find((d) => d.uuid === bootDisk)?.pci], [diskUuid, disk.pci]].sort(),
    );
    assert.equal(info.guest?.known, true);
    assert.ok(info.guest?.nics.some((l) => l.includes(`${mac} ${slotAddr(nic.pci)}`)), `guest view NICs: ${info.guest?.nics}`);
    assert.ok(info.guest?.disks.some((l) => l.endsWith(`65536 ${slotAddr(disk.pci)}`)), `guest view disks: ${info.guest?.disks}`);

    const rn = await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: nicUuid } });
    assert.equal(rn.pci, nic.pci);
    const rd = await call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: diskUuid } });
    assert.equal(rd.pci, disk.pci);
    await guest.waitFor(
      (s) => !s.nets.some((n) => n.mac === mac) && !s.blks.some((b) => b.sectors === 65536),
      SEEN_TIMEOUT_MS,
      'the NIC and the disk gone',
    );
    assert.ok(!fs.existsSync(diskFile), 'the disk file the node created is deleted');
    const after = await call('InstanceInfo', { name });
    assert.deepEqual(after.nics, []);
    assert.deepEqual(after.disks.map((d) => d.uuid), [bootDisk]);
    assert.match(noded.log(), new RegExp(`HotplugDevice instance=${name} \\d+ms OK`));
  });

  it('runs the operations on one instance one at a time, in arrival order', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:4e:44:05';
    const nic = { uuid, mac };
    // Sent back to back without waiting: each must see the effect of the one before.
    const results = await Promise.allSettled([
      call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic }),
      call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid } }),
      call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic }),
      call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'MODIFY', nic: { uuid, mac: '52:54:00:4e:44:06' } }),
      call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid } }),
    ]);
    assert.deepEqual(results.map((r) => (r.status === 'rejected' ? String((r.reason as grpc.ServiceError).details) : 'ok')), ['ok', 'ok', 'ok', 'ok', 'ok']);
    assert.deepEqual((await call('InstanceInfo', { name })).nics, []);
    await guest.waitFor((s) => !s.nets.some((n) => n.mac === mac || n.mac === '52:54:00:4e:44:06'), SEEN_TIMEOUT_MS, 'no NIC left');
  });

  describe('clients without a certificate of the cluster CA are refused', () => {
    let before: string;
    let log: string;
    beforeEach(() => {
      before = runtimeText();
      log = noded.log();
    });
    afterEach(() => {
      assert.equal(runtimeText(), before, 'runtime file unchanged');
      assert.equal(noded.log(), log, 'no call reached the service');
    });

    const nicAdd = { instance: name, deviceType: 'NIC' as const, action: 'ADD' as const, nic: { uuid: newUuid(), mac: '52:54:00:4e:44:0f' } };

    it('a plain (no TLS) connection', async () => {
      const NodeDaemon = loadNodeProto().gnt.node.v1.NodeDaemon;
      const plain = new NodeDaemon(noded.address, grpc.credentials.createInsecure());
      try {
        await rejectsWith(callNode(plain, 'HotplugDevice', nicAdd, { deadline: deadlineIn(10_000) }), grpc.status.UNAVAILABLE);
        await rejectsWith(callNode(plain, 'InstanceList', {}, { deadline: deadlineIn(10_000) }), grpc.status.UNAVAILABLE);
      } finally {
        plain.close();
      }
    });

    it('a certificate from another CA', async () => {
      const stranger = connectNode(noded.address, pki.stranger, { serverName: 'localhost' });
      try {
        await rejectsWith(callNode(stranger, 'HotplugDevice', nicAdd, { deadline: deadlineIn(10_000) }), grpc.status.UNAVAILABLE);
        await rejectsWith(callNode(stranger, 'InstanceList', {}, { deadline: deadlineIn(10_000) }), grpc.status.UNAVAILABLE);
      } finally {
        stranger.close();
      }
    });
  });

  describe('bad input is refused with a clear error and changes nothing', () => {
    let before: string;
    let files: string[];
    beforeEach(() => {
      before = runtimeText();
      files = storageFiles();
    });
    afterEach(() => {
      assert.equal(runtimeText(), before, 'runtime file unchanged');
      assert.deepEqual(storageFiles(), files, 'no file created or deleted in the storage dir');
      assert.deepEqual(fs.readdirSync(dataDir).filter((f) => !f.startsWith('.')), [name], 'no other instance directory');
    });

    it('an unknown instance (NOT_FOUND)', async () => {
      await rejectsWith(call('InstanceInfo', { name: 'nosuch' }), grpc.status.NOT_FOUND, /instance nosuch is not known on node node1/);
      await rejectsWith(
        call('HotplugDevice', { instance: 'nosuch', deviceType: 'NIC', action: 'ADD', nic: { uuid: newUuid(), mac: '52:54:00:4e:44:02' } }),
        grpc.status.NOT_FOUND,
        /instance nosuch is not known/,
      );
      await rejectsWith(call('InstanceStop', { name: 'nosuch' }), grpc.status.NOT_FOUND);
      const sup = await call('HotplugSupported', { instance: 'nosuch', deviceType: 'DISK' });
      assert.equal(sup.supported, false);
      assert.match(sup.reason, /instance nosuch does not exist/);
    });

    it('a bad MAC (INVALID_ARGUMENT)', async () => {
      await rejectsWith(
        call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: newUuid(), mac: '52:54:00:zz:00:01' } }),
        grpc.status.INVALID_ARGUMENT,
        /MAC address "52:54:00:zz:00:01" is malformed/,
      );
    });

    it('instance names with "/" or ".." (INVALID_ARGUMENT)', async () => {
      for (const bad of ['a/b', '..', 'x..y', '../etc']) {
        await rejectsWith(call('InstanceInfo', { name: bad }), grpc.status.INVALID_ARGUMENT, /instance name .* is not valid/);
        await rejectsWith(call('InstanceStart', { spec: { ...spec, name: bad } }), grpc.status.INVALID_ARGUMENT, /instance name .* is not valid/);
        await rejectsWith(
          call('HotplugDevice', { instance: bad, deviceType: 'DISK', action: 'ADD', disk: { uuid: newUuid(), sizeBytes: String(MiB) } }),
          grpc.status.INVALID_ARGUMENT,
        );
      }
    });

    it('a disk larger than the free space of the storage dir (RESOURCE_EXHAUSTED, no file)', async () => {
      const { storageFreeBytes } = await call('NodeInfo', {});
      const size = Number(storageFreeBytes) + 1024 * MiB;
      await rejectsWith(
        call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid: newUuid(), sizeBytes: String(size) } }),
        grpc.status.RESOURCE_EXHAUSTED,
        new RegExp(`node node1 storage dir ${storageDir} has \\d+ bytes free, disk needs ${size}`),
      );
    });

    it('a new instance whose disks do not fit (RESOURCE_EXHAUSTED, nothing created)', async () => {
      const { storageFreeBytes } = await call('NodeInfo', {});
      const half = Math.ceil(Number(storageFreeBytes) / 2) + 1024 * MiB;
      const big = { uuid: newUuid(), sizeBytes: String(half) };
      await rejectsWith(
        call('InstanceStart', { spec: { ...spec, name: 'nd-big', disks: [big, { ...big, uuid: newUuid() }] } }),
        grpc.status.RESOURCE_EXHAUSTED,
        new RegExp(`storage dir ${storageDir} has \\d+ bytes free, 2 disks need ${2 * half}`),
      );
      assert.ok(!fs.existsSync(path.join(storageDir, 'nd-big')));
    });

    it('removing a running instance (FAILED_PRECONDITION)', async () => {
      await rejectsWith(call('InstanceRemove', { name }), grpc.status.FAILED_PRECONDITION, /is running .*stop it before removing it/);
      await rejectsWith(call('InstanceStart', { spec }), grpc.status.FAILED_PRECONDITION, /already running/);
    });

    it('removing a device the instance does not have (NOT_FOUND)', async () => {
      await rejectsWith(
        call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: newUuid() } }),
        grpc.status.NOT_FOUND,
        /has no disk with uuid/,
      );
    });
  });

  // Mocha runs a suite's own tests before its sub-suites: these come last on purpose.
  describe('daemon restart and instance lifecycle', () => {
    const macB = '52:54:00:4e:44:0b';
    const uuidB = newUuid();
    const macX = '52:54:00:4e:44:0d';
    const uuidX = newUuid();

    it('survives kill -9: QEMU keeps running; the restarted daemon reconciles, lists it and hotplugs through it', async () => {
      const macA = '52:54:00:4e:44:0a';
      const uuidA = newUuid();
      const a = await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: uuidA, mac: macA } });
      await guest.waitFor((s) => s.nets.some((n) => n.mac === macA), SEEN_TIMEOUT_MS, 'NIC A');
      const qemuPid = (await call('InstanceInfo', { name })).pid;

      await noded.kill('SIGKILL');
      assert.equal(runningPid(instancePaths(dataDir, name)), qemuPid, 'QEMU outlived the daemon');
      // As if the daemon had died between device_add and recording it as done.
      const file = instancePaths(dataDir, name).runtimeFile;
      const rt = loadRuntimeFile(file, name);
      rt.nics[0].state = 'attaching';
      saveRuntimeFile(file, rt);
      await startDaemon();

      const list = await call('InstanceList', {});
      assert.deepEqual(list.instances.map((i) => [i.name, i.running, i.pid]), [[name, true, qemuPid]]);
      assert.deepEqual(list.instances[0].nics.map((n) => [n.uuid, n.pci]), [[uuidA, a.pci]]);
      assert.match(noded.log(), new RegExp(`loaded instance ${name} \\(running, pid ${qemuPid}\\)`));

      await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: uuidA } });
      assert.ok(noded.log().includes(`reconciled ${name}: completed [${a.deviceId}], rolled back []`), 'reconcile ran before the RPC');
      assert.ok(!runtimeText().includes('attaching'), 'the attach was confirmed');
      await guest.waitFor((s) => !s.nets.some((n) => n.mac === macA), SEEN_TIMEOUT_MS, 'NIC A gone');
      const b = await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: uuidB, mac: macB } });
      await guest.waitFor((s) => s.nets.some((n) => n.mac === macB && n.pci === slotAddr(b.pci)), SEEN_TIMEOUT_MS, 'NIC B');
    });

    it('stops the instance: QEMU gone, runtime file kept', async function () {
      const x = await call('HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: uuidX, mac: macX } });
      await guest.waitFor((s) => s.nets.some((n) => n.mac === macX && n.pci === slotAddr(x.pci)), SEEN_TIMEOUT_MS, 'NIC X');
      const before = await call('InstanceInfo', { name });
      const stopped = await call('InstanceStop', { name, timeoutMs: 10_000 });
      assert.equal(stopped.running, false);
      assert.equal(stopped.pid, 0);
      assert.equal(runningPid(instancePaths(dataDir, name)), undefined);
      assert.deepEqual(stopped.nics.map((n) => [n.uuid, n.pci]), before.nics.map((n) => [n.uuid, n.pci]));
      assert.equal((await call('HotplugSupported', { instance: name, deviceType: 'NIC' })).reason, `instance ${name} is not running`);
      await rejectsWith(
        call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid: newUuid(), sizeBytes: String(MiB) } }),
        grpc.status.FAILED_PRECONDITION,
        /is not running/,
      );
    });

    it('InstanceStart of the stopped instance applies the spec: known devices keep their slots, new ones get free slots, others go', async () => {
      const before = await call('InstanceInfo', { name });
      const slotOf = (uuid: string): number | undefined =>
        [...before.nics, ...before.disks].find((d) => d.uuid === uuid)?.pci;
      const macC = '52:54:00:4e:44:0c';
      const uuidC = newUuid();
      // C comes first in the spec: it must still not take B's slot.
      const started = await call('InstanceStart', {
        spec: { ...spec, nics: [{ uuid: uuidC, mac: macC }, { uuid: uuidB, mac: macB }] },
      });
      assert.equal(started.running, true);
      const got = new Map([...started.nics, ...started.disks].map((d) => [d.uuid, d.pci]));
      assert.deepEqual([...got.keys()].sort(), [uuidC, uuidB, bootDisk].sort(), 'X is gone');
      assert.equal(got.get(uuidB), slotOf(uuidB));
      assert.equal(got.get(bootDisk), slotOf(bootDisk));
      const slotC = got.get(uuidC) as number;
      assert.ok(slotC > 3 && slotC !== got.get(uuidB) && slotC !== got.get(bootDisk));
      const fresh = new GuestConsole(instancePaths(dataDir, name).consoleLog);
      const seen = await fresh.waitFor(
        (s) => s.nets.some((n) => n.mac === macC) && s.nets.some((n) => n.mac === macB),
        BOOT_TIMEOUT_MS,
        'NICs B and C after the restart',
      );
      assert.equal(seen.nets.find((n) => n.mac === macB)?.pci, slotAddr(got.get(uuidB) as number));
      assert.equal(seen.nets.find((n) => n.mac === macC)?.pci, slotAddr(slotC));
      assert.ok(!seen.nets.some((n) => n.mac === macX));
      assert.equal(seen.blks.find((b) => b.sectors === 16384)?.pci, slotAddr(got.get(bootDisk) as number));
    });

    it('InstanceStop + InstanceRemove, sent together, run in arrival order and delete the runtime dir and the storage subdir', async () => {
      const stop = call('InstanceStop', { name, timeoutMs: 10_000 });
      const remove = call('InstanceRemove', { name });
      assert.equal((await stop).running, false);
      await remove;
      assert.ok(!fs.existsSync(path.join(dataDir, name)), 'runtime dir deleted');
      assert.ok(!fs.existsSync(path.join(storageDir, name)), 'storage subdir deleted');
      await rejectsWith(call('InstanceInfo', { name }), grpc.status.NOT_FOUND);
      assert.deepEqual((await call('InstanceList', {})).instances, []);
      assert.match(noded.log(), new RegExp(`InstanceRemove instance=${name} \\d+ms OK`));
    });

    it('exits cleanly on SIGTERM', async () => {
      assert.equal(await noded.kill('SIGTERM'), 0);
      assert.match(noded.log(), /SIGTERM: shutting down/);
    });
  });
});
