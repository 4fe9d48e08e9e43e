import { strict as assert } from 'node:assert';
import { macProblem } from '../../src/common/mac';
import { checkMac, UsageError } from '../../src/master/validate';
import { normalizeMac } from '../../src/hypervisor/nic';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { checkNicMac } from '../../src/noded/spec';

/** The message each side gives for `mac`, or 'ok'. */
function outcomes(mac: string): string[] {
  const run = (fn: () => string, type: new (...a: never[]) => Error): string => {
    try {
      fn();
      return 'ok';
    } catch (err) {
      assert.ok(err instanceof type, `${String(err)} is a ${type.name}`);
      return (err as Error).message;
    }
  };
  return [run(() => checkMac(mac), UsageError), run(() => normalizeMac(mac), InvalidArgumentError), run(() => checkNicMac(mac), Error)];
}

describe('MAC rule (src/common/mac.ts), one for master and node', () => {
  it('accepts unicast addresses and returns them in lower case', () => {
    assert.equal(checkMac('52:54:00:AA:bb:0C'), '52:54:00:aa:bb:0c');
    assert.equal(checkNicMac(' 02:00:00:00:00:01 '), '02:00:00:00:00:01');
    assert.equal(macProblem('52:54:00:12:34:56'), undefined);
  });

  for (const [mac, why] of [
    ['00:00:00:00:00:00', /is all zeros$/],
    ['01:00:5e:00:00:01', /is a multicast address/],
    ['ff:ff:ff:ff:ff:ff', /is a multicast address/],
    ['33:33:00:00:00:01', /is a multicast address/],
    ['52:54:00:aa:bb', /is malformed/],
    ['52-54-00-aa-bb-cc', /is malformed/],
    ['52:54:00:aa:bb:cc,x=1', /is malformed/],
  ] as const) {
    it(`refuses ${mac} with the same words on master and node`, () => {
      const [master, hypervisor, noded] = outcomes(mac);
      assert.match(master, why);
      assert.equal(hypervisor, master);
      assert.equal(noded, master);
    });
  }

  it('quotes a long address only as an excerpt', () => {
    const msg = macProblem('a'.repeat(10_000)) as string;
    assert.ok(msg.length < 200, msg);
    assert.match(msg, /…\(10000 chars\)/);
  });
});
