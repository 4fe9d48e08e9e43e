/**
 * The guest agent through the cluster: `gnt-instance info` shows the
 * agent's interfaces and disks matching the configuration after a hot-add
 * and a remove; `gnt-instance modify --hotplug --wait-guest` returns once
 * the agent reports the NIC, the disk, the vCPU (onlined through the agent:
 * the guest leaves hot-added vCPUs offline) and the memory; a node started
 * with --wait-guest-default waits without the flag; with no agent in the
 * guest the job says so and does not wait.
 */
import * as assert from 'node:assert/strict';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

interface Details {
  instance: { nics: Array<{ mac: string }>; disks: Array<{ uuid: string }> };
  runtime: { running: boolean; disks: Array<{ uuid: string; pci: number }>; guest: { known: boolean } };
  guestAgent: { answers: boolean; error: string; interfaces: Array<{ name: string; mac: string }>; disks: Array<{ name: string; pci: string }>; vcpusOnline: number };
}

const KERNEL_ARGS = 'console=ttyS0 quiet loglevel=1 panic=-1';
const MAC = '52:54:00:ca:00:01';
const pciOf = (slot: number): string => `0000:00:${slot.toString(16).padStart(2, '0')}.0`;

describe('guest agent through the cluster (gnt-instance info, modify --wait-guest)', function () {
  this.timeout(400_000);
  const c = new TestCluster();
  const guest = guestFiles();
  const add = (name: string, node: string, extraArgs: string): void => {
    c.ok(c.gnt('gnt-instance', 'add', '-n', node, '--vcpus', '1', '--maxvcpus', '4', '--memory', '256M', '--maxmem', '1G',
      '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', `${KERNEL_ARGS} ${extraArgs}`, name));
  };
  const info = (name: string): Details => c.instanceInfo<Details>(name);
  const waitAgent = (name: string, pred: (d: Details) => boolean, what: string): Promise<Details> =>
    c.waitGuest<Details>(name, (d) => d.runtime.running && d.guestAgent.answers && pred(d), what, 120_000);

  before(async () => {
    await c.init();
    await c.addNode('node1');
    await c.addNode('node2', { extraArgs: ['--wait-guest-default'] });
    add('ga1', 'node1', 'gnt.cpuonline=0 gnt.memonline=offline memory_hotplug.online_policy=auto-movable');
    add('ga2', 'node2', '');
    add('ga3', 'node1', 'gnt.qga=0');
  });
  after(async () => {
    for (const n of ['ga1', 'ga2', 'ga3']) c.gnt('gnt-instance', 'remove', n);
    await c.destroy();
  });

  it('--wait-guest returns once the agent reports the NIC, and info lists it by MAC', async () => {
    await waitAgent('ga1', () => true, 'the agent');
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--wait-guest', '--net', `add:mac=${MAC}`, 'ga1'));
    assert.match(r.stdout + r.stderr, new RegExp(`guest confirmed NIC ${MAC} after \\d+ ms`));
    // Right after the job: the agent already lists it (the job waited for that).
    assert.ok(info('ga1').guestAgent.interfaces.some((i) => i.mac === MAC), JSON.stringify(info('ga1').guestAgent.interfaces));
    const text = c.ok(c.gnt('gnt-instance', 'info', 'ga1')).stdout;
    assert.match(text, /Guest agent: qemu-ga \d/);
    assert.match(text, new RegExp(`eth\\d ${MAC}`));
    assert.doesNotMatch(text, /Guest view/);
  });

  it('--wait-guest returns once the agent reports the disk at its PCI address, and info matches the configuration', async () => {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--wait-guest', '--disk', 'add:size=16M', 'ga1'));
    const d = info('ga1');
    const disk = d.runtime.disks[0];
    assert.ok(disk && disk.pci >= 0);
    assert.match(r.stdout + r.stderr, new RegExp(`guest confirmed disk at ${pciOf(disk.pci)} after \\d+ ms`));
    assert.deepEqual(d.guestAgent.disks.map((x) => x.pci), [pciOf(disk.pci)]);
  });

  it('--wait-guest onlines the hot-added vCPU through the agent, and the memory', async () => {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--wait-guest', '-B', 'vcpus=2,memory=384M', 'ga1'));
    assert.match(r.stdout + r.stderr, /guest confirmed 2 vCPUs online after \d+ ms \(onlined 1 vCPU\(s\) through the agent\)/);
    assert.match(r.stdout + r.stderr, /guest confirmed memory online after \d+ ms \(onlined \d+ memory block\(s\) through the agent\)/);
    assert.equal(info('ga1').guestAgent.vcpusOnline, 2);
  });

  it('after removes, info no longer lists the NIC or the disk', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '0:remove', '--disk', '0:remove', 'ga1'));
    await waitAgent('ga1', (d) => !d.guestAgent.interfaces.some((i) => i.mac === MAC) && d.guestAgent.disks.length === 0, 'the NIC and the disk gone from the agent');
    assert.equal(info('ga1').instance.nics.length, 0);
  });

  it("a node started with --wait-guest-default waits without the flag; --no-wait-guest does not", async () => {
    await waitAgent('ga2', () => true, 'the agent of ga2');
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:ca:00:02', 'ga2'));
    assert.match(r.stdout + r.stderr, /guest confirmed NIC 52:54:00:ca:00:02 after \d+ ms/);
    const n = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--no-wait-guest', '--net', 'add:mac=52:54:00:ca:00:03', 'ga2'));
    assert.doesNotMatch(n.stdout + n.stderr, /guest confirmed/);
  });

  it('with no agent in the guest: info says so, and --wait-guest says it does not wait', async () => {
    await c.waitGuest<Details>('ga3', (d) => d.runtime.running, 'ga3 running', 120_000);
    const t0 = Date.now();
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--wait-guest', '--net', 'add:mac=52:54:00:ca:00:04', 'ga3'));
    assert.match(r.stdout + r.stderr, /no guest agent answers on .*; not waiting for the guest/);
    assert.ok(Date.now() - t0 < 60_000, `the job took ${Date.now() - t0} ms`);
    assert.match(c.ok(c.gnt('gnt-instance', 'info', 'ga3')).stdout, /Guest agent: not answering \((no guest agent answers on|node node1 .*did not answer GuestInfo)/);
  });

  it('refuses --wait-guest with --no-wait-guest and a bad timeout, changing nothing', () => {
    const before = info('ga2').instance.nics.length;
    for (const args of [['--wait-guest', '--no-wait-guest'], ['--wait-guest-timeout', '0']]) {
      const r = c.gnt('gnt-instance', 'modify', '--hotplug', ...args, '--net', 'add', 'ga2');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /--wait-guest/);
    }
    assert.equal(info('ga2').instance.nics.length, before);
  });
});
