/**
 * Issue 4 end to end: `gnt-instance modify --hotplug -B vcpus=N,memory=SIZE`
 * through the CLI, the master (one job, one InstanceResize) and a node
 * daemon, seen by the real guest; bad input refused with the configuration
 * unchanged; the new values survive a stop and start.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

interface Resources {
  bootVcpus: number;
  vcpus: number;
  maxVcpus: number;
  bootMemoryMib: string;
  memoryMib: string;
  maxMemoryMib: string;
  memoryHotplug: string;
  pendingMemoryMib: string;
}

interface Details {
  instance: { vcpus: number; maxvcpus: number; memoryMib: string; maxmemMib: string };
  runtime: { running: boolean; resources: Resources | null; guest: { known: boolean; cpusOnline: string; memTotalKib: string } };
}

const NAME = 'rs1';
const MiB_KiB = 1024;

describe('live vCPU and memory resize through the cluster (gnt-instance modify -B)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  let baseKiB = 0;
  const info = (): Details => c.instanceInfo<Details>(NAME);
  const memKiB = (d: Details): number => Number(d.runtime.guest.memTotalKib);
  const waitGuest = (pred: (d: Details) => boolean, what: string): Promise<Details> =>
    c.waitGuest<Details>(NAME, (d) => d.runtime.running && pred(d), what, 120_000);
  const jobCount = (): number => c.json<unknown[]>(c.gnt('gnt-job', 'list', '--output', 'json')).length;
  const resizeCalls = (): number => (fs.readFileSync(path.join(c.work, 'node1.log'), 'utf8').match(/InstanceResize instance=rs1 /g) ?? []).length;
  const refused = (args: string[], re: RegExp): void => {
    const before = info().instance;
    const jobs = jobCount();
    const r = c.gnt('gnt-instance', 'modify', '--hotplug', ...args, NAME);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail: ${r.stdout}`);
    assert.match(r.stderr, re);
    const after = info().instance;
    assert.equal(after.vcpus, before.vcpus);
    assert.equal(after.memoryMib, before.memoryMib);
    assert.ok(jobCount() <= jobs + 1);
  };

  before(async () => {
    const guest = guestFiles();
    await c.init();
    await c.addNode('node1');
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--maxvcpus', '4', '--memory', '256M', '--maxmem', '1G',
        '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', NAME),
    );
    const d = await waitGuest((x) => x.runtime.guest.cpusOnline === '0' && memKiB(x) > 0, 'its first state');
    baseKiB = memKiB(d);
  });

  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it('shows boot / current / max vCPUs and memory from the node', () => {
    const r = info().runtime.resources;
    assert.ok(r);
    assert.deepEqual([r.bootVcpus, r.vcpus, r.maxVcpus], [1, 1, 4]);
    assert.deepEqual([r.bootMemoryMib, r.memoryMib, r.maxMemoryMib, r.memoryHotplug], ['256', '256', '1024', 'acpi']);
    const text = c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout;
    assert.match(text, /VCPUs on the node: boot 1 \/ current 1 \/ max 4/);
    assert.match(text, /Memory on the node: boot 256 \/ current 256 \/ max 1024 MiB/);
  });

  // Also above the CPU count of a small node: the default vCPU overcommit ratio is 16 (test/integration/cpu-overcommit.test.ts).
  it('-B vcpus=3 --hotplug: the guest sees CPUs 0-2 and the config says 3', async function () {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '-B', 'vcpus=3', NAME));
    assert.match(r.stdout, /vCPUs 1 -> 3: done live/);
    await waitGuest((d) => d.runtime.guest.cpusOnline === '0-2', 'CPUs 0-2');
    const d = info();
    assert.equal(d.instance.vcpus, 3);
    assert.equal(d.runtime.resources?.vcpus, 3);
  });

  it('-B vcpus=2,memory=384M in one command: one job, one node call, both seen by the guest', async () => {
    // The node's log reaches its file through this process's event loop: let it catch up.
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 1000));
    await settle();
    const jobs = jobCount();
    const calls = resizeCalls();
    const vcpusBefore = info().instance.vcpus;
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '-B', 'vcpus=2,memory=384M', NAME));
    assert.match(r.stdout, new RegExp(`vCPUs ${vcpusBefore} -> 2, memory 256 MiB -> 384 MiB: done live`));
    assert.equal(jobCount(), jobs + 1);
    await waitGuest((d) => d.runtime.guest.cpusOnline === '0-1' && memKiB(d) === baseKiB + 128 * MiB_KiB, '2 CPUs and MemTotal +128 MiB');
    await settle();
    assert.equal(resizeCalls(), calls + 1);
    const d = info();
    assert.equal(d.instance.vcpus, 2);
    assert.equal(d.instance.memoryMib, '384');
    assert.equal(d.runtime.resources?.memoryMib, '384');
  });

  it('refuses bad input with a clear error and leaves the config unchanged', () => {
    refused(['-B', 'vcpus=5'], /at most 4|1 to 4 vCPUs/);
    // A 66 MiB grow: ACPI hotplug works in 128 MiB steps; the node says so (INVALID_ARGUMENT).
    refused(['-B', 'memory=450M'], /multiples of 128 MiB.*INVALID_ARGUMENT/);
    refused(['-B', 'memory=2G'], /at most 1024 MiB/);
    refused(['-B', 'memory=384'], /has no unit/);
    refused(['-B', 'cpus=2'], /unknown parameter "cpus"/);
    const d = info();
    assert.equal(d.instance.vcpus, 2);
    assert.equal(d.instance.memoryMib, '384');
  });

  it('after stop and start the guest comes up with 2 vCPUs and the grown memory', async () => {
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    c.ok(c.gnt('gnt-instance', 'start', NAME));
    const want = baseKiB + 128 * MiB_KiB;
    await waitGuest((d) => d.runtime.guest.cpusOnline === '0-1' && Math.abs(memKiB(d) - want) <= 8 * MiB_KiB, '2 CPUs and MemTotal about +128 MiB');
    const r = info().runtime.resources;
    assert.deepEqual([r?.bootVcpus, r?.vcpus, r?.bootMemoryMib], [2, 2, '384']);
  });

  it('an ACPI shrink is committed and the note says it applies at the next start', () => {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '-B', 'memory=256M', NAME));
    assert.match(r.stdout, /takes effect at the next start/);
    const d = info();
    assert.equal(d.instance.memoryMib, '256');
    assert.equal(d.runtime.resources?.pendingMemoryMib, '256');
    assert.equal(d.runtime.resources?.memoryMib, '384');
  });

  it('without --hotplug -B changes the configuration only, for the next start', () => {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '-B', 'vcpus=1', NAME));
    assert.match(r.stdout, /vCPUs 2 -> 1: changed in the configuration; it applies at the next start/);
    const d = info();
    assert.equal(d.instance.vcpus, 1);
    assert.equal(d.runtime.resources?.vcpus, 2);
  });
});
