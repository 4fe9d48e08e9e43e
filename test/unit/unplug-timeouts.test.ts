import { strict as assert } from 'node:assert';
import { DEFAULT_UNPLUG_TIMEOUTS, parseUnplugTimeouts, unplugTimeoutFor, unplugTimeoutsFromHvparams } from '../../src/hypervisor/unplug-timeouts';

describe('unplug timeouts per device kind', () => {
  it('gives disks longer than NICs by default', () => {
    assert.ok(DEFAULT_UNPLUG_TIMEOUTS.disk > DEFAULT_UNPLUG_TIMEOUTS.nic);
  });

  it('parses the node option in seconds, decimals allowed', () => {
    assert.deepEqual(parseUnplugTimeouts('nic=10, disk=60,cpu=1.5', '--unplug-timeout'), { nic: 10_000, disk: 60_000, cpu: 1_500 });
  });

  it('refuses unknown kinds and bad numbers, naming them', () => {
    assert.throws(() => parseUnplugTimeouts('gpu=3', 'x'), /"gpu=3" is not KIND=SECONDS with KIND one of nic, disk, cpu, memory/);
    assert.throws(() => parseUnplugTimeouts('nic=0', 'x'), /nic unplug timeout must be a number of seconds above 0/);
    assert.throws(() => parseUnplugTimeouts('nic=', 'x'), /not ""/);
    assert.throws(() => parseUnplugTimeouts('disk=4000', 'x'), /at most 3600/);
  });

  it('takes the instance over the node over the legacy single value over the default', () => {
    assert.equal(unplugTimeoutFor('nic', { nic: 1 }, { nic: 2 }, 3), 1);
    assert.equal(unplugTimeoutFor('nic', {}, { nic: 2 }, 3), 2);
    assert.equal(unplugTimeoutFor('nic', {}, {}, 3), 3);
    assert.equal(unplugTimeoutFor('disk', {}, {}), DEFAULT_UNPLUG_TIMEOUTS.disk);
  });

  it('reads an instance\'s hvparams unplug_timeout_KIND', () => {
    assert.deepEqual(unplugTimeoutsFromHvparams({ unplug_timeout_disk: '90', machine: 'pc' }, 'web1'), { disk: 90_000 });
    assert.throws(() => unplugTimeoutsFromHvparams({ unplug_timeout_nic: 'soon' }, 'web1'), /hvparam unplug_timeout_nic of web1 must be a number of seconds/);
  });
});
