import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { bootGuest, guestFiles, makeDiskFile, newUuid, slotAddr, tempDir, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

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

function procStatus(pid: number): { uid: number; seccomp: number; capEff: string } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string): string => new RegExp(`^${k}:\\s+(\\S+)`, 'm').exec(status)?.[1] ?? '';
  return { uid: Number(field('Uid')), seccomp: Number(field('Seccomp')), capEff: field('CapEff') };
}

interface CliDetails {
  instance: { hvparams: Record<string, string> };
  runtime: { running: boolean; pid: number; guest: { known: boolean; nics: string[]; disks: string[] } };
}

describe('gnt-instance add through the cluster CLI: QEMU unprivileged by default', function () {
  this.timeout(300_000);
  const BRIDGE = 'gntunpbr0';
  const c = new TestCluster();
  const guest = guestFiles();
  const add = (name: string, ...extra: string[]) =>
    c.gntAsync('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
      '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', ...extra, name);

  before(async () => {
    spawnSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', BRIDGE, 'up']);
    await c.init();
    await c.addNode('node1');
  });
  after(async () => {
    for (const name of ['unpriv1', 'rooted1']) c.gnt('gnt-instance', 'remove', name);
    await c.destroy();
    spawnSync('ip', ['link', 'del', BRIDGE]);
  });

  it('refuses bad hvparams at the master, naming the key', () => {
    const r1 = c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '-H', 'unplug_timeout_nic=7200', 'bad1');
    assert.notEqual(r1.code, 0);
    assert.match(r1.stderr, /hvparam unplug_timeout_nic="7200" is not valid: it must be a number of seconds above 0 and at most 3600/);
    const r2 = c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '-H', 'vnc_bind_address=0.0.0.0', 'bad2');
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /unknown parameter "vnc_bind_address"/);
  });

  it('runs a new instance as the unprivileged QEMU user under seccomp with no capabilities; hotplug works in it', async () => {
    c.ok(await add('unpriv1', '--net', `link=${BRIDGE}`));
    const d = await c.waitGuest<CliDetails>('unpriv1', (x) => x.runtime.guest.nics.length === 1 && x.runtime.guest.disks.length === 1, 'its NIC and disk');
    const v = procStatus(d.runtime.pid);
    assert.equal(v.uid, uidOf(QEMU_USER));
    assert.equal(v.seccomp, 2);
    assert.equal(v.capEff, '0000000000000000');
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:e3:00:01,link=${BRIDGE}`, 'unpriv1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=32M', 'unpriv1'));
    await c.waitGuest<CliDetails>('unpriv1', (x) => x.runtime.guest.nics.some((n) => n.includes('52:54:00:e3:00:01')) && x.runtime.guest.disks.some((l) => l.includes(' 65536 ')), 'the hot-added NIC and 32 MiB disk');
  });

  it('-H security_model=none runs QEMU as root', async () => {
    c.ok(await add('rooted1', '-H', 'security_model=none'));
    const d = c.instanceInfo<CliDetails>('rooted1');
    assert.equal(d.runtime.running, true);
    assert.equal(procStatus(d.runtime.pid).uid, 0);
    assert.equal(d.instance.hvparams.security_model, 'none');
  });
});
