import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { countCpuList, GuestConsole } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { bootGuest, guestFiles, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { runtimeTextOf } from '../support/runtime-text';

const NODE = { freeMemoryMiB: 16384, cpus: 8 };
const MiB_KB = 1024;
/** Across a fresh boot the kernel reserves a little differently than after a hotplug: allow 8 MiB. */
const near = (kib: number, expected: number): boolean => Math.abs(kib - expected) < 8 * MiB_KB;

describe('live vCPU and memory resize through the instance (ACPI DIMMs)', function () {
  let g: BootedGuest;
  let baseKiB: number;
  before(async () => {
    g = await bootGuest();
    baseKiB = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
  });
  after(async () => {
    await g?.destroy();
  });

  it('vCPUs 1 -> 3 -> 2 as the guest sees them', async () => {
    assert.equal((await g.instance.resize({ vcpus: 3 }, NODE)).vcpus, 3);
    await g.console.waitFor((s) => countCpuList(s.cpusPresent) === 3 && countCpuList(s.cpusOnline) === 3, SEEN_TIMEOUT_MS, '3 CPUs');
    assert.equal((await g.instance.resize({ vcpus: 2 }, NODE)).vcpus, 2);
    await g.console.waitFor((s) => countCpuList(s.cpusPresent) === 2 && countCpuList(s.cpusOnline) === 2, SEEN_TIMEOUT_MS, '2 CPUs');
    assert.deepEqual(g.instance.resources?.cpus.map((c) => c.id), ['vcpu-s0-c1-t0']);
  });

  it('memory 256 MiB -> 512 MiB, seen in MemTotal', async () => {
    const r = await g.instance.resize({ memoryMiB: 512 }, NODE);
    assert.equal(r.memoryMiB, 512);
    await g.console.waitFor((s) => s.memTotalKiB === baseKiB + 256 * MiB_KB, SEEN_TIMEOUT_MS, 'MemTotal +256 MiB');
  });

  it('vcpus=3,memory=640M in one request', async () => {
    const r = await g.instance.resize({ vcpus: 3, memoryMiB: 640 }, NODE);
    assert.deepEqual([r.vcpus, r.memoryMiB], [3, 640]);
    await g.console.waitFor((s) => countCpuList(s.cpusOnline) === 3 && s.memTotalKiB === baseKiB + 384 * MiB_KB, SEEN_TIMEOUT_MS, '3 CPUs and +384 MiB');
  });

  it('refuses bad requests with a clear error and changes nothing', async () => {
    const before = runtimeTextOf(g.instance.paths.runtimeFile);
    await assert.rejects(g.instance.resize({ vcpus: 5 }, NODE), /at most 4 vCPUs \(maxvcpus\); 5 asked/);
    await assert.rejects(g.instance.resize({ vcpus: 0 }, NODE), /vcpus must be at least 1/);
    await assert.rejects(g.instance.resize({ memoryMiB: 700 }, NODE), /multiples of 128 MiB; 60 MiB is not one/);
    await assert.rejects(g.instance.resize({ memoryMiB: 2048 }, NODE), /at most 1024 MiB \(maxmem\)/);
    await assert.rejects(g.instance.resize({ memoryMiB: 768 }, { freeMemoryMiB: 64, cpus: 8 }), (e: unknown) =>
      e instanceof Error && (e as { code?: string }).code === 'RESOURCE_EXHAUSTED' && /64 MiB of memory free; .* cannot grow by 128 MiB/.test(e.message));
    // 1 boot vCPU + 3 adds (one of them after a remove) = 4 threads created of maxvcpus 4: a 5th would abort QEMU.
    await assert.rejects(g.instance.resize({ vcpus: 4 }, NODE), /QEMU under TCG creates at most 4 vCPU threads .*can add 0 more, 1 asked/);
    assert.equal(runtimeTextOf(g.instance.paths.runtimeFile), before);
    assert.ok(g.instance.pid !== undefined, 'QEMU is still alive');
  });

  it('a stop and start brings the guest back with the resized vCPUs and memory', async () => {
    await g.instance.stop();
    fs.writeFileSync(g.instance.paths.consoleLog, '');
    const again = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths });
    await again.start();
    g.instance = again;
    const con = new GuestConsole(again.paths.consoleLog);
    await con.waitFor((s) => countCpuList(s.cpusOnline) === 3 && near(s.memTotalKiB, baseKiB + 384 * MiB_KB), BOOT_TIMEOUT_MS, '3 CPUs and +384 MiB after restart');
    g.console = con;
  });

  it('an ACPI shrink is recorded and applied at the next start', async () => {
    const r = await g.instance.resize({ memoryMiB: 384 }, NODE);
    assert.match(r.notes.join(' '), /cannot shrink live: 384 MiB is recorded and takes effect at the next start/);
    assert.equal(g.instance.resources?.pendingMemoryMiB, 384);
    await g.instance.stop();
    fs.writeFileSync(g.instance.paths.consoleLog, '');
    await g.instance.start();
    await g.console.waitFor((s) => near(s.memTotalKiB, baseKiB + 128 * MiB_KB), BOOT_TIMEOUT_MS, 'boot memory 384 MiB');
    assert.equal(g.instance.resources?.bootMemoryMiB, 384);
    assert.deepEqual(g.instance.resources?.dimms, []);
  });
});

describe('live memory resize with virtio-mem', function () {
  let g: BootedGuest;
  let baseKiB: number;
  before(async () => {
    g = await bootGuest({ hvparams: { memory_hotplug: 'virtio-mem' }, kernelArgs: 'gnt.memonline=online_movable' });
    baseKiB = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
  });
  after(async () => {
    await g?.destroy();
  });

  it('grows and shrinks MemTotal live, reporting what the guest plugged', async () => {
    const vm = g.instance.resources?.virtioMem;
    assert.ok(vm && vm.maxMiB === 768, 'a virtio-mem device sized maxmem - memory');
    const grown = await g.instance.resize({ memoryMiB: 512 }, NODE);
    assert.equal(grown.pluggedMiB, 256);
    await g.console.waitFor((s) => s.memTotalKiB === baseKiB + 256 * MiB_KB, SEEN_TIMEOUT_MS, 'MemTotal +256 MiB');
    const shrunk = await g.instance.resize({ memoryMiB: 384 }, NODE);
    assert.ok(shrunk.pluggedMiB !== undefined && shrunk.pluggedMiB >= 128 && shrunk.pluggedMiB < 256, `plugged ${shrunk.pluggedMiB}`);
    await g.console.waitFor((s) => s.memTotalKiB === baseKiB + (shrunk.pluggedMiB as number) * MiB_KB, SEEN_TIMEOUT_MS, 'MemTotal shrunk');
  });
});

describe('memory hotplug on an instance created without room to grow', () => {
  it('is refused with a clear error', async () => {
    const dir = tempDir('noroom');
    try {
      const { kernel, initrd } = guestFiles();
      const inst = KvmInstance.create(dir, { name: 'tight', memoryMiB: 256, vcpus: 1, kernel, initrd });
      await assert.rejects(inst.resize({ memoryMiB: 512 }, NODE), /tight was started without room for memory hotplug \(maxmem 256 MiB, memory_hotplug none\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
