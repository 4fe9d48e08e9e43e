import { strict as assert } from 'node:assert';
import type { QueryPciBus } from '../../src/hypervisor/pci-info';
import type { Monitor } from '../../src/hypervisor/qmp-client';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { SlotOwner } from '../../src/hypervisor/slot-owner';

/** A QMP device at bus 0 `slot` with qdev id `id` (virtio vendor). */
const dev = (slot: number, id: string): QueryPciBus['devices'][number] => ({
  bus: 0, slot, function: 0, qdev_id: id, class_info: { class: 256, desc: 'SCSI controller' }, id: { vendor: 0x1af4, device: 0x1004 },
});

/** `info pci` text for the same devices, as QEMU 10 prints it. */
const infoPci = (devices: QueryPciBus['devices']): string =>
  devices.map((d) => `  Bus  0, device ${String(d.slot).padStart(3)}, function 0:\n    SCSI controller: PCI device 1af4:1004\n      id "${d.qdev_id}"\n`).join('');

/** A monitor that answers only what SlotOwner.refresh asks. */
function monitorWith(devices: QueryPciBus['devices']): Monitor {
  return {
    execute: async <T>(command: string): Promise<T> => {
      assert.equal(command, 'query-pci');
      return [{ bus: 0, devices }] as unknown as T;
    },
    hmp: async (line: string) => {
      assert.equal(line, 'info pci');
      return infoPci(devices);
    },
    waitForEvent: () => {
      throw new Error('not used');
    },
  };
}

const data = (): RuntimeData => ({
  version: 2, instance: 'web1', kvm_cmd: ['-name', 'web1', '-machine', 'pc', '-m', '256M', '-smp', '1,maxcpus=1', '-kernel', '/k'], hvparams: {},
  nics: [], block_devices: [{ uuid: 'aaaa1111-0000', path: '/s/d.img', pci: 5 }], scsi_controller: { id: 'scsi0', pci: 6 },
});

describe('SlotOwner', () => {
  it('reads QEMU having each recorded device (a disk, the SCSI controller) at its slot as agreement: no warning', async () => {
    const warnings: string[] = [];
    const owner = new SlotOwner('web1', (m) => warnings.push(m));
    await owner.refresh(monitorWith([dev(5, 'disk-aaaa1111-pci-5'), dev(6, 'scsi0')]), data());
    assert.deepEqual(warnings, []);
  });

  it('warns when QEMU has another device at a slot the runtime file gives away, naming both', async () => {
    const warnings: string[] = [];
    const owner = new SlotOwner('web1', (m) => warnings.push(m));
    await owner.refresh(monitorWith([dev(5, 'disk-aaaa1111-pci-5'), dev(6, 'intruder')]), data());
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /root bus slot 6: the runtime file gives it to the SCSI controller scsi0, QEMU has intruder there/);
  });

  it('keeps a slot QEMU uses for a device no record names from being chosen', async () => {
    const owner = new SlotOwner('web1', () => undefined);
    const mon = monitorWith([dev(4, 'foreign'), dev(5, 'disk-aaaa1111-pci-5'), dev(6, 'scsi0')]);
    // pc with no bridges (none in hvparams): slots 0-3 reserved, 4 foreign, 5 and 6 recorded
    assert.deepEqual(await owner.choose(mon, data(), undefined), { slot: 7 });
  });
});
