import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  crossCheckPci,
  fromQueryPci,
  parseInfoPci,
  type PciFunction,
  type QueryPciBus,
} from '../../src/hypervisor/pci-info';

const fixture = (name: string): string => fs.readFileSync(path.resolve(__dirname, '../../../test/fixtures', name), 'utf8');

const fn = (
  slot: number,
  func: number,
  className: string,
  vendorDevice: string,
  qdevId = '',
): PciFunction => ({ bus: 0, slot, function: func, className, vendorDevice, qdevId });

/** What the captured `info pci` of a QEMU 10 `pc` machine shows, function by function. */
const PC_EXPECTED: PciFunction[] = [
  fn(0, 0, 'Host bridge', '8086:1237'),
  fn(1, 0, 'ISA bridge', '8086:7000'),
  fn(1, 1, 'IDE controller', '8086:7010'),
  fn(1, 3, 'Bridge', '8086:7113'),
  fn(5, 0, 'Ethernet controller', '1af4:1000', 'nic-3f2a9c1e-pci-5'),
  fn(6, 0, 'SCSI controller', '1af4:1001', 'disk-0badcafe-pci-6'),
  fn(31, 0, 'Class 0255', '1af4:1005', ''),
];

const Q35_EXPECTED: PciFunction[] = [
  fn(0, 0, 'Host bridge', '8086:29c0'),
  fn(3, 0, 'Ethernet controller', '1af4:1000', 'nic-aa-pci-3'),
  fn(31, 0, 'ISA bridge', '8086:2918'),
  fn(31, 2, 'SATA controller', '8086:2922'),
  fn(31, 3, 'SMBus', '8086:2930'),
];

describe('pci-info', () => {
  describe('parseInfoPci', () => {
    it('reads every function of the QEMU 10 pc fixture', () => {
      const parsed = parseInfoPci(fixture('info-pci-qemu10-pc.txt'));
      assert.deepEqual(parsed, PC_EXPECTED);
    });

    it('gives slot 1 its three functions 0, 1 and 3', () => {
      const parsed = parseInfoPci(fixture('info-pci-qemu10-pc.txt'));
      assert.deepEqual(
        parsed.filter((f) => f.slot === 1).map((f) => f.function),
        [0, 1, 3],
      );
    });

    it('takes the class and vendor:device line, not the "PCI subsystem" line', () => {
      const parsed = parseInfoPci(fixture('info-pci-qemu10-pc.txt'));
      const nic = parsed.find((f) => f.slot === 5);
      assert.equal(nic?.className, 'Ethernet controller');
      assert.equal(nic?.vendorDevice, '1af4:1000'); // subsystem is 1af4:0001
      const balloon = parsed.find((f) => f.slot === 31);
      assert.equal(balloon?.className, 'Class 0255');
      assert.equal(balloon?.vendorDevice, '1af4:1005');
      assert.equal(balloon?.qdevId, '');
    });

    it('reads every function of the QEMU 10 q35 fixture', () => {
      assert.deepEqual(parseInfoPci(fixture('info-pci-qemu10-q35.txt')), Q35_EXPECTED);
    });

    it('returns an empty list for empty or blank text', () => {
      assert.deepEqual(parseInfoPci(''), []);
      assert.deepEqual(parseInfoPci('\n\n   \n'), []);
    });

    it('reads text with CRLF line endings the same as with LF', () => {
      const text = fixture('info-pci-qemu10-pc.txt').replace(/\r?\n/g, '\r\n');
      assert.ok(text.includes('\r\n'));
      assert.deepEqual(parseInfoPci(text), PC_EXPECTED);
    });

    it('ignores garbage lines before, between and after the blocks', () => {
      const lines = fixture('info-pci-qemu10-pc.txt').split('\n');
      const noisy = [
        'QEMU 10.0.0 monitor - type \'help\' for more information',
        '(qemu) info pci',
        ...lines.slice(0, 4),
        'random: crng init done',
        '%%%% garbage %%%%',
        ...lines.slice(4),
        'Bus 0, device x, function y:',
        '(qemu) ',
      ].join('\n');
      assert.deepEqual(parseInfoPci(noisy), PC_EXPECTED);
    });

    it('does not let a second class-like line overwrite the first', () => {
      const text = [
        '  Bus  0, device   7, function 0:',
        '    Ethernet controller: PCI device 1AF4:1041',
        '    Something else: PCI device 8086:0000',
        '      id "nic-x-pci-7"',
      ].join('\n');
      assert.deepEqual(parseInfoPci(text), [fn(7, 0, 'Ethernet controller', '1af4:1041', 'nic-x-pci-7')]);
    });

    it('reads functions behind a bridge with their bus number', () => {
      const text = [
        '  Bus  1, device   2, function 0:',
        '    SCSI controller: PCI device 1af4:1001',
        '      id "disk-1-pci-2"',
      ].join('\n');
      assert.deepEqual(parseInfoPci(text), [
        { bus: 1, slot: 2, function: 0, className: 'SCSI controller', vendorDevice: '1af4:1001', qdevId: 'disk-1-pci-2' },
      ]);
    });
  });

  describe('fromQueryPci', () => {
    const pcQuery = (): QueryPciBus[] => JSON.parse(fixture('query-pci-qemu10-pc.json')) as QueryPciBus[];

    it('flattens the pc query-pci fixture to the addresses, vendors and ids of info pci', () => {
      const flat = fromQueryPci(pcQuery());
      assert.deepEqual(
        flat.map((f) => [f.bus, f.slot, f.function, f.vendorDevice, f.qdevId]),
        PC_EXPECTED.map((f) => [f.bus, f.slot, f.function, f.vendorDevice, f.qdevId]),
      );
    });

    it('uses the class description when query-pci has one', () => {
      const flat = fromQueryPci(pcQuery());
      assert.deepEqual(
        flat.filter((f) => f.slot !== 31).map((f) => f.className),
        ['Host bridge', 'ISA bridge', 'IDE controller', 'Bridge', 'Ethernet controller', 'SCSI controller'],
      );
    });

    it('names a class without description as info pci does ("Class 0255" for class 255)', () => {
      // QEMU's HMP prints "Class %04" PRId64, i.e. the class number in decimal:
      // the fixture shows class 255 (0x00ff, the virtio balloon) as "Class 0255".
      const flat = fromQueryPci(pcQuery());
      assert.equal(flat.find((f) => f.slot === 31)?.className, 'Class 0255');
    });

    it('gives exactly what parseInfoPci gives for the pc fixture pair', () => {
      assert.deepEqual(fromQueryPci(pcQuery()), parseInfoPci(fixture('info-pci-qemu10-pc.txt')));
    });

    it('gives exactly what parseInfoPci gives for the q35 fixture pair', () => {
      const q35 = JSON.parse(fixture('query-pci-qemu10-q35.json')) as QueryPciBus[];
      assert.deepEqual(fromQueryPci(q35), Q35_EXPECTED);
    });

    it('walks into the devices behind a PCI bridge', () => {
      const buses: QueryPciBus[] = [
        {
          bus: 0,
          devices: [
            {
              bus: 0, slot: 4, function: 0, qdev_id: 'br0',
              class_info: { class: 1540, desc: 'PCI bridge' },
              id: { vendor: 0x1b36, device: 0x0001 },
              pci_bridge: {
                devices: [
                  {
                    bus: 1, slot: 0, function: 0, qdev_id: 'disk-x-pci-0',
                    class_info: { class: 256, desc: 'SCSI controller' },
                    id: { vendor: 0x1af4, device: 0x1001 },
                  },
                ],
              },
            },
          ],
        },
      ];
      assert.deepEqual(fromQueryPci(buses), [
        { bus: 0, slot: 4, function: 0, className: 'PCI bridge', vendorDevice: '1b36:0001', qdevId: 'br0' },
        { bus: 1, slot: 0, function: 0, className: 'SCSI controller', vendorDevice: '1af4:1001', qdevId: 'disk-x-pci-0' },
      ]);
    });

    it('returns an empty list for no buses', () => {
      assert.deepEqual(fromQueryPci([]), []);
    });
  });

  describe('crossCheckPci', () => {
    const info = (): PciFunction[] => parseInfoPci(fixture('info-pci-qemu10-pc.txt'));
    const query = (): PciFunction[] => fromQueryPci(JSON.parse(fixture('query-pci-qemu10-pc.json')) as QueryPciBus[]);

    it('finds no difference between the pc fixture pair', () => {
      assert.deepEqual(crossCheckPci(info(), query()), []);
    });

    it('finds no difference between the q35 fixture pair', () => {
      const q = fromQueryPci(JSON.parse(fixture('query-pci-qemu10-q35.json')) as QueryPciBus[]);
      assert.deepEqual(crossCheckPci(parseInfoPci(fixture('info-pci-qemu10-q35.txt')), q), []);
    });

    it('reports a function missing from query-pci', () => {
      const q = query().filter((f) => !(f.slot === 6 && f.function === 0));
      assert.deepEqual(crossCheckPci(info(), q), ['0:6.0 (1af4:1001) is in info pci but not in query-pci']);
    });

    it('reports a function missing from info pci', () => {
      const i = info().filter((f) => !(f.slot === 1 && f.function === 3));
      assert.deepEqual(crossCheckPci(i, query()), ['0:1.3 (8086:7113) is in query-pci but not in info pci']);
    });

    it('reports a different qdev id', () => {
      const q = query().map((f) => (f.slot === 5 ? { ...f, qdevId: 'nic-other-pci-5' } : f));
      assert.deepEqual(crossCheckPci(info(), q), ['0:5.0: id "nic-3f2a9c1e-pci-5" vs "nic-other-pci-5"']);
    });

    it('reports a different vendor:device', () => {
      const q = query().map((f) => (f.slot === 31 ? { ...f, vendorDevice: '1af4:1045' } : f));
      assert.deepEqual(crossCheckPci(info(), q), ['0:31.0: vendor:device 1af4:1005 vs 1af4:1045']);
    });

    it('reports both a vendor and an id difference on the same function', () => {
      const q = query().map((f) => (f.slot === 5 ? { ...f, vendorDevice: '1af4:1041', qdevId: '' } : f));
      assert.deepEqual(crossCheckPci(info(), q), [
        '0:5.0: vendor:device 1af4:1000 vs 1af4:1041',
        '0:5.0: id "nic-3f2a9c1e-pci-5" vs ""',
      ]);
    });

    it('treats the same slot on another bus as a different function', () => {
      const q = query().map((f) => (f.slot === 6 ? { ...f, bus: 1 } : f));
      assert.deepEqual(crossCheckPci(info(), q), [
        '0:6.0 (1af4:1001) is in info pci but not in query-pci',
        '1:6.0 (1af4:1001) is in query-pci but not in info pci',
      ]);
    });
  });
});
