/**
 * q35 and the device tree through the whole stack (gnt-masterd, gnt-noded,
 * the CLI, the real guest): `gnt-instance add -H machine=q35`, hot-adds that
 * land in root ports, `gnt-instance info` showing the tree, and a clean
 * `gnt-cluster verify` (the root ports are no finding).
 */
import * as assert from 'node:assert/strict';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

interface Details {
  runtime: { nics: { pci: number; pciBus: string; deviceId: string }[]; disks: { pci: number; pciBus: string; deviceId: string }[]; guest: { known: boolean; nics: string[]; disks: string[] } };
}

describe('q35 through the CLI: root ports, hotplug and the device tree (masterd, noded, CLI, real guest)', function () {
  this.timeout(300_000);
  const c = new TestCluster();

  before(async () => {
    const guest = guestFiles();
    await c.init();
    await c.addNode('node1');
    c.ok(
      await c.gntAsync('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '-H', 'machine=q35', '--disk', 'size=16M', 'q1'),
    );
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', 'q1');
    await c.destroy();
  });

  it('refuses pci_bridges on a q35 machine, naming the key', () => {
    const guest = guestFiles();
    const r = c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '-H', 'machine=q35,pci_bridges=2', 'q2');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /hvparam pci_bridges is for pc machines; a q35 machine gets pcie_root_ports/);
  });

  it('hot-adds a NIC and a disk into root ports, the guest sees them, info shows the tree, verify is clean', async () => {
    const added = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add', 'q1'));
    // The job log names the root port the NIC went into.
    assert.match(added.stdout, /hot-added at PCI slot 0 of rp\d+ \(nic-[0-9a-f]+-rp\d+-0\)/);
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=8M', 'q1'));
    const d = await c.waitGuest<Details>('q1', (x) => x.runtime.guest.nics.length === 1 && x.runtime.guest.disks.length === 2, 'one NIC and two disks');
    assert.deepEqual(d.runtime.disks.map((x) => `${x.pciBus}:${x.pci}`), ['rp1:0', 'rp3:0']);
    assert.deepEqual(d.runtime.nics.map((x) => `${x.pciBus}:${x.pci}`), ['rp2:0']);
    // The guest sees each behind its own port (bus 01..03, slot 0).
    for (const line of [...d.runtime.guest.nics, ...d.runtime.guest.disks]) assert.match(line, / 0000:0[1-3]:00\.0( |$)/);
    const text = c.ok(c.gnt('gnt-instance', 'info', 'q1')).stdout;
    assert.match(text, /Device tree \(node runtime\):\n\s+Bus\s+Bus kind\s+Place\s+Device id\s+Kind\n/);
    assert.match(text, /rp1\s+PCIe root port\s+slot 0\s+disk-[0-9a-f]+-rp1-0\s+disk\n/);
    assert.match(text, /rp2\s+PCIe root port\s+slot 0\s+nic-[0-9a-f]+-rp2-0\s+NIC\n/);
    assert.match(text, /Hypervisor parameters: .*machine=q35/);
    const v = c.gnt('gnt-cluster', 'verify');
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
