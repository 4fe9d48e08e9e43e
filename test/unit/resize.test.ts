import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import {
  assertVcpusFit,
  currentMemoryMiB,
  currentVcpus,
  DEFAULT_CPU_OVERCOMMIT_RATIO,
  tcgCpuThreadsLeft,
  validateResize,
  vcpuLimit,
  ResourceExhaustedError,
  type NodeCapacity,
  type ResourceState,
} from '../../src/hypervisor/resize';
import type { InstanceRegistry } from '../../src/noded/instance-registry';
import { parseCpuOvercommitRatio, VcpuPolicy } from '../../src/noded/vcpu-policy';

const node = { freeMemoryMiB: 8192, cpus: 8 };

const refusedWith = (re: RegExp) => (e: unknown): boolean =>
  e instanceof ResourceExhaustedError && e.code === 'RESOURCE_EXHAUSTED' && re.test(e.message);

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

describe('vCPU overcommit rule', () => {
  const twoCpus = (ratio?: number, otherVcpus?: number): NodeCapacity => ({ freeMemoryMiB: 8192, cpus: 2, cpuOvercommitRatio: ratio, otherVcpus });

  it('allows a live grow above the node CPU count by default (ratio 16, as Nova)', () => {
    assert.equal(DEFAULT_CPU_OVERCOMMIT_RATIO, 16);
    validateResize('web1', state(), { vcpus: 3 }, twoCpus());
    validateResize('web1', state({ maxVcpus: 32 }), { vcpus: 32 }, twoCpus());
    validateResize('web1', state(), { vcpus: 3 }, twoCpus(1.5)); // 2 * 1.5 = 3
  });

  it('refuses a grow above cpus * ratio, with the node CPUs, ratio, limit and what was asked', () => {
    assert.throws(() => validateResize('web1', state(), { vcpus: 3 }, twoCpus(1)), refusedWith(
      /^instance web1 cannot grow to 3 vCPUs: the node has 2 CPUs and a vCPU overcommit ratio of 1, so its instances may have 2 vCPUs together; the others have 0, so 3 asked in all\. Ask for at most 2, .*--cpu-overcommit-ratio$/));
    assert.throws(() => validateResize('web1', state({ maxVcpus: 40 }), { vcpus: 33 }, twoCpus()), refusedWith(/ratio of 16, so its instances may have 32 vCPUs together; the others have 0, so 33 asked/));
  });

  it('counts the other instances of the node', () => {
    validateResize('web1', state(), { vcpus: 2 }, twoCpus(2, 2));
    assert.throws(() => validateResize('web1', state(), { vcpus: 3 }, twoCpus(2, 2)), refusedWith(/may have 4 vCPUs together; the others have 2, so 5 asked in all\. Ask for at most 2/));
  });

  it('never refuses a shrink or an unchanged count, even above the limit', () => {
    const above = state({ bootVcpus: 3, maxVcpus: 4, cpus: [{ id: 'vcpu-s0-c3-t0', driver: 'x', props: {} }] });
    validateResize('web1', above, { vcpus: 4 }, twoCpus(1));
    validateResize('web1', above, { vcpus: 2 }, twoCpus(1));
  });

  it('applies the same rule at boot', () => {
    assertVcpusFit('web1', 3, twoCpus(), 'start with');
    assert.throws(() => assertVcpusFit('web1', 3, twoCpus(1), 'start with'), refusedWith(
      /^instance web1 cannot start with 3 vCPUs: the node has 2 CPUs and a vCPU overcommit ratio of 1, so its instances may have 2 vCPUs together; the others have 0, so 3 asked in all/));
  });

  it('rounds the limit down, without floating-point surprises', () => {
    assert.equal(vcpuLimit(2, 1.5), 3);
    assert.equal(vcpuLimit(3, 0.5), 1);
    assert.equal(vcpuLimit(100, 0.29), 29);
    assert.equal(vcpuLimit(2, 16), 32);
  });
});

describe('the node vCPU policy (gnt-noded --cpu-overcommit-ratio)', () => {
  interface Fake { name: string; pid: number | undefined; resources: ResourceState | undefined }
  const running = (name: string, vcpus: number): Fake => ({ name, pid: 100, resources: state({ bootVcpus: vcpus, maxVcpus: 8 }) });
  const policy = (instances: Fake[], ratio = 1): VcpuPolicy => {
    const registry = {
      all: () => instances,
      find: (n: string) => instances.find((i) => i.name === n),
    } as unknown as InstanceRegistry;
    return new VcpuPolicy({ registry, ratio, cpus: () => 4 });
  };

  it('sums the present vCPUs of the other running instances; stopped ones hold none', () => {
    const p = policy([running('a', 2), running('b', 1), { name: 'c', pid: undefined, resources: state({ bootVcpus: 4 }) }]);
    assert.equal(p.otherVcpus('a'), 1);
    assert.equal(p.otherVcpus('c'), 3);
    assert.deepEqual(p.capacity('b', 512), { freeMemoryMiB: 512, cpus: 4, cpuOvercommitRatio: 1, otherVcpus: 2 });
  });

  it('refuses a start above the limit with the numbers, and counts a start in flight against the others', async () => {
    const p = policy([running('a', 2)]);
    await assert.rejects(p.whileStarting('new', 3, async () => 'started'), refusedWith(/^instance new cannot start with 3 vCPUs: the node has 4 CPUs and a vCPU overcommit ratio of 1, so its instances may have 4 vCPUs together; the others have 2, so 5 asked in all/));
    let release!: () => void;
    const first = p.whileStarting('new', 2, () => new Promise<string>((r) => (release = () => r('started'))));
    assert.equal(p.otherVcpus('a'), 2, 'the start in flight holds its 2 vCPUs');
    await assert.rejects(p.whileStarting('other', 1, async () => 'no'), refusedWith(/the others have 4, so 5 asked/));
    release();
    assert.equal(await first, 'started');
    assert.equal(p.otherVcpus('a'), 0, 'the claim ends with the start (a running instance counts its own vCPUs)');
  });

  it('holds a grow in flight against the others, and hands resize the capacity', async () => {
    const p = policy([running('a', 1), running('b', 1)], 2);
    let release!: () => void;
    const grow = p.whileResizing('a', 6, 100, (node) => {
      assert.deepEqual(node, { freeMemoryMiB: 100, cpus: 4, cpuOvercommitRatio: 2, otherVcpus: 1 });
      return new Promise<void>((r) => (release = r));
    });
    assert.equal(p.otherVcpus('b'), 6);
    await p.whileResizing('b', 0, 100, async (node) => assert.equal(node.otherVcpus, 6));
    release();
    await grow;
    assert.equal(p.otherVcpus('b'), 1);
  });

  it('parses the ratio: a number above 0, decimals allowed', () => {
    assert.equal(parseCpuOvercommitRatio('16'), 16);
    assert.equal(parseCpuOvercommitRatio('1.5'), 1.5);
    assert.equal(parseCpuOvercommitRatio('.5'), 0.5);
    for (const bad of ['0', '0.0', '-1', 'x', '', '1e3', 'Infinity', '2,5'])
      assert.throws(() => parseCpuOvercommitRatio(bad), /--cpu-overcommit-ratio must be a number above 0 .*not "/, bad);
  });
});
