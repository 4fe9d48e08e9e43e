import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { currentMemoryMiB, currentVcpus, tcgCpuThreadsLeft, validateResize, ResourceExhaustedError, type ResourceState } from '../../src/hypervisor/resize';

const node = { freeMemoryMiB: 8192, cpus: 8 };

function state(over: Partial<ResourceState> = {}): ResourceState {
  return { bootVcpus: 1, maxVcpus: 4, bootMemoryMiB: 256, maxMemoryMiB: 1024, memoryHotplug: 'acpi', cpus: [], dimms: [], ...over };
}

describe('resize validation', () => {
  it('counts current vCPUs and memory from boot values plus hot-added devices', () => {
    const s = state({
      cpus: [{ id: 'vcpu-s0-c1-t0', driver: 'x', props: {} }],
      dimms: [{ id: 'dimm0', sizeMiB: 128 }, { id: 'dimm1', sizeMiB: 256 }],
    });
    assert.equal(currentVcpus(s), 2);
    assert.equal(currentMemoryMiB(s), 640);
    assert.equal(currentMemoryMiB(state({ memoryHotplug: 'virtio-mem', virtioMem: { id: 'vmem0', maxMiB: 768, requestedMiB: 100, pci: 7 } })), 356);
  });

  it('counts the vCPU threads a TCG QEMU process has left: the record of this pid, else boot plus hot-added', () => {
    const cpu = { id: 'vcpu-s0-c1-t0', driver: 'x', props: {} };
    assert.equal(tcgCpuThreadsLeft(state(), 100), 3);
    assert.equal(tcgCpuThreadsLeft(state({ cpus: [cpu] }), 100), 2);
    assert.equal(tcgCpuThreadsLeft(state({ cpus: [cpu], cpuThreads: { pid: 100, created: 4 } }), 100), 0, 'removed vCPUs keep their threads');
    assert.equal(tcgCpuThreadsLeft(state({ cpus: [cpu], cpuThreads: { pid: 99, created: 4 } }), 100), 2, 'another process starts afresh');
  });

  it('refuses a vCPU grow that would exceed the TCG thread limit, naming what is left', () => {
    assert.throws(
      () => validateResize('web1', state({ cpus: [{ id: 'vcpu-s0-c1-t0', driver: 'x', props: {} }] }), { vcpus: 4 }, node, 1),
      (e: unknown) => (e as { code?: string }).code === 'FAILED_PRECONDITION' && /can add 1 more, 2 asked .*Stop and start the instance/.test((e as Error).message),
    );
    validateResize('web1', state(), { vcpus: 2 }, node, 1);
    validateResize('web1', state({ cpus: [{ id: 'vcpu-s0-c1-t0', driver: 'x', props: {} }] }), { vcpus: 1 }, node, 0);
  });

  it('accepts growth within the limits', () => {
    validateResize('web1', state(), { vcpus: 4, memoryMiB: 512 }, node);
  });

  it('refuses vcpus above maxvcpus or below 1', () => {
    assert.throws(() => validateResize('web1', state(), { vcpus: 5 }, node), (e: unknown) =>
      e instanceof InvalidArgumentError && e.message === 'instance web1 can have at most 4 vCPUs (maxvcpus); 5 asked');
    assert.throws(() => validateResize('web1', state(), { vcpus: 0 }, node), /vcpus must be at least 1, not 0/);
  });

  it('refuses an ACPI step that is not a multiple of 128 MiB', () => {
    assert.throws(() => validateResize('web1', state(), { memoryMiB: 300 }, node), /multiples of 128 MiB; 44 MiB is not one/);
  });

  it('refuses memory above maxmem', () => {
    assert.throws(() => validateResize('web1', state(), { memoryMiB: 2048 }, node), /at most 1024 MiB \(maxmem\); 2048 MiB asked/);
  });

  it('refuses memory hotplug on an instance started without room to grow', () => {
    assert.throws(() => validateResize('web1', state({ maxMemoryMiB: 256 }), { memoryMiB: 384 }, node), /started without room for memory hotplug/);
    assert.throws(() => validateResize('web1', state({ memoryHotplug: 'none' }), { memoryMiB: 384 }, node), /started without room for memory hotplug/);
  });

  it('refuses a grow the node cannot hold, with the numbers', () => {
    assert.throws(() => validateResize('web1', state(), { memoryMiB: 512 }, { freeMemoryMiB: 100, cpus: 8 }), (e: unknown) =>
      e instanceof ResourceExhaustedError && e.code === 'RESOURCE_EXHAUSTED' && /100 MiB of memory free; instance web1 cannot grow by 256 MiB to 512 MiB/.test(e.message));
    assert.throws(() => validateResize('web1', state(), { vcpus: 3 }, { freeMemoryMiB: 8192, cpus: 2 }), /the node has 2 CPUs; instance web1 cannot grow to 3 vCPUs/);
  });

  it('checks virtio-mem sizes against the device and its 2 MiB blocks', () => {
    const s = state({ memoryHotplug: 'virtio-mem', virtioMem: { id: 'vmem0', maxMiB: 768, requestedMiB: 0, pci: 7 } });
    validateResize('web1', s, { memoryMiB: 300 }, node);
    assert.throws(() => validateResize('web1', s, { memoryMiB: 301 }, node), /2 MiB blocks; 45 MiB/);
  });

  it('refuses an empty request', () => {
    assert.throws(() => validateResize('web1', state(), {}, node), /nothing to resize/);
  });
});
