import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { QmpUnavailableError } from '../../src/hypervisor/errors';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import {
  bootGuest,
  makeDiskFile,
  netInterfaces,
  newUuid,
  slotAddr,
  tempDir,
  BOOT_TIMEOUT_MS,
  SEEN_TIMEOUT_MS,
  type BootedGuest,
} from '../support/guest';

const MiB = 1024 * 1024;

describe('stop and start from the runtime file', function () {
  let g: BootedGuest;
  let storage: string;

  before(async () => {
    storage = tempDir('storage');
    // One NIC and one disk from creation; more are hot-added below.
    g = await bootGuest({
      nics: [{ uuid: newUuid(), mac: '52:54:00:55:00:01' }],
      disks: [{ uuid: newUuid(), path: makeDiskFile(storage, 'boot-data.img', 8 * MiB) }],
    });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  it('brings hot-added devices back at the same PCI slots', async () => {
    // Leave a gap: add two NICs and remove the first, so the layout is not
    // what a fresh numbering would give.
    const gap = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:55:00:02' });
    const nic = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:55:00:03' });
    await g.instance.hotRemoveNic(gap.uuid);
    const disk = await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'hot.img', 40 * MiB) });
    const before = await g.console.waitFor(
      (s) => s.nets.length === 2 && s.blks.length === 2,
      SEEN_TIMEOUT_MS,
      'two NICs and two disks',
    );

    await g.instance.stop();
    assert.equal(g.instance.pid, undefined);
    assert.deepEqual(netInterfaces(), ['lo'], 'taps went away with QEMU');

    // A fresh object, as a restarted node daemon would have.
    const reopened = KvmInstance.open(g.dataDir, g.instance.name);
    fs.writeFileSync(reopened.paths.consoleLog, '');
    await reopened.start();
    const console = new GuestConsole(reopened.paths.consoleLog);
    const after = await console.waitFor((s) => s.nets.length === 2 && s.blks.length === 2, BOOT_TIMEOUT_MS, 'devices after restart');
    const view = (s: typeof after): string[] =>
      [...s.nets.map((n) => `${n.mac}@${n.pci}`), ...s.blks.map((b) => `${b.sectors}@${b.pci}`)].sort();
    assert.deepEqual(view(after), view(before));
    assert.ok(after.nets.some((n) => n.mac === '52:54:00:55:00:03' && n.pci === slotAddr(nic.pci as number)));
    assert.ok(after.blks.some((b) => b.sectors === (40 * MiB) / 512 && b.pci === slotAddr(disk.pci as number)));
    assert.ok(!after.nets.some((n) => n.mac === '52:54:00:55:00:02'));

    // and the reopened instance can remove a device hot-added before the restart
    await reopened.hotRemoveNic(nic.uuid);
    await console.waitFor((s) => s.nets.length === 1, SEEN_TIMEOUT_MS, 'NIC removed after restart');
    g.instance.disconnect();
    g.instance = reopened;
  });

  it('reports a clear error when the QMP socket is gone, and changes nothing', async () => {
    const dataDir = tempDir('gone');
    try {
      const probe = KvmInstance.create(dataDir, { name: 'not-running', memoryMiB: 128, vcpus: 1, kernel: '/nonexistent' });
      const taps = netInterfaces();
      const text = fs.readFileSync(probe.paths.runtimeFile, 'utf8');
      await assert.rejects(probe.hotAddNic({ uuid: newUuid(), mac: '52:54:00:55:00:09' }), /instance not-running is not running/);
      const mon = probe.monitor();
      await assert.rejects(mon, (e: unknown) =>
        e instanceof QmpUnavailableError && /cannot reach the QEMU monitor at .*qmp\.sock: .*No such file or directory \(is the instance running\?\)/.test(e.message),
      );
      assert.equal(fs.readFileSync(probe.paths.runtimeFile, 'utf8'), text);
      assert.deepEqual(netInterfaces(), taps);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
