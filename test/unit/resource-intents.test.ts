/**
 * vCPU and DIMM intents settled by QEMU's device list (a fake monitor: a
 * crash at every point of a resize cannot be produced on demand with a
 * real QEMU; the real paths are covered by the kill test).
 */
import { strict as assert } from 'node:assert';
import { QmpTimeoutError } from '../../src/hypervisor/errors';
import type { QmpArgs } from '../../src/hypervisor/qmp-client';
import type { Monitor } from '../../src/hypervisor/qmp-client';
import { settleResourceIntents } from '../../src/hypervisor/resource-intents';
import type { ResourceState } from '../../src/hypervisor/resize';

function fakeMonitor(present: Set<string>): { mon: Monitor; calls: string[] } {
  const calls: string[] = [];
  const mon: Monitor = {
    async execute<T>(command: string, args?: QmpArgs): Promise<T> {
      calls.push(`${command}${args?.id ? ` ${String(args.id)}` : ''}`);
      if (command === 'qom-list') return [...present].map((name) => ({ name, type: 'child<x>' })) as T;
      if (command === 'query-pci') return [{ devices: [] }] as T;
      if (command === 'device_del') present.delete(String(args?.id)); // the guest ejects at once
      return {} as T;
    },
    hmp: async () => '',
    // No event ever comes: each wait ends with its timeout, as QmpClient's does.
    waitForEvent: (_match, timeoutMs, what) => {
      let timer: NodeJS.Timeout | undefined;
      const promise = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new QmpTimeoutError(`wait for ${what}`, 'fake', timeoutMs)), timeoutMs);
      });
      return { promise, cancel: () => clearTimeout(timer) };
    },
  };
  return { mon, calls };
}

const state = (): ResourceState => ({
  bootVcpus: 1,
  maxVcpus: 4,
  bootMemoryMiB: 256,
  maxMemoryMiB: 1024,
  memoryHotplug: 'acpi',
  cpus: [
    { id: 'vcpu-c1', driver: 'x', props: { 'core-id': 1 } },
    { id: 'vcpu-c2', driver: 'x', props: { 'core-id': 2 }, state: 'attaching' },
    { id: 'vcpu-c3', driver: 'x', props: { 'core-id': 3 }, state: 'attaching' },
  ],
  dimms: [
    { id: 'dimm0', sizeMiB: 128, state: 'detaching' },
    { id: 'dimm1', sizeMiB: 128, state: 'attaching' },
  ],
});

describe('vCPU and DIMM intents', () => {
  it('keeps an attach QEMU has, drops one it lacks (with its memory backend), carries a removal to its end', async () => {
    const { mon, calls } = fakeMonitor(new Set(['vcpu-c1', 'vcpu-c2', 'dimm0']));
    const r = state();
    const out = await settleResourceIntents(mon, r, 1000);
    assert.deepEqual(r.cpus.map((c) => [c.id, c.state]), [['vcpu-c1', undefined], ['vcpu-c2', undefined]]);
    assert.deepEqual(r.dimms, []);
    assert.deepEqual(out, { completed: ['vcpu-c2', 'dimm0'], rolledBack: ['vcpu-c3', 'dimm1'], pending: [] });
    assert.ok(calls.includes('device_del dimm0'), 'the asked removal was carried on');
    assert.ok(calls.includes('object-del mem-dimm1'), 'the backend of the DIMM QEMU lacks was released');
    assert.ok(calls.includes('object-del mem-dimm0'), 'and that of the removed one');
  });

  it('leaves a removal the guest does not finish pending', async () => {
    const present = new Set(['dimm0']);
    const { mon } = fakeMonitor(present);
    const stubborn: Monitor = {
      ...mon,
      execute: async <T>(command: string, args?: QmpArgs): Promise<T> => (command === 'device_del' ? ({} as T) : mon.execute<T>(command, args)),
    };
    const r = state();
    r.cpus = [];
    r.dimms = [{ id: 'dimm0', sizeMiB: 128, state: 'detaching' }];
    const out = await settleResourceIntents(stubborn, r, 300);
    assert.deepEqual(out.pending, ['dimm0']);
    assert.equal(r.dimms[0].state, 'detaching');
  });
});
