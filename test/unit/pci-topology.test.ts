import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkHvparams } from '../../src/common/hvparams';
import { deviceId, parseDeviceId } from '../../src/hypervisor/device-id';
import { InvalidArgumentError, NoFreePciSlotError, PciSlotTakenError } from '../../src/hypervisor/errors';
import { bridgeBusIds, busIdOf, crossCheckPci, fromQueryPci, parseInfoPci, type QueryPciBus } from '../../src/hypervisor/pci-info';
import { PciTreeMap } from '../../src/hypervisor/pci-slots';
import { defaultRootPorts, pciTopology, placementProblem, withTopologyDefaults } from '../../src/hypervisor/pci-topology';
import { pciPlacement, pciPlacementArg } from '../../src/hypervisor/qdev';
import { layoutRuntime } from '../../src/hypervisor/runtime-layout';
import { validateRuntime } from '../../src/hypervisor/runtime-validate';
import { formatDeviceTree } from '../../src/master/cli/device-tree';
import { compareDevices, inventoryFrom, type RawInventory } from '../../src/hypervisor/inventory';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';

const fixture = (name: string): string => fs.readFileSync(path.resolve(__dirname, '../../../test/fixtures', name), 'utf8');
const pc = (bridges?: number): { kvm_cmd: string[]; hvparams: Record<string, number> } => ({ kvm_cmd: ['-machine', 'pc'], hvparams: bridges === undefined ? {} : { pci_bridges: bridges } });
const q35 = (ports?: number): { kvm_cmd: string[]; hvparams: Record<string, number> } => ({ kvm_cmd: ['-machine', 'q35'], hvparams: ports === undefined ? {} : { pcie_root_ports: ports } });
const UUID = '3f2a9c1e-0000-4000-8000-000000000001';

describe('pci-topology', () => {
  it('pc: N pci-bridges on pci.0 slots 0x1f down, fixed ids and chassis numbers, their slots reserved', () => {
    const t = pciTopology(pc(2));
    assert.equal(t.machine, 'pc');
    assert.deepEqual(t.buses.map((b) => b.name), ['pci.0', 'pcib1', 'pcib2']);
    assert.deepEqual(t.args, [
      '-device', 'pci-bridge,id=pcib1,bus=pci.0,addr=0x1f,chassis_nr=1,io-reserve=4K,mem-reserve=16M,pref64-reserve=16M',
      '-device', 'pci-bridge,id=pcib2,bus=pci.0,addr=0x1e,chassis_nr=2,io-reserve=4K,mem-reserve=16M,pref64-reserve=16M',
    ]);
    assert.deepEqual(t.buses[0].slots, Array.from({ length: 26 }, (_, i) => i + 4));
    assert.equal(t.buses[1].slots.length, 32, 'slot 0 of a bridge takes a device too (checked on QEMU 10 with ACPI hotplug)');
    assert.equal(t.reserved.get(31), 'PCI bridge pcib1');
  });

  it('pc from an old runtime file (no pci_bridges): no controller, the layout it had', () => {
    const t = pciTopology(pc());
    assert.deepEqual(t.args, []);
    assert.deepEqual(t.buses.map((b) => b.name), ['pci.0']);
    assert.equal(t.buses[0].slots.length, 28);
  });

  it('q35: root ports packed 8 to a slot as multifunction devices of pcie.0, unique chassis, no I/O window', () => {
    const t = pciTopology(q35(9));
    assert.deepEqual(t.buses.map((b) => b.name), ['pcie.0', ...Array.from({ length: 9 }, (_, i) => `rp${i + 1}`)]);
    assert.equal(t.buses[0].hotplug, false, 'pcie.0 takes fixed devices only');
    assert.deepEqual(t.buses[1].slots, [0]);
    assert.equal(t.args[1], 'pcie-root-port,id=rp1,bus=pcie.0,addr=0x1.0x0,multifunction=on,chassis=1,io-reserve=0');
    assert.equal(t.args[3], 'pcie-root-port,id=rp2,bus=pcie.0,addr=0x1.0x1,chassis=2,io-reserve=0');
    assert.equal(t.args[17], 'pcie-root-port,id=rp9,bus=pcie.0,addr=0x2.0x0,multifunction=on,chassis=9,io-reserve=0');
    assert.ok(!t.buses[0].slots.includes(0) && !t.buses[0].slots.includes(0x1f) && !t.buses[0].slots.includes(1) && !t.buses[0].slots.includes(2));
  });

  it('refuses bridges on q35, root ports on pc, and counts out of range, naming the key', () => {
    assert.throws(() => pciTopology({ kvm_cmd: ['-machine', 'pc-q35-10.0'], hvparams: { pci_bridges: 1 } }), /pci_bridges is for pc machines/);
    assert.throws(() => pciTopology({ kvm_cmd: ['-machine', 'pc-i440fx-9.2'], hvparams: { pcie_root_ports: 1 } }), /pcie_root_ports is for q35 machines/);
    assert.throws(() => pciTopology(pc(9)), /pci_bridges=9 is not a whole number from 0 to 8/);
    assert.throws(() => checkHvparams({ machine: 'q35', pci_bridges: '2' }, (m) => new Error(m)), /pci_bridges is for pc machines/);
    assert.throws(() => checkHvparams({ pcie_root_ports: '65' }, (m) => new Error(m)), /pcie_root_ports="65" is not valid: it must be a whole number from 0 to 64/);
    checkHvparams({ machine: 'q35', pcie_root_ports: '8' }, (m) => new Error(m));
  });

  it('default root ports follow KubeVirt: 3 free up to 2 GiB, else up to 32 in all', () => {
    assert.equal(defaultRootPorts(2, 1024), 5);
    assert.equal(defaultRootPorts(2, 2048), 5);
    assert.equal(defaultRootPorts(5, 4096), 32);
    assert.equal(defaultRootPorts(40, 4096), 43);
    assert.deepEqual(withTopologyDefaults({}, 'pc', 3, 512), { pci_bridges: 2 });
    assert.deepEqual(withTopologyDefaults({ pci_bridges: 0 }, 'pc', 3, 512), { pci_bridges: 0 });
    assert.deepEqual(withTopologyDefaults({}, 'q35', 1, 512), { pcie_root_ports: 4 });
  });

  it('placementProblem names a missing bus and a slot the bus lacks', () => {
    const t = pciTopology(q35(2));
    assert.match(placementProblem(t, 'pcib1', 0) ?? '', /no PCI bus "pcib1" in this instance's tree \(pcie.0, rp1, rp2\)/);
    assert.match(placementProblem(t, 'rp1', 3) ?? '', /slot 3 of rp1 is not one devices may take \(a pcie-root-port has slot 0\)/);
    assert.equal(placementProblem(t, 'rp2', 0), undefined);
    assert.match(placementProblem(pciTopology(pc(1)), undefined, 31) ?? '', /reserved: PCI bridge pcib1/);
  });
});

describe('PCI placement props and device ids', () => {
  it('root-bus devices get only addr; others bus and addr', () => {
    assert.deepEqual(pciPlacement({ pci: 5 }), { addr: '0x5' });
    assert.deepEqual(pciPlacement({ pci: 0, bus: 'rp3' }), { bus: 'rp3', addr: '0x0' });
    assert.equal(pciPlacementArg({ pci: 17, bus: 'pcib2' }), 'bus=pcib2,addr=0x11');
  });

  it('keeps the Ganeti form on the root bus and names the bridge or port otherwise; parses both back, at most 32 characters', () => {
    assert.equal(deviceId('nic', UUID, 5), 'nic-3f2a9c1e-pci-5');
    assert.equal(deviceId('disk', UUID, 31, 'pcib8'), 'disk-3f2a9c1e-pcib8-31');
    assert.equal(deviceId('disk', UUID, 0, 'rp64'), 'disk-3f2a9c1e-rp64-0');
    assert.ok(deviceId('disk', UUID, 31, 'pcib8').length <= 32);
    assert.deepEqual(parseDeviceId('nic-3f2a9c1e-pci-5'), { kind: 'nic', uuidPart: '3f2a9c1e', slot: 5 });
    assert.deepEqual(parseDeviceId('disk-3f2a9c1e-pcib2-0'), { kind: 'disk', uuidPart: '3f2a9c1e', slot: 0, bus: 'pcib2' });
    assert.deepEqual(parseDeviceId('nic-3f2a9c1e-rp12-0'), { kind: 'nic', uuidPart: '3f2a9c1e', slot: 0, bus: 'rp12' });
    assert.equal(parseDeviceId('nic-3f2a9c1e-pci.0-5'), undefined);
    assert.equal(parseDeviceId('nic-3f2a9c1e-rp0-0'), undefined);
    assert.throws(() => deviceId('nic', UUID, 1, 'pci.1'), InvalidArgumentError);
  });
});

describe('PciTreeMap', () => {
  it('fills bus 0, then the bridges in order, and names every bus when all are full', () => {
    const map = new PciTreeMap('web1', pciTopology(pc(1)));
    const got: string[] = [];
    for (let i = 0; i < 26 + 1 + 32; i++) {
      const p = map.firstFree();
      got.push(`${p.bus ?? ''}:${p.slot}`);
      map.addRecorded(p, `dev ${i}`);
    }
    assert.equal(got[0], ':4');
    assert.equal(got[26], ':30', 'slot 30 is free with one bridge');
    assert.equal(got[27], 'pcib1:0');
    assert.equal(got[58], 'pcib1:31');
    assert.throws(() => map.firstFree(), (e: unknown) => {
      assert.ok(e instanceof NoFreePciSlotError);
      assert.equal(e.message, 'no free PCI slot on instance web1 (59 of 59 used: on 2 buses: pci.0 27 of 27, pcib1 32 of 32); remove a device first');
      return true;
    });
  });

  it('claim refuses a taken place naming its holder and bus, and a bus the tree lacks', () => {
    const map = new PciTreeMap('web1', pciTopology(pc(2))).addRecorded({ bus: 'pcib2', slot: 7 }, 'nic-a-pcib2-7');
    assert.throws(() => map.claim({ bus: 'pcib2', slot: 7 }), (e: unknown) => e instanceof PciSlotTakenError && /taken by nic-a-pcib2-7 \(on pcib2\)/.test(e.message));
    assert.throws(() => map.claim({ bus: 'pcib3', slot: 1 }), /PCI bus "pcib3" is not in the tree of instance web1 \(pci.0, pcib1, pcib2\)/);
    assert.throws(() => map.claim({ slot: 30 }), /PCI slot 30 of instance web1 is taken by PCI bridge pcib2/);
    assert.deepEqual(map.claim({ bus: 'pcib1', slot: 0 }), { bus: 'pcib1', slot: 0 });
  });

  it('counts live functions behind a bridge as used', () => {
    const map = new PciTreeMap('web1', pciTopology(pc(1)));
    map.addLive('pcib1', [{ bus: 2, slot: 0, function: 0, className: 'Ethernet controller', vendorDevice: '1af4:1000', qdevId: 'x' }]);
    assert.equal(map.holderOf({ bus: 'pcib1', slot: 0 }), 'device x');
  });
});

describe('info pci and query-pci with bridges and root ports (captured from QEMU 10)', () => {
  it('pc with two bridges: bus numbers map to bridge ids, both views agree', () => {
    const query = JSON.parse(fixture('query-pci-qemu10-pc-bridges.json')) as QueryPciBus[];
    const ids = bridgeBusIds(query);
    // SeaBIOS numbers the bridges in slot order: pcib2 (0x1e) gets bus 1, pcib1 (0x1f) bus 2.
    assert.deepEqual([...ids].sort(), [[1, 'pcib2'], [2, 'pcib1']]);
    const info = parseInfoPci(fixture('info-pci-qemu10-pc-bridges.txt'));
    const structured = fromQueryPci(query);
    assert.deepEqual(crossCheckPci(info, structured), []);
    const behind = structured.filter((f) => f.qdevId.startsWith('nic-') && f.bus !== 0).map((f) => `${busIdOf(f, ids).id}:${f.slot} ${f.qdevId}`);
    assert.deepEqual(behind.sort(), ['pcib1:0 nic-bb-pcib1-0', 'pcib2:5 nic-cc-pcib2-5']);
  });

  it('q35 with root ports: each port a bus, the device in slot 0 of its port', () => {
    const query = JSON.parse(fixture('query-pci-qemu10-q35-root-ports.json')) as QueryPciBus[];
    const ids = bridgeBusIds(query);
    assert.deepEqual([...ids].sort(), [[1, 'rp1'], [2, 'rp2'], [3, 'rp3']]);
    const info = parseInfoPci(fixture('info-pci-qemu10-q35-root-ports.txt'));
    assert.deepEqual(crossCheckPci(info, fromQueryPci(query)), []);
    const nic = fromQueryPci(query).find((f) => f.qdevId === 'nic-aa-rp2-0');
    assert.ok(nic);
    assert.deepEqual([busIdOf(nic, ids).id, nic.slot], ['rp2', 0]);
  });
});

describe('runtime files with buses', () => {
  const base = (): RuntimeData =>
    layoutRuntime(
      { name: 'web1', memoryMiB: 256, vcpus: 1, kernel: '/boot/vmlinuz', machine: 'q35' },
      { nics: [{ uuid: UUID, mac: '52:54:00:00:00:01' }], disks: [] },
    );

  it('a q35 layout puts boot devices into root ports and records the port count', () => {
    const rt = base();
    assert.equal(rt.hvparams.pcie_root_ports, 4);
    assert.deepEqual([rt.nics[0].bus, rt.nics[0].pci], ['rp1', 0]);
    validateRuntime(rt);
  });

  it('refuses a carried bus the tree lacks, a slot its bus lacks, and two records at one place', () => {
    const rt = base();
    rt.nics[0].bus = 'rp9';
    assert.throws(() => validateRuntime(rt), /nics\[0\]\.bus="rp9" is not valid: there is no PCI bus "rp9" in this instance's tree/);
    rt.nics[0].bus = 'rp1';
    rt.nics[0].pci = 4;
    assert.throws(() => validateRuntime(rt), /slot 4 of rp1 is not one devices may take/);
    rt.nics[0].pci = 0;
    rt.nics.push({ uuid: '3f2a9c1e-0000-4000-8000-000000000002', mac: '52:54:00:00:00:02', pci: 0, bus: 'rp1' });
    assert.throws(() => validateRuntime(rt), /nics\[0\] is at the same place \(rp1 slot 0\)/);
    rt.nics[1].bus = 'pci.0';
    assert.throws(() => validateRuntime(rt), /nics\[1\]\.bus="pci\.0" is not valid: a bridge or root port of this software/);
  });

  it('an old runtime file (no bus, no bridges) stays valid', () => {
    const rt = layoutRuntime({ name: 'web1', memoryMiB: 256, vcpus: 1, kernel: '/boot/vmlinuz' }, { nics: [{ uuid: UUID, mac: '52:54:00:00:00:01' }] });
    delete rt.hvparams.pci_bridges;
    assert.equal(rt.nics[0].bus, undefined);
    validateRuntime(rt);
  });
});

describe('gnt-instance info: the device tree', () => {
  it('lists every bus (root bus, bridges, root ports, SCSI controllers) with its devices by slot or LUN', () => {
    const nic = (pci: number, pciBus: string, deviceId: string) => ({ uuid: `u-${deviceId}`, mac: '', link: '', pci, deviceId, tap: '', state: '', pciBus, linkState: '', rateMbit: 0, queues: 0, model: '' });
    const disk = (pci: number, pciBus: string, deviceId: string, extra: { scsiAddress?: string; diskType?: string } = {}) => ({
      uuid: `u-${deviceId}`, sizeBytes: '0', path: '', pci, deviceId, state: '', pciBus, diskBus: '', diskType: extra.diskType ?? '', scsiAddress: extra.scsiAddress ?? '', template: '', adopted: false, rbdPool: '', rbdImage: '',
    });
    const out = formatDeviceTree(
      [nic(5, 'pci.0', 'nic-aaaa-pci-5'), nic(0, 'pcib1', 'nic-bbbb-pcib1-0'), nic(4, 'pci.0', 'nic-cccc-pci-4')],
      [disk(0, 'rp2', 'disk-dddd-rp2-0', { diskType: 'pmem' }), disk(-1, '', 'scsi-eeee', { scsiAddress: 'scsi0:0:5' }), disk(31, 'pcib1', 'disk-ffff-pcib1-31')],
    );
    assert.equal(
      out,
      [
        'Device tree (node runtime):',
        '  Bus    Bus kind         Place           Device id           Kind',
        '  pci.0  root bus         slot 4          nic-cccc-pci-4      NIC',
        '                          slot 5          nic-aaaa-pci-5      NIC',
        '  pcib1  PCI bridge       slot 0          nic-bbbb-pcib1-0    NIC',
        '                          slot 31         disk-ffff-pcib1-31  disk',
        '  rp2    PCIe root port   slot 0          disk-dddd-rp2-0     disk (pmem)',
        '  scsi0  SCSI controller  target 0 LUN 5  scsi-eeee           disk (SCSI)',
        '',
      ].join('\n'),
    );
    assert.equal(formatDeviceTree([], []), '');
  });
});

describe('verify: a device QEMU has at another bus or slot than recorded', () => {
  interface Snapshot extends RawInventory {
    runtime: RuntimeData;
  }
  const load = (): { rt: RuntimeData; q: ReturnType<typeof inventoryFrom> } => {
    const s = (JSON.parse(fixture('verify-qemu10-pc.json')) as { settled: Snapshot }).settled;
    return { rt: s.runtime, q: inventoryFrom(s, new Map()) };
  };

  it('is a wrong-slot finding naming both places; the bridges themselves are no finding', () => {
    const { rt, q } = load();
    const disk = rt.block_devices.find((d) => d.pci === 4);
    assert.ok(disk);
    const fn = q.pci.find((p) => p.qdevId === 'disk-ccc358cd-pci-4');
    assert.ok(fn);
    fn.bus = 2;
    fn.busId = 'pcib1';
    const found = compareDevices(rt, q).filter((f) => f.code === 'wrong-slot');
    assert.equal(found.length, 1);
    assert.match(found[0].problem, /QEMU has it on pcib1 \(bus 2\) slot 4, the runtime file says the root bus slot 4/);
    // A record on a bridge that QEMU has on the root bus.
    fn.bus = 0;
    delete fn.busId;
    disk.bus = 'pcib1';
    const id = 'disk-ccc358cd-pcib1-4';
    fn.qdevId = id;
    q.peripheral.set(id, q.peripheral.get('disk-ccc358cd-pci-4') as string);
    q.peripheral.delete('disk-ccc358cd-pci-4');
    for (const n of q.blockNodes) if (n.nodeName === 'disk-ccc358cd-pci-4') n.nodeName = id;
    assert.match(compareDevices(rt, q).find((f) => f.code === 'wrong-slot')?.problem ?? '', /QEMU has it on the root bus slot 4, the runtime file says pcib1 slot 4/);
    // The tree's controllers are QEMU's part of the layout, not devices without a record.
    rt.hvparams.pci_bridges = 1;
    q.peripheral.set('pcib1', 'pci-bridge');
    assert.equal(compareDevices(rt, q).filter((f) => f.code === 'device-without-record').length, 0);
  });
});

describe('a q35 instance without root ports (a runtime file from before them)', () => {
  it('refuses a hot-add, saying why and what to set', () => {
    assert.throws(() => new PciTreeMap('old35', pciTopology(q35(0))).firstFree(), {
      name: 'NoFreePciSlotError',
      message: 'no free PCI slot on instance old35 (0 of 0 used: its root bus pcie.0 takes no hotplug and it has no PCIe root port (hvparam pcie_root_ports, at the next start)); remove a device first',
    });
  });
});
