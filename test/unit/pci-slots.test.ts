import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, NoFreePciSlotError, PciSlotTakenError } from '../../src/hypervisor/errors';
import { parseInfoPci, type PciFunction } from '../../src/hypervisor/pci-info';
import { DEFAULT_RESERVED_SLOTS, PCI_SLOTS, PciSlotMap } from '../../src/hypervisor/pci-slots';

const pcFunctions = (): PciFunction[] =>
  parseInfoPci(fs.readFileSync(path.resolve(__dirname, '../../../test/fixtures/info-pci-qemu10-pc.txt'), 'utf8'));

const live = (slot: number, qdevId = '', bus = 0, func = 0): PciFunction => ({
  bus,
  slot,
  function: func,
  className: 'Ethernet controller',
  vendorDevice: '1af4:1000',
  qdevId,
});

describe('pci-slots', () => {
  it('has 32 slots and reserves 0 to 3 by default', () => {
    assert.equal(PCI_SLOTS, 32);
    assert.deepEqual([...DEFAULT_RESERVED_SLOTS], [0, 1, 2, 3]);
  });

  describe('firstFree', () => {
    it('is 4 with only the default reservations', () => {
      const map = new PciSlotMap('web-1');
      assert.equal(map.firstFree(), 4);
      assert.equal(map.used, 4);
    });

    it('is 4 with the live functions of the pc fixture (slots 0, 1, 5, 6, 31) on top of the reservations', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions());
      assert.equal(map.firstFree(), 4);
      // 0-3 reserved plus 5, 6 and 31 live; slot 1's three functions count once
      assert.equal(map.used, 7);
    });

    it('skips a recorded slot and the live slots after it', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions()).addRecorded(4, 'nic 1234');
      assert.equal(map.firstFree(), 7);
    });

    it('is 6 with slot 4 recorded and slot 5 live', () => {
      const map = new PciSlotMap('web-1').addRecorded(4, 'disk abc').addLive([live(5, 'nic-x-pci-5')]);
      assert.equal(map.firstFree(), 6);
    });

    it('finds a gap below used slots', () => {
      const map = new PciSlotMap('web-1').addLive([live(5), live(7)]).addRecorded(4, 'nic a');
      assert.equal(map.firstFree(), 6);
    });

    it('honours custom reservations, including none', () => {
      assert.equal(new PciSlotMap('web-1', []).firstFree(), 0);
      assert.equal(new PciSlotMap('web-1', [0, 1, 2]).firstFree(), 3);
      assert.equal(new PciSlotMap('web-1', [0, 2]).firstFree(), 1);
    });

    it('returns the last slot, 31, when only it is free', () => {
      const map = new PciSlotMap('web-1');
      for (let s = 4; s < 31; s++) map.addRecorded(s, `nic ${s}`);
      assert.equal(map.firstFree(), 31);
    });

    it('throws NoFreePciSlotError with the exact message when all 32 slots are used', () => {
      const map = new PciSlotMap('X');
      for (let s = 4; s < 32; s++) map.addRecorded(s, `nic ${s}`);
      assert.equal(map.used, 32);
      assert.throws(
        () => map.firstFree(),
        (err: unknown) => {
          assert.ok(err instanceof NoFreePciSlotError);
          assert.equal(err.code, 'RESOURCE_EXHAUSTED');
          assert.equal(err.message, 'no free PCI slot on instance X (32 of 32 used); remove a device first');
          return true;
        },
      );
    });

    it('counts a bus full of live devices as full too', () => {
      const map = new PciSlotMap('X', []).addLive(Array.from({ length: 32 }, (_, s) => live(s)));
      assert.throws(() => map.firstFree(), {
        name: 'NoFreePciSlotError',
        message: 'no free PCI slot on instance X (32 of 32 used); remove a device first',
      });
    });
  });

  describe('addLive', () => {
    it('ignores functions on a bus other than 0', () => {
      const map = new PciSlotMap('web-1').addLive([live(4, 'disk-a-pci-4', 1), live(5, '', 2)]);
      assert.equal(map.firstFree(), 4);
      assert.equal(map.holderOf(4), undefined);
      assert.equal(map.holderOf(5), undefined);
      assert.equal(map.used, 4);
    });

    it('names a live device by its qdev id, or by class and vendor:device without one', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions());
      assert.equal(map.holderOf(5), 'device nic-3f2a9c1e-pci-5');
      assert.equal(map.holderOf(6), 'device disk-0badcafe-pci-6');
      assert.equal(map.holderOf(31), 'a Class 0255 (1af4:1005)');
    });

    it('keeps the reservation as holder of a reserved slot QEMU also shows', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions());
      assert.equal(map.holderOf(0), 'the machine (reserved)');
      assert.equal(map.holderOf(1), 'the machine (reserved)');
    });

    it('keeps the first holder when a slot is added twice', () => {
      const map = new PciSlotMap('web-1').addLive([live(9, 'nic-a-pci-9')]).addRecorded(9, 'nic b');
      assert.equal(map.holderOf(9), 'device nic-a-pci-9');
    });
  });

  describe('claim', () => {
    it('returns a free slot', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions());
      assert.equal(map.claim(4), 4);
      assert.equal(map.claim(30), 30);
      assert.equal(map.claim(7), 7);
    });

    it('does not itself mark the slot as used', () => {
      const map = new PciSlotMap('web-1');
      map.claim(4);
      assert.equal(map.firstFree(), 4);
    });

    it('refuses a slot held by a live device, naming its qdev id', () => {
      const map = new PciSlotMap('web-1').addLive(pcFunctions());
      assert.throws(
        () => map.claim(5),
        (err: unknown) => {
          assert.ok(err instanceof PciSlotTakenError);
          assert.equal(err.code, 'FAILED_PRECONDITION');
          assert.equal(err.message, 'PCI slot 5 of instance web-1 is taken by device nic-3f2a9c1e-pci-5');
          return true;
        },
      );
    });

    it('refuses a reserved slot, naming the machine', () => {
      const map = new PciSlotMap('web-1');
      assert.throws(() => map.claim(2), {
        name: 'PciSlotTakenError',
        message: 'PCI slot 2 of instance web-1 is taken by the machine (reserved)',
      });
    });

    it('refuses a slot the runtime file records, naming the recorded holder', () => {
      const map = new PciSlotMap('web-1').addRecorded(8, 'disk 0badcafe');
      assert.throws(() => map.claim(8), {
        name: 'PciSlotTakenError',
        message: 'PCI slot 8 of instance web-1 is taken by disk 0badcafe',
      });
    });

    it('refuses a recorded slot even when the holder description is empty', () => {
      // Devices from old runtime files have uuid "" and are recorded with it.
      const map = new PciSlotMap('web-1').addRecorded(8, '');
      assert.equal(map.firstFree(), 4);
      assert.equal(map.used, 5);
      assert.throws(() => map.claim(8), PciSlotTakenError);
    });

    for (const bad of [32, -1, 1.5, Number.NaN]) {
      it(`refuses out-of-range slot ${bad} with InvalidArgumentError`, () => {
        const map = new PciSlotMap('web-1', []);
        assert.throws(
          () => map.claim(bad),
          (err: unknown) => {
            assert.ok(err instanceof InvalidArgumentError);
            assert.equal(err.code, 'INVALID_ARGUMENT');
            assert.equal(err.message, `PCI slot ${bad} is out of range (0 to 31)`);
            return true;
          },
        );
      });
    }

    it('accepts the bounds 0 and 31 when free', () => {
      const map = new PciSlotMap('web-1', []);
      assert.equal(map.claim(0), 0);
      assert.equal(map.claim(31), 31);
    });
  });
});
