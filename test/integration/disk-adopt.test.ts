/**
 * Adopted block devices (template blockdev) through CLI, master and node
 * with the real guest: a loop device on the node's --block-device allow-list
 * hot-added with --disk add:adopt=/dev/loopN (the guest sees its size,
 * gnt-instance info shows template blockdev), grown by the operator (the
 * backing file, losetup -c) and then with grow-disk (the guest sees the new
 * size; a grow beyond the device is refused, naming both sizes), removed
 * again with the loop device and its data left alone; a device not on the
 * allow-list refused with nothing changed. The test makes its loop devices
 * and deletes them by name afterwards.
 */
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles, tempDir } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';

interface Details {
  instance: { disks: { uuid: string; index: number; sizeBytes: string; template: string; adopt: string }[] };
  runtime: { running: boolean; disks: { uuid: string; path: string; template: string; adopted: boolean; sizeBytes: string }[]; guest: { known: boolean; disks: string[] } };
}

const NAME = 'adopt1';
const MiB = 1024 * 1024;
const MARKER = Buffer.from('gnt-hotplug adopted device: keep me\n');
const sectors = (d: Details): number[] => d.runtime.guest.disks.map((s) => Number(s.split(' ')[1]));
const failed = (r: CliRun, re: RegExp): void => {
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stdout + r.stderr, re);
};
const loopOf = (file: string): string => execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
const loopExists = (dev: string, file: string): boolean => execFileSync('losetup', ['-j', file], { encoding: 'utf8' }).includes(`${dev}:`);

describe('adopted block devices (template blockdev) through CLI, master and node (real guest)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const dir = tempDir('adopt');
  const allowedFile = path.join(dir, 'allowed.img');
  const otherFile = path.join(dir, 'other.img');
  const loops: string[] = [];
  let allowed = '';
  let other = '';
  const info = (): Details => c.instanceInfo<Details>(NAME);
  const waitGuest = (pred: (d: Details) => boolean, what: string): Promise<Details> => c.waitGuest<Details>(NAME, pred, what);

  before(async () => {
    for (const f of [allowedFile, otherFile]) {
      fs.writeFileSync(f, MARKER);
      fs.truncateSync(f, 16 * MiB);
    }
    allowed = loopOf(allowedFile);
    loops.push(allowed);
    other = loopOf(otherFile);
    loops.push(other);
    const g = guestFiles();
    await c.init();
    await c.addNode('node1', { extraArgs: ['--block-device', allowed] });
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--maxmem', '512M', '--kernel', g.kernel, '--initrd', g.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=8M', NAME),
    );
    await waitGuest((d) => sectors(d).includes(16384), 'the first disk');
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
    for (const l of loops) execFileSync('losetup', ['-d', l]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a device that is not on the allow-list, naming it, and changes nothing', () => {
    const before = info();
    failed(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', `add:adopt=${other}`, NAME), new RegExp(`block device "${other}" is not in the node's allow-list \\(gnt-noded --block-device\\)`));
    const after = info();
    assert.deepEqual(after.instance.disks, before.instance.disks);
    assert.deepEqual(after.runtime.disks, before.runtime.disks);
  });

  it('hot-adds the allowed loop device: the guest sees its 16M, info shows template blockdev', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', `add:adopt=${allowed}`, NAME));
    const d = await waitGuest((x) => sectors(x).includes(32768), 'the adopted device (32768 sectors)');
    assert.equal(d.instance.disks[1].template, 'blockdev');
    assert.equal(d.instance.disks[1].adopt, allowed);
    const rt = d.runtime.disks.find((x) => x.uuid === d.instance.disks[1].uuid)!;
    assert.equal(rt.template, 'blockdev');
    assert.equal(rt.adopted, true);
    assert.equal(Number(rt.sizeBytes), 16 * MiB);
    assert.match(c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout, /blockdev/);
  });

  it('refuses a grow beyond the device as it is, naming both sizes; nothing changes', async () => {
    const before = info();
    failed(c.gnt('gnt-instance', 'grow-disk', '--absolute', NAME, '1', '24M'), /the adopted device .* has 16777216 bytes, less than the asked 25165824; grow the device first/);
    assert.deepEqual(info().instance.disks, before.instance.disks);
    assert.ok(sectors(info()).includes(32768));
  });

  it('grows with the device: the operator grows the file and runs losetup -c, grow-disk makes the guest see the new size', async () => {
    fs.truncateSync(allowedFile, 24 * MiB);
    execFileSync('losetup', ['-c', allowed]);
    // The configuration has no size for a device adopted as it was: the first grow names the new total.
    failed(c.gnt('gnt-instance', 'grow-disk', NAME, '1', '8M'), /adopted as it was and the configuration does not know its size \(the device has 24M now\); give the new total size with --absolute/);
    const r = c.ok(c.gnt('gnt-instance', 'grow-disk', '--absolute', NAME, '1', '24M'));
    assert.match(r.stdout, /size=24M: live/);
    let d = await waitGuest((x) => sectors(x).includes(49152), 'the grown adopted device (49152 sectors)');
    assert.equal(Number(d.instance.disks[1].sizeBytes), 24 * MiB);
    // From then on the configuration knows its size: AMOUNT is added to it.
    fs.truncateSync(allowedFile, 32 * MiB);
    execFileSync('losetup', ['-c', allowed]);
    c.ok(c.gnt('gnt-instance', 'grow-disk', NAME, '1', '8M'));
    d = await waitGuest((x) => sectors(x).includes(65536), 'the adopted device grown again (65536 sectors)');
    assert.equal(Number(d.instance.disks[1].sizeBytes), 32 * MiB);
  });

  it('removes it: the guest loses it, the loop device and its backing file stay with their data', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '1:remove', NAME));
    const d = await waitGuest((x) => !sectors(x).includes(65536), 'the adopted device gone from the guest');
    assert.equal(d.instance.disks.length, 1);
    assert.ok(fs.existsSync(allowed), `${allowed} still exists`);
    assert.ok(loopExists(allowed, allowedFile), `${allowed} is still backed by ${allowedFile}`);
    const head = Buffer.alloc(MARKER.length);
    const fd = fs.openSync(allowedFile, 'r');
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    assert.deepEqual(head, MARKER, 'its data is untouched');
    assert.equal(fs.statSync(allowedFile).size, 32 * MiB);
  });
});
