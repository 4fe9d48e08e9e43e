import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { buildFixedCommand } from '../../src/hypervisor/qemu-command';
import { parseRuntime, serializeRuntime, type RuntimeData } from '../../src/hypervisor/runtime-file';
import { validateRuntime } from '../../src/hypervisor/runtime-validate';
import { layoutRuntime } from '../../src/hypervisor/runtime-layout';
import { scsiDiskId } from '../../src/hypervisor/scsi-disk';
import { pmemId } from '../../src/hypervisor/pmem';

const spec = { name: 'web1', memoryMiB: 256, maxMemoryMiB: 512, vcpus: 1, maxVcpus: 2, kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' };

function withScsi(): RuntimeData {
  return {
    version: 2,
    instance: 'web1',
    kvm_cmd: buildFixedCommand(spec),
    nics: [],
    hvparams: {},
    block_devices: [{ uuid: 'd-1', path: '/srv/gnt/web1/d-1.img', pci: 5 }],
    scsi_disks: [{ uuid: 's-1', path: '/srv/gnt/web1/s-1.img', target: 0, lun: 0, created: true }],
    scsi_controller: { id: 'scsi0', pci: 6 },
    pmem_devices: [{ uuid: 'p-1', path: '/srv/gnt/web1/p-1.img', sizeMiB: 64, pci: 7, created: true }],
  };
}

describe('SCSI disks and pmem in the runtime file', () => {
  it('round-trips scsi_disks, scsi_controller and pmem_devices, and the validator accepts them', () => {
    const d = withScsi();
    const back = parseRuntime('f', serializeRuntime(d), 'web1');
    assert.deepEqual(back.scsi_disks, d.scsi_disks);
    assert.deepEqual(back.scsi_controller, d.scsi_controller);
    assert.deepEqual(back.pmem_devices, d.pmem_devices);
    validateRuntime(back);
  });
  it('a file without them loads as before (none)', () => {
    const d = withScsi();
    delete d.scsi_disks;
    delete d.scsi_controller;
    delete d.pmem_devices;
    const text = serializeRuntime(d);
    assert.doesNotMatch(text, /scsi|pmem/);
    assert.equal(parseRuntime('f', text, 'web1').scsi_disks, undefined);
  });
  it('the validator refuses addresses out of range and a foreign controller id, naming the field', () => {
    const bad = (change: (d: RuntimeData) => void, re: RegExp): void => {
      const d = withScsi();
      change(d);
      assert.throws(() => validateRuntime(d), (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message));
    };
    bad((d) => (d.scsi_disks![0].lun = 256), /scsi_disks\[0\]\.lun="?256"? is not valid: must be a whole number from 0 to 255/);
    bad((d) => (d.scsi_disks![0].target = -1), /scsi_disks\[0\]\.target/);
    bad((d) => (d.scsi_controller!.id = 'evil,drive=x'), /scsi_controller\.id/);
    bad((d) => (d.pmem_devices![0].sizeMiB = 0), /pmem_devices\[0\]\.sizeMiB/);
  });
  it('ids are clear, unique and at most 32 characters', () => {
    const uuid = 'ffffffff-0000-0000-0000-000000000000';
    assert.equal(scsiDiskId({ uuid, path: '/x', target: 255, lun: 255 }), 'scsi-ffffffff-255-255');
    assert.equal(pmemId({ uuid, path: '/x', sizeMiB: 2, pci: 31 }, 31), 'pmem-ffffffff-pci-31');
  });
});

describe('layout of SCSI disks and pmem at create and re-spec (runtime-layout.ts)', () => {
  const disks = [
    { uuid: 'a-1', path: '/srv/a.img', diskBus: 'scsi' as const },
    { uuid: 'b-1', path: '/srv/b.img' },
    { uuid: 'c-1', path: '/srv/c.img', diskBus: 'scsi' as const },
    { uuid: 'p-1', path: '/srv/p.img', diskType: 'pmem' as const, sizeMiB: 128, created: true },
  ];
  it('puts SCSI disks on one controller slot, each at its own target; pmem and virtio-blk on slots', () => {
    const d = layoutRuntime(spec, { disks });
    assert.deepEqual(d.scsi_disks?.map((s) => `${s.uuid}@${s.target}:${s.lun}`), ['a-1@0:0', 'c-1@1:0']);
    const slots = [d.block_devices[0].pci, d.pmem_devices![0].pci, d.scsi_controller!.pci];
    assert.equal(new Set(slots).size, 3);
  });
  it('a re-spec keeps the controller slot and every address, and a new SCSI disk takes a free one', () => {
    const first = layoutRuntime(spec, { disks });
    const next = layoutRuntime(spec, { disks: [disks[2], { uuid: 'n-1', path: '/srv/n.img', diskBus: 'scsi' }] }, first);
    assert.equal(next.scsi_controller!.pci, first.scsi_controller!.pci);
    assert.deepEqual(next.scsi_disks?.map((s) => `${s.uuid}@${s.target}:${s.lun}`), ['c-1@1:0', 'n-1@0:0']);
    assert.equal(layoutRuntime(spec, { disks: [disks[1]] }, first).scsi_controller, undefined, 'no SCSI disk, no controller');
  });
  it('refuses pmem beyond maxmem, naming the numbers', () => {
    assert.throws(() => layoutRuntime(spec, { disks: [{ uuid: 'p-2', path: '/srv/p2.img', diskType: 'pmem', sizeMiB: 512 }] }), /256 MiB of memory device room/);
  });
});
