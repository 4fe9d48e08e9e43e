import { strict as assert } from 'node:assert';
import { attachCpu, detachCpu, freeCpuSlots, presentCount, queryHotpluggableCpus, type CpuRecord } from '../../src/hypervisor/cpu';
import { countCpuList } from '../../src/hypervisor/guest-console';
import { attachDimm, detachDimm, nextDimmId, type DimmRecord } from '../../src/hypervisor/memory';
import { applyResize, validateResize, type ResourceState } from '../../src/hypervisor/resize';
import { bootGuest, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

describe('vCPU and DIMM hotplug modules against the real guest', function () {
  let g: BootedGuest;

  before(async () => {
    // movable onlining lets the guest give a DIMM back
    g = await bootGuest({ kernelArgs: 'gnt.memonline=online_movable' });
  });
  after(async () => {
    await g?.destroy();
  });

  it('grows vCPUs 1 -> 3 and shrinks to 2, as the guest sees them', async () => {
    const mon = await g.instance.monitor();
    const cpus = await queryHotpluggableCpus(mon);
    assert.equal(cpus.length, 4, 'maxvcpus 4');
    assert.equal(presentCount(cpus), 1);
    const added: CpuRecord[] = freeCpuSlots(g.instance.name, cpus, 2);
    assert.deepEqual(added.map((c) => c.id), ['vcpu-s0-c1-t0', 'vcpu-s0-c2-t0']);
    for (const cpu of added) await attachCpu(mon, cpu);
    await g.console.waitFor((s) => countCpuList(s.cpusPresent) === 3 && countCpuList(s.cpusOnline) === 3, SEEN_TIMEOUT_MS, '3 CPUs online');
    assert.equal(presentCount(await queryHotpluggableCpus(mon)), 3);

    await detachCpu(mon, added[1], 20_000); // DEVICE_DELETED carries only the QOM path here
    await g.console.waitFor((s) => countCpuList(s.cpusPresent) === 2 && countCpuList(s.cpusOnline) === 2, SEEN_TIMEOUT_MS, '2 CPUs');
    assert.equal(presentCount(await queryHotpluggableCpus(mon)), 2);

    // the freed slot is offered again, with the same id, and can be re-plugged (QEMU >= 8)
    const again = freeCpuSlots(g.instance.name, await queryHotpluggableCpus(mon), 1);
    assert.equal(again[0].id, 'vcpu-s0-c2-t0');
    await attachCpu(mon, again[0]);
    await g.console.waitFor((s) => countCpuList(s.cpusOnline) === 3, SEEN_TIMEOUT_MS, '3 CPUs again');
    await detachCpu(mon, again[0], 20_000);
    await detachCpu(mon, added[0], 20_000);
    await g.console.waitFor((s) => countCpuList(s.cpusPresent) === 1, SEEN_TIMEOUT_MS, 'back to 1 CPU');
  });

  it('refuses more vCPUs than maxvcpus allows, naming the room left', async () => {
    const mon = await g.instance.monitor();
    assert.throws(() => freeCpuSlots('g1', [{ type: 'x', 'vcpus-count': 1, props: {}, 'qom-path': '/p' }], 1), /g1 has room for 0 more vCPUs \(maxvcpus 1\), not 1/);
    const cpus = await queryHotpluggableCpus(mon);
    assert.throws(() => freeCpuSlots(g.instance.name, cpus, 4), /room for 3 more vCPUs \(maxvcpus 4\), not 4/);
  });

  it('grows memory 256 MiB -> 512 MiB with an ACPI DIMM, and gives it back', async () => {
    const mon = await g.instance.monitor();
    const before = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
    const dimm: DimmRecord = { id: nextDimmId([]), sizeMiB: 256 };
    await attachDimm(mon, dimm);
    const grown = await g.console.waitFor((s) => s.memTotalKiB >= before + 256 * 1024, SEEN_TIMEOUT_MS, 'MemTotal +256 MiB');
    assert.equal(grown.memTotalKiB - before, 256 * 1024);
    const summary = await mon.execute<{ 'plugged-memory': number }>('query-memory-size-summary');
    assert.equal(summary['plugged-memory'], 256 * 1024 * 1024);
    await detachDimm(mon, dimm, 30_000);
    await g.console.waitFor((s) => s.memTotalKiB === before, SEEN_TIMEOUT_MS, 'MemTotal back');
  });

  it('a DIMM whose device_add fails leaves no backend behind', async () => {
    const mon = await g.instance.monitor();
    await assert.rejects(attachDimm(mon, { id: 'dimm-too-big', sizeMiB: 4096 }), /hot-add of 4096 MiB DIMM dimm-too-big failed at step device_add: .*rolled back: object-add/);
    const objects = await mon.execute<Array<{ name: string }>>('qom-list', { path: '/objects' });
    assert.ok(!objects.some((o) => o.name === 'mem-dimm-too-big'));
  });
});

describe('resize (vCPUs and ACPI memory in one request) against the real guest', function () {
  let g: BootedGuest;
  before(async () => {
    g = await bootGuest();
  });
  after(async () => {
    await g?.destroy();
  });

  it('applies vcpus=2,memory=384M together, and records each device as it lands', async () => {
    const mon = await g.instance.monitor();
    const s: ResourceState = { bootVcpus: 1, maxVcpus: 4, bootMemoryMiB: 256, maxMemoryMiB: 1024, memoryHotplug: 'acpi', cpus: [], dimms: [] };
    const saved: string[] = [];
    const ctx = { instance: g.instance.name, mon, cpuUnplugged: false, unplugTimeoutMs: 20_000, save: (x: ResourceState) => saved.push(JSON.stringify(x)) };
    const before = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
    validateResize(g.instance.name, s, { vcpus: 2, memoryMiB: 384 }, { freeMemoryMiB: 4096, cpus: 2 });
    const result = await applyResize(ctx, s, { vcpus: 2, memoryMiB: 384 });
    assert.deepEqual([result.vcpus, result.memoryMiB, result.notes], [2, 384, []]);
    await g.console.waitFor((x) => countCpuList(x.cpusOnline) === 2 && x.memTotalKiB === before + 128 * 1024, SEEN_TIMEOUT_MS, '2 CPUs and +128 MiB');
    // Each device: its intent before device_add, then its result.
    const states = saved.map((j) => JSON.parse(j) as ResourceState).map((x) => [x.dimms.map((d) => d.state ?? 'done'), x.cpus.map((c) => c.state ?? 'done')]);
    assert.deepEqual(states, [
      [['attaching'], []],
      [['done'], []],
      [['done'], ['attaching']],
      [['done'], ['done']],
    ], 'intent, then result, for the DIMM and then the vCPU');

    const shrink = await applyResize(ctx, s, { vcpus: 1, memoryMiB: 256 });
    assert.equal(shrink.vcpus, 1);
    assert.equal(s.pendingMemoryMiB, 256);
    assert.match(shrink.notes.join(' '), /ACPI memory cannot shrink live: 256 MiB is recorded and takes effect at the next start/);
    await g.console.waitFor((x) => countCpuList(x.cpusOnline) === 1, SEEN_TIMEOUT_MS, 'back to 1 CPU');
  });
});
