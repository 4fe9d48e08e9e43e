import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { QmpUnavailableError } from '../../src/hypervisor/errors';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { buildFixedCommand } from '../../src/hypervisor/qemu-command';
import {
  bootGuest,
  guestFiles,
  makeDiskFile,
  netInterfaces,
  newUuid,
  slotAddr,
  tempDir,
  BOOT_TIMEOUT_MS,
  SEEN_TIMEOUT_MS,
  type BootedGuest,
  testHostPaths,
} from '../support/guest';
import { runtimeOf, runtimeTextOf } from '../support/runtime-text';

const MiB = 1024 * 1024;

describe('stop and start from the runtime file', function () {
  let g: BootedGuest;
  let storage: string;

  before(async () => {
    storage = tempDir('storage');
    // One NIC and one disk from creation; more are hot-added below.
    g = await bootGuest({
      storageDir: storage,
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
    const reopened = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths });
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

  it('starts from a Ganeti old-style 3-entry runtime file and rewrites it as version 2', async () => {
    const dataDir = tempDir('legacy');
    const { kernel, initrd } = guestFiles();
    const kvmCmd = buildFixedCommand({ name: 'legacy1', memoryMiB: 256, vcpus: 1, kernel, initrd, kernelArgs: 'console=ttyS0 quiet panic=-1' });
    const paths = instancePaths(dataDir, 'legacy1');
    fs.mkdirSync(paths.dir, { mode: 0o700 });
    // Ganeti's old format: [kvm_cmd, nics, hvparams]; NICs with neither pci nor uuid.
    fs.writeFileSync(paths.runtimeFile, JSON.stringify([kvmCmd, [{ mac: '52:54:00:66:00:01', nicparams: { mode: 'bridged', link: '' } }], {}]));
    const inst = KvmInstance.open(dataDir, 'legacy1', { hostPaths: testHostPaths(dataDir) });
    assert.deepEqual(inst.runtime.block_devices, []);
    try {
      await inst.start();
      const con = new GuestConsole(inst.paths.consoleLog);
      await con.waitFor((s) => s.nets.some((n) => n.mac === '52:54:00:66:00:01'), BOOT_TIMEOUT_MS, 'the legacy NIC');
      const saved = runtimeOf(paths.runtimeFile);
      assert.equal(saved.version, 2);
      assert.deepEqual(saved.block_devices, []);
      assert.equal(saved.nics[0].pci, 4, 'given the first free slot');
      assert.match(saved.nics[0].uuid, /^[0-9a-f-]{36}$/, 'given a uuid so it can be hot-removed');
      // and a disk can be hot-added next to it
      const disk = await inst.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(dataDir, 'new.img', 4 * MiB) });
      assert.equal(disk.pci, 5);
      await con.waitFor((s) => s.blks.some((b) => b.pci === slotAddr(5)), SEEN_TIMEOUT_MS, 'the new disk');
    } finally {
      await inst.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('reports a clear error when the QMP socket is gone, and changes nothing', async () => {
    const dataDir = tempDir('gone');
    try {
      const probe = KvmInstance.create(dataDir, { name: 'not-running', memoryMiB: 128, vcpus: 1, kernel: '/nonexistent' });
      const taps = netInterfaces();
      const text = runtimeTextOf(probe.paths.runtimeFile);
      await assert.rejects(probe.hotAddNic({ uuid: newUuid(), mac: '52:54:00:55:00:09' }), /instance not-running is not running/);
      const mon = probe.monitor();
      await assert.rejects(mon, (e: unknown) =>
        e instanceof QmpUnavailableError && /cannot reach the QEMU monitor at .*qmp\.sock: .*No such file or directory \(is the instance running\?\)/.test(e.message),
      );
      assert.equal(runtimeTextOf(probe.paths.runtimeFile), text);
      assert.deepEqual(netInterfaces(), taps);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
