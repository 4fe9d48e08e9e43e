import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeviceNotFoundError, HotplugStepError, InvalidArgumentError, NoFreePciSlotError } from '../../src/hypervisor/errors';
import { planStart, runtimeToProto } from '../../src/noded/spec';
import { toStatus } from '../../src/noded/status';
import { assertDeviceUuid, Storage } from '../../src/noded/storage';
import type { InstanceSpec__Output } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { tempDir } from '../support/guest';

describe('noded: status mapping', () => {
  it('maps hypervisor error codes to the gRPC status of the same name, and the rest to INTERNAL', () => {
    assert.deepEqual(toStatus(new InvalidArgumentError('bad mac')), { code: grpc.status.INVALID_ARGUMENT, details: 'bad mac' });
    assert.equal(toStatus(new DeviceNotFoundError('web1', 'NIC with uuid x')).code, grpc.status.NOT_FOUND);
    assert.equal(toStatus(new NoFreePciSlotError('web1', 32, 32)).code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(toStatus(new HotplugStepError('add', 'device_add', new InvalidArgumentError('x'), [], [])).code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(toStatus(new Error('boom')), { code: grpc.status.INTERNAL, details: 'boom' });
    assert.deepEqual(toStatus('weird'), { code: grpc.status.INTERNAL, details: 'weird' });
  });
});

describe('noded: storage', () => {
  let dir: string;
  let storage: Storage;
  beforeEach(() => {
    dir = tempDir('storage');
    storage = new Storage('node1', path.join(dir, 'st'));
    storage.init();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates sparse 0600 files in a 0700 instance directory, skipping existing ones', () => {
    const p = storage.defaultDiskPath('web1', 'd1');
    assert.deepEqual(storage.createDisks('web1', [{ path: p, sizeBytes: 1 << 20 }]), [p]);
    assert.equal(fs.statSync(p).size, 1 << 20);
    assert.equal(fs.statSync(p).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(p)).mode & 0o777, 0o700);
    assert.deepEqual(storage.createDisks('web1', [{ path: p, sizeBytes: 1 << 20 }]), [], 'an existing file is used as it is');
  });

  it('refuses disks larger than the free space, creating nothing', () => {
    const p = storage.defaultDiskPath('web1', 'd2');
    const free = storage.freeBytes();
    assert.throws(
      () => storage.createDisks('web1', [{ path: p, sizeBytes: free + 1 }]),
      (e: unknown) => toStatus(e).code === grpc.status.RESOURCE_EXHAUSTED &&
        new RegExp(`node node1 storage dir ${storage.dir} has \\d+ bytes free, disk needs ${free + 1}`).test((e as Error).message),
    );
    assert.ok(!fs.existsSync(p));
  });

  it('owns only files directly in the instance directory', () => {
    assert.ok(storage.owns('web1', path.join(storage.dir, 'web1', 'x.img')));
    assert.ok(!storage.owns('web1', path.join(storage.dir, 'web2', 'x.img')));
    assert.ok(!storage.owns('web1', path.join(storage.dir, 'web1', '..', 'x.img')));
    assert.ok(!storage.owns('web1', '/srv/disks/x.img'));
    assert.ok(!storage.owns('web1', path.join(storage.dir, 'web1')));
  });

  it('refuses uuids that could escape the directory', () => {
    for (const bad of ['', '../x', 'a/b', '..', '-x'])
      assert.throws(() => assertDeviceUuid(bad, 'a disk'), (e: unknown) => toStatus(e).code === grpc.status.INVALID_ARGUMENT);
    assert.equal(assertDeviceUuid('3f2a9c1e-aaaa-4bbb-8ccc-ddddeeeeffff', 'a disk'), '3f2a9c1e-aaaa-4bbb-8ccc-ddddeeeeffff');
  });
});

describe('noded: spec conversion', () => {
  const storage = new Storage('node1', '/srv/gnt');
  const NIC_NEW = { pciBus: '', linkState: '', rateMbit: 0, queues: 0, model: '' };
  const DISK_NEW = { pciBus: '', diskBus: '', diskType: '', scsiAddress: '', template: '', adopted: false, rbdPool: '', rbdImage: '' };
  const base: InstanceSpec__Output = {
    name: 'web1', uuid: '', vcpus: 1, maxvcpus: 4, memoryMib: '256', maxmemMib: '1024', kernel: '/boot/vmlinuz',
    initrd: '', kernelArgs: 'console=ttyS0', nics: [], disks: [], hvparams: { machine: 'q35', security_model: 'none' },
  };

  it('turns a spec into a machine, device requests and disks to create', () => {
    const plan = planStart({
      ...base,
      nics: [{ uuid: 'n1', mac: '52:54:00:00:00:01', link: '', pci: 0, deviceId: '', tap: '', state: '', ...NIC_NEW }],
      disks: [
        { uuid: 'd1', sizeBytes: '1048576', path: '', pci: 0, deviceId: '', state: '', ...DISK_NEW },
        { uuid: 'd2', sizeBytes: '0', path: '/dev/vg/d2', pci: 0, deviceId: '', state: '', ...DISK_NEW },
      ],
    }, storage);
    assert.equal(plan.machine.memoryMiB, 256);
    assert.equal(plan.machine.maxMemoryMiB, 1024);
    assert.equal(plan.machine.machine, 'q35');
    assert.deepEqual(plan.hvparams, { security_model: 'none' });
    assert.deepEqual(plan.nics, [{ uuid: 'n1', mac: '52:54:00:00:00:01' }]);
    assert.deepEqual(plan.disks, [{ uuid: 'd1', path: '/srv/gnt/web1/d1.img', created: true }, { uuid: 'd2', path: '/dev/vg/d2' }]);
    assert.deepEqual(plan.newDisks, [{ path: '/srv/gnt/web1/d1.img', sizeBytes: 1048576 }]);
  });

  it('refuses bad names, relative kernels and bad sizes', () => {
    const invalid = (e: unknown): boolean => toStatus(e).code === grpc.status.INVALID_ARGUMENT;
    assert.throws(() => planStart({ ...base, name: '../x' }, storage), invalid);
    assert.throws(() => planStart({ ...base, kernel: 'vmlinuz' }, storage), invalid);
    assert.throws(() => planStart({ ...base, memoryMib: '-1' }, storage), invalid);
    assert.throws(() => planStart({ ...base, disks: [{ uuid: 'a/b', sizeBytes: '1', path: '', pci: 0, deviceId: '', state: '', ...DISK_NEW }] }, storage), invalid);
  });

  it('shows a runtime file with slots and device ids, and no guest view when stopped', () => {
    const rt = runtimeToProto({
      version: 2, instance: 'web1', kvm_cmd: [], hvparams: {},
      nics: [{ uuid: '3f2a9c1e-aaaa', mac: '52:54:00:00:00:01', pci: 5, tap: 'tap0' }, { uuid: '', mac: '52:54:00:00:00:02', pci: null }],
      block_devices: [{ uuid: 'deadbeef-1', path: '/nonexistent', pci: 6 }],
    }, undefined, { seq: 1, pci: [], nets: [], blks: [], cpusPresent: '', cpusOnline: '0', memTotalKiB: 1 });
    assert.equal(rt.running, false);
    assert.equal(rt.guest?.known, false);
    assert.deepEqual(rt.nics?.map((n) => [n.pci, n.deviceId, n.tap]), [[5, 'nic-3f2a9c1e-pci-5', 'tap0'], [-1, '', '']]);
    assert.deepEqual(rt.disks?.map((d) => [d.pci, d.deviceId, d.sizeBytes]), [[6, 'disk-deadbeef-pci-6', '0']]);
  });
});
