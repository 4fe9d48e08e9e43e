/**
 * gnt-instance grow-disk and live I/O limits through the whole system (CLI,
 * gnt-masterd, gnt-noded, a real guest): a virtio-blk and a SCSI disk grown
 * live (the guest's sectors), a shrink refused with config, node and QEMU
 * unchanged, --disk N:iops_max=.. live and visible in QEMU's query-block and
 * gnt-instance info, kept across stop/start and a live migration to a second
 * node (shared storage), measured through the device's BlockBackend, and a
 * grow of a stopped instance that the guest sees at its start.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { QmpClient } from '../../src/hypervisor/qmp-client';
import { queryIoLimits } from '../../src/hypervisor/disk-io-limits';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';
import { qemuIoReadRate } from '../support/qemu-io';

interface Details {
  instance: { node: string; disks: { uuid: string; index: number; sizeBytes: string; diskBus: string; ioLimits: Record<string, string> }[] };
  runtime: {
    running: boolean;
    disks: { uuid: string; deviceId: string; diskBus: string; sizeBytes: string; ioLimits: Record<string, string> | null }[];
    guest: { known: boolean; disks: string[] };
  };
}

const NAME = 'grow1';
const MiB = 1024 * 1024;
const sectors = (d: Details): number[] => d.runtime.guest.disks.map((s) => Number(s.split(' ')[1]));
const failed = (r: CliRun, re: RegExp): void => {
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stdout + r.stderr, re);
};

describe('grow-disk and I/O limits through CLI, master and node (real guest, two nodes)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const info = (): Details => c.instanceInfo<Details>(NAME);
  const waitGuest = (pred: (d: Details) => boolean, what: string): Promise<Details> => c.waitGuest<Details>(NAME, pred, what);
  /** Runs `fn` on the test QMP socket of the instance's QEMU on its node. */
  const withQmp = async <T>(fn: (q: QmpClient, runtimeDir: string) => Promise<T>): Promise<T> => {
    const dir = path.join(c.node(info().instance.node).dataDir, NAME);
    const q = await QmpClient.connect(path.join(dir, 'qmp-test.sock'));
    try {
      return await fn(q, dir);
    } finally {
      q.close();
    }
  };
  const blkDevice = (): string => info().runtime.disks.find((d) => d.diskBus !== 'scsi')!.deviceId;
  const limitsInQemu = (): Promise<Record<string, number> | undefined> => withQmp(async (q) => (await queryIoLimits(q)).get(blkDevice()));

  before(async () => {
    const g = guestFiles();
    await c.init();
    const shared = c.dir('shared-storage');
    await c.addNode('node1', { storageDir: shared, extraArgs: ['--test-monitor'] });
    await c.addNode('node2', { storageDir: shared, extraArgs: ['--test-monitor'] });
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--maxmem', '512M', '--kernel', g.kernel, '--initrd', g.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', '--disk', 'size=8M,bus=scsi,iops_wr_max=20,bps_rd_max=2M', NAME),
    );
    await waitGuest((d) => sectors(d).includes(32768) && sectors(d).includes(16384), 'both disks');
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it('applies the limits given at instance add (a SCSI disk: iops_wr_max=20, bps_rd_max=2M) at the first start', async () => {
    const d = info();
    const scsi = d.runtime.disks.find((x) => x.diskBus === 'scsi')!;
    assert.deepEqual(await withQmp(async (q) => (await queryIoLimits(q)).get(scsi.deviceId)), { iops_wr: 20, bps_rd: 2 * MiB });
    assert.equal(Number(d.instance.disks[1].ioLimits.iopsWr), 20);
  });

  it('grows the virtio-blk disk by 8M live: config, node and guest have 24M', async () => {
    const r = c.ok(c.gnt('gnt-instance', 'grow-disk', NAME, '0', '8M'));
    assert.match(r.stdout, /size=24M: live/);
    const d = await waitGuest((x) => sectors(x).includes(49152), 'the grown disk (49152 sectors)');
    assert.equal(Number(d.instance.disks[0].sizeBytes), 24 * MiB);
    assert.equal(Number(d.runtime.disks.find((x) => x.uuid === d.instance.disks[0].uuid)!.sizeBytes), 24 * MiB);
  });

  it('grows the SCSI disk to 20M (--absolute) live', async () => {
    c.ok(c.gnt('gnt-instance', 'grow-disk', '--absolute', NAME, '1', '20M'));
    const d = await waitGuest((x) => sectors(x).includes(40960), 'the grown SCSI disk (40960 sectors)');
    assert.equal(Number(d.instance.disks[1].sizeBytes), 20 * MiB);
  });

  it('verify finds no difference after the grows (QEMU has the recorded sizes)', () => {
    const r = c.ok(c.gnt('gnt-instance', 'verify', NAME));
    assert.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('ERROR')), []);
  });

  it('refuses a shrink and an equal size, naming both sizes; config, node and guest unchanged', async () => {
    const before = info();
    failed(c.gnt('gnt-instance', 'grow-disk', '--absolute', NAME, '0', '16M'), /asked size 16M \(16777216 bytes\) is not larger than its current size 24M \(25165824 bytes\); a disk can only grow/);
    failed(c.gnt('gnt-instance', 'grow-disk', '--absolute', NAME, '0', '24M'), /not larger than its current size 24M/);
    failed(c.gnt('gnt-instance', 'grow-disk', NAME, '7', '1G'), /disk index 7 is out of range: instance grow1 has 2 disks/);
    const after = info();
    assert.deepEqual(after.instance.disks, before.instance.disks);
    assert.deepEqual(after.runtime.disks.map((x) => x.sizeBytes), before.runtime.disks.map((x) => x.sizeBytes));
    assert.ok(sectors(after).includes(49152));
  });

  let unlimited = 0;
  let limited = 0;
  it('sets iops_max=50 live: info, node record and QEMU have it; reads through the device run at most at the limit', async () => {
    unlimited = await withQmp((q, dir) => qemuIoReadRate(q, path.join(dir, 'qemu.log'), `${blkDevice()}/virtio-backend`, 40));
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '0:iops_max=50,bps_rd_max=4M', NAME));
    assert.match(r.stdout, /io_limits=iops=50, bps_rd=4194304: live/);
    const d = info();
    assert.equal(Number(d.instance.disks[0].ioLimits.iops), 50);
    assert.equal(Number(d.runtime.disks.find((x) => x.uuid === d.instance.disks[0].uuid)!.ioLimits!.iops), 50);
    assert.deepEqual(await limitsInQemu(), { iops: 50, bps_rd: 4 * MiB });
    assert.match(c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout, /iops=50, bps_rd=4194304/);
    limited = await withQmp((q, dir) => qemuIoReadRate(q, path.join(dir, 'qemu.log'), `${blkDevice()}/virtio-backend`, 40));
    console.log(`      4 KiB reads through the device (median of 40): ${unlimited} ops/s without a limit, ${limited} ops/s with iops_max=50`);
    assert.ok(limited <= 75, `with iops_max=50: ${limited} ops/s`);
    assert.ok(unlimited > 150, `without a limit: ${unlimited} ops/s`);
  });

  it('refuses iops_max with iops_rd_max (merged with the current limits) and changes nothing', async () => {
    failed(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '0:iops_rd_max=10', NAME), /iops_max and iops_rd_max cannot both be set.*set iops_max=0/);
    failed(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '0:bps_max=1M,bps_wr_max=1M', NAME), /bps_max and bps_wr_max cannot both be set/);
    assert.deepEqual(await limitsInQemu(), { iops: 50, bps_rd: 4 * MiB });
  });

  it('hot-adds a disk with limits (--disk add:size=8M,iops_max=30): QEMU applies them at once', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=8M,iops_max=30', NAME));
    const d = await waitGuest((x) => sectors(x).includes(16384), 'the new disk (16384 sectors)');
    const added = d.runtime.disks.find((x) => x.uuid === d.instance.disks[2].uuid)!;
    assert.equal(Number(d.instance.disks[2].ioLimits.iops), 30);
    assert.deepEqual(await withQmp(async (q) => (await queryIoLimits(q)).get(added.deviceId)), { iops: 30 });
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '2:remove', NAME));
  });

  it('keeps the limits across stop and start', async () => {
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    c.ok(c.gnt('gnt-instance', 'start', NAME));
    await waitGuest((x) => sectors(x).includes(49152), 'the disks after the start');
    assert.deepEqual(await limitsInQemu(), { iops: 50, bps_rd: 4 * MiB });
  });

  it('keeps the limits across a live migration to node2 (set before the guest resumes there)', async () => {
    c.ok(c.gnt('gnt-instance', 'migrate', '-n', 'node2', NAME));
    assert.equal(info().instance.node, 'node2');
    assert.deepEqual(await limitsInQemu(), { iops: 50, bps_rd: 4 * MiB });
    const rate = await withQmp((q, dir) => qemuIoReadRate(q, path.join(dir, 'qemu.log'), `${blkDevice()}/virtio-backend`, 40));
    assert.ok(rate <= 75, `on node2 with iops_max=50: ${rate} ops/s`);
  });

  it('removes a limit with 0', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '0:iops_max=0', NAME));
    assert.deepEqual(await limitsInQemu(), { bps_rd: 4 * MiB });
    assert.equal(Number(info().instance.disks[0].ioLimits.iops), 0);
  });

  it('grows a disk of the stopped instance; the guest sees it at the start', async () => {
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    const r = c.ok(c.gnt('gnt-instance', 'grow-disk', NAME, '0', '8M'));
    assert.match(r.stdout, /size=32M: next start/);
    assert.equal(Number(info().instance.disks[0].sizeBytes), 32 * MiB);
    c.ok(c.gnt('gnt-instance', 'start', NAME));
    await waitGuest((x) => sectors(x).includes(65536), 'the disk grown while stopped (65536 sectors)');
  });
});
