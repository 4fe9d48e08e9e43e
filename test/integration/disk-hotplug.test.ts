import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { diskId } from '../../src/hypervisor/disk';
import { DeviceNotFoundError, InvalidArgumentError } from '../../src/hypervisor/errors';
import {
  bootGuest,
  makeDiskFile,
  newUuid,
  openFds,
  sh,
  slotAddr,
  tempDir,
  SEEN_TIMEOUT_MS,
  type BootedGuest,
} from '../support/guest';
import { runtimeTextOf } from '../support/runtime-text';

const MiB = 1024 * 1024;

describe('disk hotplug against the real guest', function () {
  let g: BootedGuest;
  let storage: string;

  before(async () => {
    storage = tempDir('storage');
    // Disks beneath the test's storage dir; loop devices allowed explicitly (the block-device case).
    g = await bootGuest({ storageDir: storage, blockDevices: ['/dev/loop*'] });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  const runtimeText = (): string => runtimeTextOf(g.instance.paths.runtimeFile);

  async function qemuFdsets(): Promise<Array<{ 'fdset-id': number; fds: Array<{ opaque?: string }> }>> {
    const mon = await g.instance.monitor();
    return mon.execute('query-fdsets');
  }

  async function blockNodes(): Promise<string[]> {
    const mon = await g.instance.monitor();
    const nodes = await mon.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
    return nodes.map((n) => n['node-name']);
  }

  async function addSeeRemove(path: string, bytes: number): Promise<void> {
    await g.instance.monitor();
    const fdsBefore = openFds();
    const uuid = newUuid();
    const disk = await g.instance.hotAddDisk({ uuid, path });
    const slot = disk.pci as number;
    const seen = await g.console.waitFor(
      (s) => s.blks.some((b) => b.pci === slotAddr(slot)),
      SEEN_TIMEOUT_MS,
      `a disk at ${slotAddr(slot)}`,
    );
    assert.equal(seen.blks.find((b) => b.pci === slotAddr(slot))?.sectors, bytes / 512, 'size seen by the guest');
    assert.deepEqual(openFds(), fdsBefore, 'our copy of the disk fd is closed');
    const id = diskId(disk, slot);
    assert.ok((await blockNodes()).includes(id));

    await g.instance.hotRemoveDisk(uuid);
    await g.console.waitFor((s) => !s.blks.some((b) => b.pci === slotAddr(slot)), SEEN_TIMEOUT_MS, 'the disk gone');
    assert.ok(!(await blockNodes()).includes(id), 'block node deleted');
    assert.ok(!(await qemuFdsets()).some((s) => s.fds.some((f) => f.opaque === id)), 'fdset removed');
    assert.equal(g.instance.runtime.block_devices.length, 0);
    assert.deepEqual(openFds(), fdsBefore);
  }

  it('hot-adds a regular file disk with the right size, then removes it', async () => {
    await addSeeRemove(makeDiskFile(storage, 'file-disk.img', 64 * MiB), 64 * MiB);
  });

  it('hot-adds a block device (a loop device) with the right size, then removes it', async () => {
    const backing = makeDiskFile(storage, 'loop-backing.img', 48 * MiB);
    const loop = sh('losetup', ['--find', '--show', backing]).trim();
    try {
      assert.ok(fs.statSync(loop).isBlockDevice());
      await addSeeRemove(loop, 48 * MiB);
    } finally {
      sh('losetup', ['-d', loop]);
    }
  });

  it('keeps two disks on distinct slots and removes them in any order', async () => {
    const a = await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'a.img', 16 * MiB) });
    const b = await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'b.img', 32 * MiB) });
    assert.notEqual(a.pci, b.pci);
    await g.console.waitFor((s) => s.blks.filter((x) => x.pci !== '-').length === 2, SEEN_TIMEOUT_MS, 'two disks');
    await g.instance.hotRemoveDisk(a.uuid);
    await g.instance.hotRemoveDisk(b.uuid);
    await g.console.waitFor((s) => s.blks.length === 0, SEEN_TIMEOUT_MS, 'no disks');
  });

  describe('bad input is refused with a clear error and changes nothing', () => {
    let before: string;
    let fds: number[];
    let fdsets: number;
    beforeEach(async () => {
      before = runtimeText();
      fdsets = (await qemuFdsets()).length;
      fds = openFds();
    });
    afterEach(async () => {
      assert.equal(runtimeText(), before, 'runtime file unchanged');
      assert.deepEqual(openFds(), fds, 'no fd leaked');
      assert.equal((await qemuFdsets()).length, fdsets, 'no fdset left in QEMU');
    });

    it('a disk path that does not exist', async () => {
      await assert.rejects(g.instance.hotAddDisk({ uuid: newUuid(), path: `${storage}/missing.img` }), (e: unknown) =>
        e instanceof InvalidArgumentError && e.message === `disk "${storage}/missing.img" does not exist`,
      );
    });

    it('a path that is a directory', async () => {
      fs.mkdirSync(`${storage}/adir`, { recursive: true });
      await assert.rejects(g.instance.hotAddDisk({ uuid: newUuid(), path: `${storage}/adir` }), /is a directory, neither a regular file nor a block device/);
    });

    it('a uuid that is already in use', async () => {
      const disk = await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'dup.img', 8 * MiB) });
      const text = runtimeText();
      await assert.rejects(g.instance.hotAddDisk({ uuid: disk.uuid, path: makeDiskFile(storage, 'dup2.img', 8 * MiB) }), /already has a device with uuid/);
      assert.equal(runtimeText(), text);
      await g.instance.hotRemoveDisk(disk.uuid);
    });

    it('removing a disk the runtime file does not know', async () => {
      await assert.rejects(g.instance.hotRemoveDisk(newUuid()), (e: unknown) => e instanceof DeviceNotFoundError && /has no disk with uuid/.test(e.message));
    });
  });
});
