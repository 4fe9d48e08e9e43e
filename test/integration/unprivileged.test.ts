import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bootGuest, makeDiskFile, newUuid, slotAddr, tempDir, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

const QEMU_USER = 'gnt-qemu';
const MiB = 1024 * 1024;

function uidOf(user: string): number {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`user ${user} missing: run scripts/setup-host.sh`);
  return Number(line.split(':')[2]);
}

function processUid(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
}

describe('hotplug with QEMU running as an unprivileged user in a chroot', function () {
  let g: BootedGuest;
  let storage: string;
  let chroot: string;

  before(async () => {
    storage = tempDir('storage');
    chroot = tempDir('chroot');
    g = await bootGuest({ storageDir: storage, hvparams: { security_model: 'user', security_domain: QEMU_USER, chroot } });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
    fs.rmSync(chroot, { recursive: true, force: true });
  });

  it('runs QEMU as the dedicated user, inside the chroot', () => {
    const pid = g.instance.pid as number;
    assert.equal(processUid(pid), uidOf(QEMU_USER));
    assert.equal(fs.readlinkSync(`/proc/${pid}/root`), chroot);
  });

  it('QEMU cannot open the disk image by path itself', async () => {
    const disk = makeDiskFile(storage, 'private.img', 8 * MiB);
    fs.chmodSync(disk, 0o600);
    assert.ok(!fs.existsSync(path.join(chroot, disk)), 'the path does not exist inside the chroot');
    const mon = await g.instance.monitor();
    await assert.rejects(
      mon.execute('blockdev-add', { driver: 'file', 'node-name': 'byname', filename: disk }),
      /No such file or directory|Permission denied/,
    );
  });

  it('hot-adds and removes a NIC and a root-owned 0600 disk, all by fd', async () => {
    const disk = makeDiskFile(storage, 'hot.img', 24 * MiB);
    fs.chmodSync(disk, 0o600);
    const nic = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:77:00:01' });
    const d = await g.instance.hotAddDisk({ uuid: newUuid(), path: disk });
    const seen = await g.console.waitFor(
      (s) => s.nets.some((n) => n.mac === '52:54:00:77:00:01') && s.blks.some((b) => b.pci === slotAddr(d.pci as number)),
      SEEN_TIMEOUT_MS,
      'the NIC and the disk',
    );
    assert.equal(seen.blks.find((b) => b.pci === slotAddr(d.pci as number))?.sectors, (24 * MiB) / 512);
    await g.instance.hotRemoveNic(nic.uuid);
    await g.instance.hotRemoveDisk(d.uuid);
    await g.console.waitFor((s) => s.nets.length === 0 && s.blks.length === 0, SEEN_TIMEOUT_MS, 'both gone');
  });
});
