/**
 * Live disk grow and I/O limits at the hypervisor layer, against the real
 * guest: a virtio-blk and a SCSI disk grown live (the guest's sector count),
 * a shrink refused with nothing changed (file, record, QEMU), a grow of a
 * stopped instance seen at its start, I/O limits in QEMU's query-block after
 * a modify and after stop/start, and measured: reads through the device's
 * own BlockBackend (HMP qemu-io -d, where the guest's I/O is throttled too)
 * run at most at the limit.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { diskId } from '../../src/hypervisor/disk';
import { scsiDiskId } from '../../src/hypervisor/scsi-disk';
import { queryIoLimits } from '../../src/hypervisor/disk-io-limits';
import type { Monitor } from '../../src/hypervisor/qmp-client';
import { qemuIoReadRate } from '../support/qemu-io';
import { bootGuest, makeDiskFile, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

const MiB = 1024 * 1024;

interface BlockInfo {
  qdev?: string;
  inserted?: { 'node-name'?: string; image?: { 'virtual-size'?: number } };
}

/** QEMU's size of the block node `id` (query-block), bytes. */
async function qemuSize(mon: Monitor, id: string): Promise<number | undefined> {
  const list = await mon.execute<BlockInfo[]>('query-block');
  return list.find((b) => b.inserted?.['node-name'] === id)?.inserted?.image?.['virtual-size'];
}

describe('disk grow and I/O limits (hypervisor layer, real guest)', function () {
  this.timeout(300_000);
  let g: BootedGuest;
  let storage: string;
  const blkUuid = randomUUID();
  const scsiUuid = randomUUID();
  let blkFile: string;
  let scsiFile: string;

  const blkRec = () => g.instance.runtime.block_devices.find((d) => d.uuid === blkUuid)!;
  const scsiRec = () => (g.instance.runtime.scsi_disks ?? []).find((d) => d.uuid === scsiUuid)!;
  const blkId = () => diskId(blkRec(), blkRec().pci as number);
  const guestSectors = async (pred: (sectors: number[]) => boolean, what: string) =>
    g.console.waitFor((s) => pred(s.blks.map((b) => b.sectors)), SEEN_TIMEOUT_MS, what);

  before(async () => {
    storage = tempDir('grow-storage');
    g = await bootGuest({ storageDir: storage });
    blkFile = makeDiskFile(storage, 'blk.img', 8 * MiB);
    scsiFile = makeDiskFile(storage, 'scsi.img', 12 * MiB);
    await g.instance.hotAddDisk({ uuid: blkUuid, path: blkFile });
    await g.instance.hotAddScsiDisk({ uuid: scsiUuid, path: scsiFile });
    await guestSectors((s) => s.includes(16384) && s.includes(24576), 'both disks');
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  it('grows a virtio-blk disk live: file, record, QEMU and the guest have the new size', async () => {
    const r = await g.instance.hotModifyDisk(blkUuid, { sizeBytes: 20 * MiB });
    assert.deepEqual(r.applied, ['size=20M: live']);
    assert.equal(fs.statSync(blkFile).size, 20 * MiB);
    assert.equal(blkRec().size_bytes, 20 * MiB);
    assert.equal(blkRec().grow_to, undefined);
    assert.equal(await qemuSize(await g.instance.monitor(), blkId()), 20 * MiB);
    await guestSectors((s) => s.includes(40960) && !s.includes(16384), 'the grown virtio disk (40960 sectors)');
  });

  it('grows a SCSI disk live: the guest sees the new capacity', async () => {
    const r = await g.instance.hotModifyDisk(scsiUuid, { sizeBytes: 30 * MiB });
    assert.deepEqual(r.applied, ['size=30M: live']);
    assert.equal(fs.statSync(scsiFile).size, 30 * MiB);
    assert.equal(await qemuSize(await g.instance.monitor(), scsiDiskId(scsiRec())), 30 * MiB);
    await guestSectors((s) => s.includes(61440), 'the grown SCSI disk (61440 sectors)');
  });

  it('refuses a shrink and an equal size, naming both sizes; file, record and QEMU unchanged', async () => {
    const before = g.instance.runtime;
    for (const size of [10 * MiB, 20 * MiB]) {
      await assert.rejects(g.instance.hotModifyDisk(blkUuid, { sizeBytes: size }), (e: Error) => {
        assert.match(e.message, new RegExp(`asked size ${size / MiB}M \\(${size} bytes\\) is not larger than its current size 20M \\(${20 * MiB} bytes\\); a disk can only grow`));
        return true;
      });
    }
    assert.equal(fs.statSync(blkFile).size, 20 * MiB);
    assert.deepEqual(g.instance.runtime.block_devices, before.block_devices);
    assert.equal(await qemuSize(await g.instance.monitor(), blkId()), 20 * MiB);
  });

  it('refuses a total limit together with its read/write split, and changes nothing', async () => {
    await assert.rejects(g.instance.hotModifyDisk(blkUuid, { ioLimits: { iops: 50, iops_rd: 10 } }), /iops and iops_rd cannot both be set/);
    await assert.rejects(g.instance.hotModifyDisk(blkUuid, { ioLimits: { bps: 50, bps_wr: 10 } }), /bps and bps_wr cannot both be set/);
    await assert.rejects(g.instance.hotModifyDisk(blkUuid, { sizeBytes: 40 * MiB, ioLimits: { iops: 5 } }), /a grow and an I\/O limits change are separate requests/);
    assert.equal(blkRec().io_limits, undefined);
    assert.deepEqual((await queryIoLimits(await g.instance.monitor())).get(blkId()), {});
  });

  let unlimited = 0;
  let limited = 0;
  it('sets I/O limits live: QEMU applies them (query-block) and reads run at most at the limit', async () => {
    const mon = await g.instance.monitor();
    unlimited = await qemuIoReadRate(mon, g.instance.paths.qemuLog, `${blkId()}/virtio-backend`, 40);
    const r = await g.instance.hotModifyDisk(blkUuid, { ioLimits: { iops: 50, bps_rd: 8 * MiB } });
    assert.deepEqual(r.applied, ['io_limits=iops=50, bps_rd=8388608: live']);
    assert.deepEqual(blkRec().io_limits, { iops: 50, bps_rd: 8 * MiB });
    assert.deepEqual((await queryIoLimits(mon)).get(blkId()), { iops: 50, bps_rd: 8 * MiB });
    limited = await qemuIoReadRate(mon, g.instance.paths.qemuLog, `${blkId()}/virtio-backend`, 40);
    console.log(`      4 KiB reads through the device, median of 40: ${unlimited} ops/s without a limit, ${limited} ops/s with iops=50`);
    assert.ok(limited <= 50 * 1.5, `with iops=50 the device read ${limited} ops/s`);
    assert.ok(unlimited > 50 * 3, `without a limit the device read ${unlimited} ops/s`);
  });

  it('re-applies the limits at the next start (runtime file)', async function () {
    await g.restart();
    await g.console.waitFor((s) => s.blks.length >= 2, BOOT_TIMEOUT_MS, 'the disks after the restart');
    assert.deepEqual((await queryIoLimits(await g.instance.monitor())).get(blkId()), { iops: 50, bps_rd: 8 * MiB });
  });

  it('removes a limit with 0 (ioLimits null: all)', async () => {
    await g.instance.hotModifyDisk(blkUuid, { ioLimits: { iops: 0, bps_rd: 8 * MiB } });
    assert.deepEqual((await queryIoLimits(await g.instance.monitor())).get(blkId()), { bps_rd: 8 * MiB });
    await g.instance.hotModifyDisk(blkUuid, { ioLimits: null });
    assert.deepEqual((await queryIoLimits(await g.instance.monitor())).get(blkId()), {});
    assert.equal(blkRec().io_limits, undefined);
  });

  it('grows a disk of a stopped instance (file and record); the guest sees it at the start', async () => {
    await g.instance.stop();
    const r = await g.instance.hotModifyDisk(blkUuid, { sizeBytes: 24 * MiB });
    assert.deepEqual(r.applied, ['size=24M: next start']);
    assert.equal(fs.statSync(blkFile).size, 24 * MiB);
    fs.writeFileSync(g.instance.paths.consoleLog, '');
    await g.instance.start();
    await g.console.waitFor((s) => s.blks.some((b) => b.sectors === 49152), BOOT_TIMEOUT_MS, 'the grown disk after the start (49152 sectors)');
  });
});
