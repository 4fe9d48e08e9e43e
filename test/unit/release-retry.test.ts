import { strict as assert } from 'node:assert';
import { QmpCommandError, QmpTimeoutError } from '../../src/hypervisor/errors';
import type { Monitor, QmpEvent } from '../../src/hypervisor/qmp-client';
import { isInUse, releaseWhenFree } from '../../src/hypervisor/release-retry';

/** A monitor whose only use here is waitForEvent: `fire` delivers an event to the registered waits. */
function eventMonitor(): { mon: Monitor; fire(e: QmpEvent): void; waits(): number } {
  const waits = new Set<{ match: (e: QmpEvent) => boolean; resolve: (e: QmpEvent) => void }>();
  const mon: Monitor = {
    execute: async () => {
      throw new Error('not used');
    },
    hmp: async () => '',
    waitForEvent: (match, timeoutMs, what) => {
      let entry: { match: (e: QmpEvent) => boolean; resolve: (e: QmpEvent) => void } | undefined;
      let timer: NodeJS.Timeout | undefined;
      const promise = new Promise<QmpEvent>((resolve, reject) => {
        entry = { match, resolve };
        waits.add(entry);
        timer = setTimeout(() => reject(new QmpTimeoutError(what, 'the monitor', timeoutMs)), timeoutMs);
      });
      return {
        promise,
        cancel: () => {
          clearTimeout(timer);
          if (entry) waits.delete(entry);
        },
      };
    },
  };
  const fire = (e: QmpEvent): void => {
    for (const w of [...waits]) if (w.match(e)) w.resolve(e);
  };
  return { mon, fire, waits: () => waits.size };
}

const inUse = (): QmpCommandError => new QmpCommandError('blockdev-del', 'GenericError', 'Node disk-1234abcd-pci-4 is in use');
const deleted = (device: string): QmpEvent => ({ event: 'DEVICE_DELETED', data: { device, path: `/machine/peripheral/${device}` }, timestamp: { seconds: 0, microseconds: 0 } });

describe('releasing backends of a device QEMU is still finalizing', () => {
  it('knows QEMU\'s "in use" refusal from other refusals', () => {
    assert.ok(isInUse(inUse()));
    assert.ok(!isInUse(new QmpCommandError('blockdev-del', 'GenericError', 'Failed to find node with node-name=x')));
    assert.ok(!isInUse(new Error('Node x is in use')), 'only a QMP refusal counts');
  });

  it('repeats the release once the device\'s own DEVICE_DELETED arrives', async () => {
    const { mon, fire, waits } = eventMonitor();
    let calls = 0;
    const started = Date.now();
    const done = releaseWhenFree(mon, 'disk-1234abcd-pci-4', async () => {
      calls++;
      if (calls === 1) {
        setTimeout(() => fire(deleted('disk-1234abcd-pci-4')), 5);
        throw inUse();
      }
    }, 2000);
    await done;
    assert.equal(calls, 2);
    assert.ok(Date.now() - started < 1000);
    assert.equal(waits(), 0, 'the event wait is cancelled');
  });

  it('keeps trying on a short wait when the event came before it looked', async () => {
    const { mon } = eventMonitor();
    let calls = 0;
    await releaseWhenFree(mon, 'dimm1', async () => {
      calls++;
      if (calls < 4) throw inUse();
    }, 2000);
    assert.equal(calls, 4);
  });

  it('passes any other refusal on at once', async () => {
    const { mon } = eventMonitor();
    let calls = 0;
    await assert.rejects(
      releaseWhenFree(mon, 'x', async () => {
        calls++;
        throw new QmpCommandError('blockdev-del', 'GenericError', 'permission denied');
      }),
      /permission denied/,
    );
    assert.equal(calls, 1);
  });

  it('gives up with QEMU\'s refusal after the timeout', async () => {
    const { mon, waits } = eventMonitor();
    await assert.rejects(releaseWhenFree(mon, 'x', async () => Promise.reject(inUse()), 120), /is in use/);
    assert.equal(waits(), 0);
  });
});
