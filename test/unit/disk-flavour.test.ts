import { strict as assert } from 'node:assert';
import { diskFlavourOf } from '../../src/common/disk-flavour';
import { excerpt } from '../../src/common/excerpt';
import { parseDiskChange, parseDiskSpec } from '../../src/master/cli/parse';
import { UsageError } from '../../src/master/validate';
import { chooseScsiAddress, MAX_SCSI_DISKS, SCSI_TARGETS } from '../../src/hypervisor/scsi-luns';
import { pmemRoomProblem } from '../../src/hypervisor/pmem';
import type { ResourceState } from '../../src/hypervisor/resize';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';

const usage = (f: () => unknown, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof UsageError && re.test(e.message));

describe('disk bus and type (--disk bus=, type=)', () => {
  it('parses bus=scsi and type=pmem at add and at modify; virtio and disk are the defaults', () => {
    assert.deepEqual(parseDiskChange('add:size=1G,bus=scsi'), { action: 'ADD', index: -1, sizeBytes: 1024 ** 3, diskBus: 'scsi' });
    assert.deepEqual(parseDiskChange('add:size=64M,type=pmem'), { action: 'ADD', index: -1, sizeBytes: 64 * 1024 ** 2, diskType: 'pmem' });
    assert.deepEqual(parseDiskChange('add:size=64M,bus=virtio,type=disk'), { action: 'ADD', index: -1, sizeBytes: 64 * 1024 ** 2 });
    assert.deepEqual(parseDiskSpec('size=1G,bus=scsi', 0), { sizeBytes: 1024 ** 3, diskBus: 'scsi' });
  });
  it('refuses unknown values and bus=scsi with type=pmem, naming them', () => {
    usage(() => parseDiskChange('add:size=1G,bus=ide'), /bus="?ide"? is not known \(bus=virtio or bus=scsi\)/);
    usage(() => parseDiskChange('add:size=1G,type=cdrom'), /type="?cdrom"? is not known/);
    usage(() => parseDiskChange('add:size=1G,bus=scsi,type=pmem'), /bus=scsi and type=pmem do not go together/);
    usage(() => parseDiskSpec('size=1G,bus=nvme', 0), /bus="?nvme"? is not known/);
    usage(() => parseDiskChange('add:size=1G,lun=3'), /lun/);
  });
  it('the shared rule normalizes the defaults to ""', () => {
    assert.deepEqual(diskFlavourOf('virtio', 'disk', excerpt), { diskBus: '', diskType: '', template: '', adopt: '' });
    assert.equal(typeof diskFlavourOf('scsi', 'pmem', excerpt), 'string');
  });
});

describe('SCSI address owner (scsi-luns.ts)', () => {
  it('gives each disk a target of its own first, then LUN 1 of each, reusing freed addresses', () => {
    assert.deepEqual(chooseScsiAddress('i', []), { target: 0, lun: 0 });
    const used = Array.from({ length: SCSI_TARGETS }, (_, t) => ({ target: t, lun: 0 }));
    assert.deepEqual(chooseScsiAddress('i', used), { target: 0, lun: 1 });
    assert.deepEqual(chooseScsiAddress('i', used.filter((a) => a.target !== 7)), { target: 7, lun: 0 });
  });
  it('refuses when every address is taken', () => {
    const all: Array<{ target: number; lun: number }> = [];
    for (let lun = 0; lun < 256; lun++) for (let target = 0; target < 256; target++) all.push({ target, lun });
    assert.equal(all.length, MAX_SCSI_DISKS);
    assert.throws(() => chooseScsiAddress('inst1', all), /no free SCSI address on instance inst1 \(65536 of 65536 used\)/);
  });
});

describe('pmem room (pmem.ts)', () => {
  const r: ResourceState = { bootVcpus: 1, maxVcpus: 1, bootMemoryMiB: 256, maxMemoryMiB: 1024, memoryHotplug: 'acpi', cpus: [], dimms: [{ id: 'dimm0', sizeMiB: 512 }] };
  const data = { pmem_devices: [{ uuid: 'a', path: '/x', sizeMiB: 64, pci: 5 }] } as unknown as RuntimeData;
  it('counts DIMMs, virtio-mem and pmem together', () => {
    assert.equal(pmemRoomProblem('i', r, data, 192), undefined);
    assert.match(pmemRoomProblem('i', r, data, 194) ?? '', /768 MiB of memory device room .*DIMMs hold 512 MiB, virtio-mem 0 MiB, pmem 64 MiB, so 192 MiB are left/);
    const vmem: ResourceState = { ...r, dimms: [], memoryHotplug: 'virtio-mem', virtioMem: { id: 'vmem0', maxMiB: 768, requestedMiB: 0, pci: 6 } };
    assert.match(pmemRoomProblem('i', vmem, { pmem_devices: [] } as unknown as RuntimeData, 2) ?? '', /virtio-mem 768 MiB/);
  });
});
