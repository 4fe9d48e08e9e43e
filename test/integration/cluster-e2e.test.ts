/**
 * Issue 3 end to end: a master and two node daemons on loopback, instances on
 * both, live changes through `gnt-instance modify --hotplug` seen by the
 * guests, concurrent jobs, and a restart that keeps every device in place.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';

interface Details {
  instance: { node: string; nics: { uuid: string; mac: string }[]; disks: { uuid: string }[] };
  runtime: { running: boolean; nics: { uuid: string; pci: number; deviceId: string }[]; disks: { uuid: string; pci: number; deviceId: string }[]; guest: { known: boolean; nics: string[]; disks: string[] } };
}

const BRIDGE = 'gnte2ebr0';

describe('a two-node cluster end to end (masterd, two noded, CLI, real guests)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  const info = (name: string): Details => c.instanceInfo<Details>(name);
  const waitGuest = (name: string, pred: (d: Details) => boolean, what: string): Promise<Details> => c.waitGuest<Details>(name, pred, what);
  const hotAdded = (r: CliRun): { slot: number; id: string } => {
    const m = /hot-added at PCI slot (\d+) \(((?:nic|disk)-[0-9a-f]+-pci-\d+)\)/.exec(c.ok(r).stdout);
    assert.ok(m, r.stdout);
    return { slot: Number(m[1]), id: m[2] };
  };

  before(async () => {
    const guest = guestFiles();
    spawnSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', BRIDGE, 'up']);
    await c.init();
    await c.addNode('node1');
    await c.addNode('node2');
    const add = (node: string, name: string): Promise<CliRun> =>
      c.gntAsync('gnt-instance', 'add', '-n', node, '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', '--net', `link=${BRIDGE}`, name);
    const [web, db] = await Promise.all([add('node1', 'web1'), add('node2', 'db1')]);
    c.ok(web);
    c.ok(db);
  });

  after(async () => {
    for (const name of ['web1', 'db1']) c.gnt('gnt-instance', 'remove', name);
    await c.destroy();
    spawnSync('ip', ['link', 'del', BRIDGE]);
  });

  it('lists both nodes and runs one instance on each', async () => {
    const nodes = c.json<Array<{ name: string }>>(c.gnt('gnt-node', 'list', '--output', 'json'));
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['node1', 'node2']);
    assert.equal(info('web1').instance.node, 'node1');
    assert.equal(info('db1').instance.node, 'node2');
    await waitGuest('web1', (d) => d.runtime.guest.nics.length === 1 && d.runtime.guest.disks.length === 1, 'its NIC and disk');
    await waitGuest('db1', (d) => d.runtime.guest.nics.length === 1 && d.runtime.guest.disks.length === 1, 'its NIC and disk');
  });

  it('two hotplug jobs submitted at once on one instance both succeed, on different slots with different ids', async () => {
    const [a, b] = await Promise.all([
      c.gntAsync('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:e2:00:01,link=${BRIDGE}`, 'web1'),
      c.gntAsync('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:e2:00:02,link=${BRIDGE}`, 'web1'),
    ]);
    const [sa, sb] = [hotAdded(a), hotAdded(b)];
    assert.notEqual(sa.slot, sb.slot);
    assert.notEqual(sa.id, sb.id);
    const d = await waitGuest('web1', (x) => ['52:54:00:e2:00:01', '52:54:00:e2:00:02'].every((m) => x.runtime.guest.nics.some((n) => n.includes(m))), 'both MACs');
    assert.equal(d.instance.nics.length, 3);
    assert.deepEqual(new Set(d.runtime.nics.map((n) => n.pci)).size, 3, 'three distinct slots');
  });

  it('hotplug jobs on two instances on two nodes run at the same time', async () => {
    const [w, x] = await Promise.all([
      c.gntAsync('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=32M', 'web1'),
      c.gntAsync('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=48M', 'db1'),
    ]);
    const sw = hotAdded(w);
    const sx = hotAdded(x);
    const slotOf = (s: number): string => `0000:00:${s.toString(16).padStart(2, '0')}.0`;
    await waitGuest('web1', (d) => d.runtime.guest.disks.some((l) => l.endsWith(slotOf(sw.slot)) && l.includes(' 65536 ')), 'the 32 MiB disk');
    await waitGuest('db1', (d) => d.runtime.guest.disks.some((l) => l.endsWith(slotOf(sx.slot)) && l.includes(' 98304 ')), 'the 48 MiB disk');
  });

  it('hot-removes a NIC and a disk, and the guest sees them go', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '2:remove', 'web1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '1:remove', 'db1'));
    const w = await waitGuest('web1', (d) => d.runtime.guest.nics.length === 2, 'two NICs');
    assert.equal(w.instance.nics.length, 2);
    const d = await waitGuest('db1', (x) => x.runtime.guest.disks.length === 1, 'one disk');
    assert.equal(d.instance.disks.length, 1);
  });

  it('a restart keeps the config, and the guest sees the same devices at the same PCI slots', async () => {
    const before = await waitGuest('web1', (d) => d.runtime.guest.nics.length === 2 && d.runtime.guest.disks.length === 2, 'the devices');
    c.ok(c.gnt('gnt-instance', 'stop', 'web1'));
    assert.equal(info('web1').runtime.running, false);
    c.ok(c.gnt('gnt-instance', 'start', 'web1'));
    // names (eth0, vda) may be given in another order after a boot; MAC, size and slot may not change
    const view = (d: Details): string[] => [
      ...d.runtime.guest.nics.map((l) => l.split(' ').slice(1).join(' ')),
      ...d.runtime.guest.disks.map((l) => l.split(' ').slice(1).join(' ')),
    ].sort();
    const after = await waitGuest('web1', (d) => view(d).length === view(before).length, 'the devices after the restart');
    assert.deepEqual(view(after), view(before));
    assert.deepEqual(after.instance, before.instance);
    const slots = (d: Details): string[] => [...d.runtime.nics, ...d.runtime.disks].map((x) => `${x.uuid}@${x.pci}`).sort();
    assert.deepEqual(slots(after), slots(before));
  });
});
