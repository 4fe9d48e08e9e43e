import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { normalizeMac } from '../../src/hypervisor/nic';

describe('nic', () => {
  describe('normalizeMac', () => {
    it('accepts a lower-case unicast MAC unchanged', () => {
      assert.equal(normalizeMac('52:54:00:aa:bb:cc'), '52:54:00:aa:bb:cc');
    });

    it('accepts upper case and returns it lower-cased', () => {
      assert.equal(normalizeMac('52:54:00:AA:Bb:CC'), '52:54:00:aa:bb:cc');
      assert.equal(normalizeMac('AA:00:00:35:D4:3E'), 'aa:00:00:35:d4:3e');
    });

    it('trims surrounding whitespace', () => {
      assert.equal(normalizeMac(' 52:54:00:aa:bb:cc\n'), '52:54:00:aa:bb:cc');
    });

    for (const mac of ['01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '33:33:00:00:00:01', '53:54:00:aa:bb:cc']) {
      it(`rejects the multicast address ${mac}`, () => {
        assert.throws(
          () => normalizeMac(mac),
          (err: unknown) => {
            assert.ok(err instanceof InvalidArgumentError);
            assert.equal(err.message, `MAC address "${mac}" is a multicast address: a NIC needs a unicast one (first octet even)`);
            return true;
          },
        );
      });
    }

    for (const mac of [
      '52:54:00:aa:bb',
      '52:54:00:aa:bb:cc:dd',
      '52:54:00:aa:bb:c',
      '52:54:00:aa:bb:ccc',
      '52-54-00-aa-bb-cc',
      '525400aabbcc',
      '52:54:00:aa:bb:gg',
      '',
    ]) {
      it(`rejects the malformed address ${JSON.stringify(mac)}`, () => {
        assert.throws(() => normalizeMac(mac), {
          name: 'InvalidArgumentError',
          message: `MAC address ${JSON.stringify(mac)} is malformed: write six hex pairs separated by ":", e.g. 52:54:00:12:34:56`,
        });
      });
    }
  });
});
