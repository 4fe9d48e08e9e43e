import { strict as assert } from 'node:assert';
import { countCpuList } from '../../src/hypervisor/guest-console';
import { NoFreePciSlotError } from '../../src/hypervisor/errors';
import { nicId } from '../../src/hypervisor/nic';
import { diskId } from '../../src/hypervisor/disk';
import { bootGuest, makeDiskFile, newUuid, tempDir, type BootedGuest } from '../support/guest';
import { busNumbers, guestAddr, qemuPlaces } from '../support/pci-tree';
import * as fs from 'node:fs';

const MiB = 1024 * 1024;
const NODE = { freeMemoryMiB: 16384, cpus: 8 };
/** pciehp and ACPI under TCG, a report every 10 s: generous. */
const SEEN_MS = 120_000;

describe('q35: root ports, and NIC, disk, vCPU and memory hotplug against the real guest', function () {
  this.timeout(900_000);
  let g: BootedGuest;
  let storage: string;

  before(async () => {
    storage = tempDir('q35-disks');
    fs.chmodSync(storage, 0o755);
    const bootDisk = makeDiskFile(storage, 'boot.img', 4 * MiB);
    g = await bootGuest({
      machine: 'q35',
      storageDir: storage,
      nics: [{ uuid: newUuid(), mac: '52:54:00:35:00:01' }],
      disks: [{ uuid: newUuid(), path: bootDisk }],
    });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  it('starts with a root port per device plus 3 free (KubeVirt rule, maxmem 1 GiB), devices in ports, seen by the guest', async () => {
    const rt = g.instance.runtime;
    assert.equal(rt.hvparams.pcie_root_ports, 5);
    assert.deepEqual([rt.block_devices[0].bus, rt.block_devices[0].pci, rt.nics[0].bus, rt.nics[0].pci], ['rp1', 0, 'rp2', 0]);
    const mon = await g.instance.monitor();
    const numbers = await busNumbers(mon);
    for (let k = 1; k <= 5; k++) assert.ok(numbers.has(`rp${k}`), `rp${k} has a bus number`);
    const nicAddr = guestAddr(numbers, 'rp2', 0);
    const diskAddr = guestAddr(numbers, 'rp1', 0);
    await g.console.waitFor((s) => s.nets.some((n) => n.pci === nicAddr) && s.blks.some((b) => b.pci === diskAddr), SEEN_MS, 'boot NIC and disk in their ports');
  });

  it('hot-adds a NIC and a disk into free root ports (slot 0), the guest sees both; removes the NIC', async () => {
    const nic = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:35:00:02' });
    const disk = await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'hot.img', 8 * MiB) });
    assert.deepEqual([nic.bus, nic.pci, disk.bus, disk.pci], ['rp3', 0, 'rp4', 0]);
    assert.equal(nicId(nic, 0).endsWith('-rp3-0'), true);
    const mon = await g.instance.monitor();
    const live = await qemuPlaces(mon);
    assert.equal(live.get(nicId(nic, 0)), 'rp3:0');
    assert.equal(live.get(diskId(disk, 0)), 'rp4:0');
    const numbers = await busNumbers(mon);
    const nicAddr = guestAddr(numbers, 'rp3', 0);
    const diskAddr = guestAddr(numbers, 'rp4', 0);
    await g.console.waitFor(
      (s) => s.nets.some((n) => n.mac === '52:54:00:35:00:02' && n.pci === nicAddr) && s.blks.some((b) => b.pci === diskAddr && b.sectors === 8 * 2048),
      SEEN_MS,
      'the hot-added NIC and disk',
    );
    const removal = await g.instance.hotRemoveNic(nic.uuid);
    assert.equal(removal.pending, false);
    await g.console.waitFor((s) => !s.nets.some((n) => n.mac === '52:54:00:35:00:02'), SEEN_MS, 'the NIC gone');
    assert.equal((await qemuPlaces(mon)).has(nicId(nic, 0)), false);
  });

  it('hot-adds vCPUs and memory (ACPI) on q35, as the guest sees them', async () => {
    const base = (await g.console.waitFor(() => true, SEEN_MS, 'a state')).memTotalKiB;
    assert.equal((await g.instance.resize({ vcpus: 2 }, NODE)).vcpus, 2);
    await g.console.waitFor((s) => countCpuList(s.cpusOnline) === 2, SEEN_MS, '2 CPUs online');
    await g.instance.resize({ memoryMiB: 512 }, NODE);
    await g.console.waitFor((s) => s.memTotalKiB >= base + 256 * 1024, SEEN_MS, 'MemTotal +256 MiB');
  });

  it('refuses a device only when every root port is taken, counting all ports', async () => {
    const a = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:35:00:03' });
    assert.equal(a.bus, 'rp3', 'the freed port is used again');
    const b = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:35:00:04' });
    assert.equal(b.bus, 'rp5');
    await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:35:00:05' }), (e: unknown) => {
      assert.ok(e instanceof NoFreePciSlotError);
      assert.equal(e.message, `no free PCI slot on instance ${g.instance.name} (5 of 5 used: on 5 buses: rp1 1 of 1, rp2 1 of 1, rp3 1 of 1, rp4 1 of 1, rp5 1 of 1); remove a device first`);
      return true;
    });
  });
});

describe('q35 with virtio-mem: the device is an integrated endpoint of pcie.0', function () {
  this.timeout(600_000);
  let g: BootedGuest;
  before(async () => {
    g = await bootGuest({ machine: 'q35', hvparams: { memory_hotplug: 'virtio-mem' }, kernelArgs: 'gnt.memonline=online_movable' });
  });
  after(async () => {
    await g?.destroy();
  });

  it('sits on pcie.0 (not in a port the guest could eject) and grows MemTotal live', async () => {
    const vm = g.instance.resources?.virtioMem;
    assert.ok(vm);
    const live = await qemuPlaces(await g.instance.monitor());
    assert.equal(live.get(vm.id), `:${vm.pci}`);
    assert.ok(vm.pci !== 0 && vm.pci !== 0x1f && vm.pci !== 1, `slot ${vm.pci} is none of host bridge, ICH9 or the ports' slot`);
    const base = (await g.console.waitFor(() => true, SEEN_MS, 'a state')).memTotalKiB;
    const grown = await g.instance.resize({ memoryMiB: 512 }, NODE);
    assert.equal(grown.pluggedMiB, 256);
    await g.console.waitFor((s) => s.memTotalKiB === base + 256 * 1024, SEEN_MS, 'MemTotal +256 MiB');
  });
});
