/**
 * SCSI disks and pmem through the whole system (CLI, gnt-masterd, gnt-noded,
 * a real guest): --disk ...,bus=scsi at add and with --hotplug, removal by
 * index, type=pmem with its up-front refusal to be removed live, the CLI's
 * refusals, and gnt-instance verify for a SCSI disk QEMU lost and one QEMU
 * has that no record names.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deleteDevice } from '../../src/hypervisor/qdev';
import { QmpClient } from '../../src/hypervisor/qmp-client';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';

interface Details {
  instance: { disks: { uuid: string; diskBus: string; diskType: string; index: number }[] };
  runtime: {
    running: boolean;
    disks: { uuid: string; deviceId: string; diskBus: string; diskType: string; scsiAddress: string; pci: number }[];
    guest: { known: boolean; disks: string[] };
  };
}

const NAME = 'scsi1';
const MiB = 1024 * 1024;
const lines = (r: CliRun, severity: string): string[] => r.stdout.split('\n').filter((l) => l.startsWith(`${severity}: `));
/** The guest's SCSI disks as "T:L=sectors". */
const guestScsi = (d: Details): string[] =>
  d.runtime.guest.disks.map((s) => s.split(' ')).filter((f) => f[3]).map((f) => `${f[3].split(':').slice(2).join(':')}=${f[1]}`).sort();

describe('SCSI disks and pmem through CLI, master and node (real guest)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const info = (): Details => c.instanceInfo<Details>(NAME);

  before(async () => {
    const guest = guestFiles();
    await c.init();
    await c.addNode('node1');
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--maxmem', '512M', '--kernel', guest.kernel, '--initrd', guest.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M,bus=scsi', '--disk', 'size=8M', NAME),
    );
    await c.waitGuest<Details>(NAME, (d) => guestScsi(d).length === 1, 'the SCSI disk of the spec');
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it('refuses bad bus/type values in the CLI, naming them, and changes nothing', () => {
    const before = info().instance.disks.length;
    for (const [arg, re] of [
      ['add:size=8M,bus=ide', /bus=.*ide.* is not known/],
      ['add:size=8M,type=cdrom', /type=.*cdrom.* is not known/],
      ['add:size=8M,bus=scsi,type=pmem', /bus=scsi and type=pmem do not go together/],
    ] as const) {
      const r = c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', arg, NAME);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr + r.stdout, re);
    }
    assert.equal(info().instance.disks.length, before);
  });

  it('hot-adds SCSI disks (the controller came with the spec) and removes one by index; config and guest agree', async () => {
    const first = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=24M,bus=scsi', NAME));
    // The job log names where the disk went: a SCSI address, not a PCI slot.
    assert.match(first.stdout, /hot-added at SCSI address scsi0:\d+:\d+ \(scsi-/);
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=32M,bus=scsi', NAME));
    const d = await c.waitGuest<Details>(NAME, (x) => guestScsi(x).length === 3, 'three SCSI disks');
    assert.deepEqual(guestScsi(d), ['0:0=32768', '1:0=49152', '2:0=65536']);
    assert.deepEqual(d.instance.disks.map((x) => `${x.index}:${x.diskBus}`), ['0:scsi', '1:virtio', '2:scsi', '3:scsi']);
    const scsi = d.runtime.disks.filter((x) => x.diskBus === 'scsi');
    assert.deepEqual(scsi.map((x) => x.scsiAddress).sort(), ['scsi0:0:0', 'scsi0:1:0', 'scsi0:2:0']);
    assert.ok(scsi.every((x) => x.pci === -1), 'SCSI disks take no PCI slot');
    const infoText = c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout;
    assert.match(infoText, /scsi scsi0:1:0/);
    // disk 2 is the one at target 1 (24 MiB)
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '2:remove', NAME));
    const after = await c.waitGuest<Details>(NAME, (x) => guestScsi(x).length === 2, 'two SCSI disks');
    assert.deepEqual(guestScsi(after), ['0:0=32768', '2:0=65536']);
    assert.equal(after.instance.disks.length, 3);
  });

  it('hot-adds a pmem device the guest sees with its size; a live remove is refused with the reason and the disk stays', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=128M,type=pmem', NAME));
    const d = await c.waitGuest<Details>(NAME, (x) => x.runtime.guest.disks.some((s) => s.startsWith('pmem')), 'the pmem device');
    assert.ok(d.runtime.guest.disks.some((s) => s.startsWith(`pmem0 ${(128 * MiB) / 512} `)));
    const idx = d.instance.disks.find((x) => x.diskType === 'pmem')?.index as number;
    const r = c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', `${idx}:remove`, NAME);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /QEMU cannot hot-unplug a virtio-pmem device/);
    assert.ok(info().instance.disks.some((x) => x.diskType === 'pmem'), 'still configured');
    const big = c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=512M,type=pmem', NAME);
    assert.notEqual(big.code, 0);
    assert.match(big.stderr + big.stdout, /256 MiB of memory device room .*pmem 128 MiB, so 128 MiB are left and a 512 MiB pmem device does not fit/);
  });

  it('a pmem device removed without --hotplug goes at the next stop and start; SCSI disks come back at their addresses', async () => {
    const d = info();
    const pmem = d.instance.disks.find((x) => x.diskType === 'pmem') as Details['instance']['disks'][number];
    const scsiBefore = guestScsi(d);
    c.ok(c.gnt('gnt-instance', 'modify', '--disk', `${pmem.index}:remove`, NAME));
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    c.ok(c.gnt('gnt-instance', 'start', NAME));
    const after = await c.waitGuest<Details>(NAME, (x) => x.runtime.running && guestScsi(x).length === scsiBefore.length, 'the SCSI disks after the restart');
    assert.deepEqual(guestScsi(after), scsiBefore);
    assert.ok(!after.runtime.guest.disks.some((s) => s.startsWith('pmem')), 'no pmem device after the restart');
    assert.ok(!after.instance.disks.some((x) => x.diskType === 'pmem'));
    assert.ok(!fs.existsSync(path.join(c.node('node1').storageDir, NAME, `${pmem.uuid}.img`)), 'its file deleted');
  });

  it('verify reports a SCSI disk QEMU lost and a SCSI disk QEMU has that no record names', async () => {
    assert.deepEqual(lines(c.ok(c.gnt('gnt-instance', 'verify', NAME)), 'ERROR'), []);
    const d = info();
    const lost = d.runtime.disks.find((x) => x.diskBus === 'scsi') as Details['runtime']['disks'][number];
    const node = c.node('node1');
    const dir = path.join(node.dataDir, NAME);
    await c.killNode('node1', 'SIGTERM');
    const qmp = await QmpClient.connect(path.join(dir, 'qmp.sock'));
    try {
      await deleteDevice(qmp, lost.deviceId, 30_000);
      // QEMU (unprivileged) opens no file of ours: a null block node will do.
      await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'strayscsi', size: 4 * MiB });
      await qmp.execute('device_add', { driver: 'scsi-hd', id: 'strayscsi', drive: 'strayscsi', bus: 'scsi0.0', 'scsi-id': 9, lun: 0 });
    } finally {
      qmp.close();
    }
    await c.restartNode('node1');
    const r = c.gnt('gnt-instance', 'verify', NAME);
    assert.notEqual(r.code, 0, r.stdout);
    const errors = lines(r, 'ERROR');
    assert.ok(errors.some((l) => l.includes(lost.deviceId) && /QEMU has no such device/.test(l)), r.stdout);
    assert.ok(errors.some((l) => l.includes('strayscsi') && /does not record it/.test(l)), r.stdout);
    // --fix: the stray LUN goes (device_del, its block node released), the lost disk's record is dropped
    c.gnt('gnt-instance', 'verify', '--fix', NAME);
    const again = c.gnt('gnt-instance', 'verify', NAME);
    assert.ok(!lines(again, 'ERROR').some((l) => l.includes('strayscsi') || l.includes(lost.deviceId)), again.stdout);
    await c.waitGuest<Details>(NAME, (x) => !guestScsi(x).some((s) => s.startsWith('9:0=')), 'the stray LUN gone from the guest');
  });
});
