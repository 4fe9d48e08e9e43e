import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import {
  MAX_ID_LENGTH,
  assertValidId,
  deviceId,
  idProblem,
  parseDeviceId,
  uuidPart,
} from '../../src/hypervisor/device-id';

describe('device-id', () => {
  describe('deviceId', () => {
    it('is <kind>-<first uuid part>-pci-<slot>', () => {
      assert.equal(deviceId('nic', '3f2a9c1e-1111-2222-3333-444444444444', 5), 'nic-3f2a9c1e-pci-5');
      assert.equal(deviceId('disk', '0badcafe-0000-0000-0000-000000000000', 31), 'disk-0badcafe-pci-31');
      assert.equal(deviceId('nic', 'abc', 0), 'nic-abc-pci-0');
    });

    it('rejects a uuid that starts with "-" or is empty', () => {
      for (const uuid of ['-1111-2222', '']) {
        assert.throws(
          () => deviceId('nic', uuid, 5),
          (err: unknown) => {
            assert.ok(err instanceof InvalidArgumentError);
            assert.equal(err.message, `device uuid "${uuid}" is empty or starts with "-"`);
            return true;
          },
        );
      }
    });

    it('rejects a uuid whose first part makes an id QEMU refuses', () => {
      assert.throws(() => deviceId('nic', 'ab/cd-1111', 5), InvalidArgumentError);
      assert.throws(() => deviceId('nic', 'ab cd-1111', 5), InvalidArgumentError);
    });

    it('rejects a uuid whose first part makes the id longer than 32 characters', () => {
      const long = 'a'.repeat(21); // "nic-" + 21 + "-pci-10" = 32: fine; one more is too long
      assert.equal(deviceId('nic', long, 10).length, 32);
      assert.throws(() => deviceId('nic', long + 'b', 10), {
        name: 'InvalidArgumentError',
        message: `device id "nic-${long}b-pci-10" is not valid for QEMU: it is 33 characters long (at most 32)`,
      });
    });
  });

  describe('uuidPart', () => {
    it('is the part before the first dash', () => {
      assert.equal(uuidPart('3f2a9c1e-1111-2222-3333-444444444444'), '3f2a9c1e');
      assert.equal(uuidPart('nodash'), 'nodash');
    });
  });

  describe('idProblem', () => {
    it('allows at most 32 characters', () => {
      assert.equal(MAX_ID_LENGTH, 32);
      assert.equal(idProblem('a'.repeat(32)), undefined);
      assert.equal(idProblem('a'.repeat(33)), 'it is 33 characters long (at most 32)');
    });

    it('rejects an empty id', () => {
      assert.equal(idProblem(''), 'it is empty');
    });

    it('rejects an id that does not start with a letter', () => {
      assert.equal(idProblem('5nic'), 'it does not start with a letter');
      assert.equal(idProblem('-nic'), 'it does not start with a letter');
      assert.equal(idProblem('_nic'), 'it does not start with a letter');
    });

    for (const bad of ['nic/5', 'nic 5', 'nic:5', 'nic,5', 'nic=5', 'nïc']) {
      it(`rejects ${JSON.stringify(bad)}`, () => {
        assert.equal(idProblem(bad), 'it may contain only letters, digits, ".", "_" and "-"');
      });
    }

    it('allows letters, digits, ".", "_" and "-"', () => {
      assert.equal(idProblem('a.b_c-D9'), undefined);
      assert.equal(idProblem('nic-3f2a9c1e-pci-5'), undefined);
      assert.equal(idProblem('Z'), undefined);
    });

    it('assertValidId returns the id or throws InvalidArgumentError with the problem', () => {
      assert.equal(assertValidId('disk-1-pci-6'), 'disk-1-pci-6');
      assert.throws(() => assertValidId('a b'), {
        name: 'InvalidArgumentError',
        message: 'device id "a b" is not valid for QEMU: it may contain only letters, digits, ".", "_" and "-"',
      });
    });
  });

  describe('parseDeviceId', () => {
    it('round-trips ids made by deviceId', () => {
      for (const [kind, uuid, slot] of [
        ['nic', '3f2a9c1e-1111-2222-3333-444444444444', 5],
        ['disk', '0badcafe-0000', 31],
        ['nic', 'A1.b_2', 0],
      ] as const) {
        assert.deepEqual(parseDeviceId(deviceId(kind, uuid, slot)), { kind, uuidPart: uuidPart(uuid), slot });
      }
    });

    for (const foreign of [
      '',
      'nic-3f2a9c1e',
      'nic-3f2a9c1e-pci-',
      'nic-3f2a9c1e-pci-123',
      'nic-3f2a9c1e-pci-5x',
      'nic--pci-5',
      'NIC-3f2a9c1e-pci-5',
      'net0',
      'nic-3f2a9c1e-pci-5 ',
      'nic-3f2a-9c1e-pci-5',
    ]) {
      it(`returns undefined for the foreign id ${JSON.stringify(foreign)}`, () => {
        assert.equal(parseDeviceId(foreign), undefined);
      });
    }

    // Ids no deviceId() call can produce: only kinds nic and disk, slots 0 to 31, no leading zero.
    for (const foreign of ['virtio-net-pci-5', 'nic-3f2a9c1e-pci-99', 'nic-3f2a9c1e-pci-05']) {
      it(`returns undefined for ${JSON.stringify(foreign)}, which deviceId() cannot make`, () => {
        assert.equal(parseDeviceId(foreign), undefined);
      });
    }
  });
});
