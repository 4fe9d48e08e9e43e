/**
 * Issue 13, RBD: disks on Ceph RBD images through QEMU's own rbd driver,
 * with QEMU unprivileged in a chroot, against a one-node Ceph
 * (scripts/ceph-dev.sh) started for this file and the real guest. The
 * guest (gnt.blkstamp=1) prints the start of each new disk's first sector
 * and then overwrites it: the test checks what it read against what the
 * host put into the image, and reads the guest's stamp back from Ceph.
 */
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { HotplugStepError, type HypervisorError } from '../../src/hypervisor/errors';
import { attachRbdDevice, hotplugConfPath, type RbdHost } from '../../src/hypervisor/rbd-disk';
import { RbdPool, parseRbdMonitors, type RbdPoolConfig } from '../../src/noded/rbd-pool';
import { rbdPath } from '../../src/hypervisor/disk-template';
import { bootGuest, guestFiles, slotAddr, tempDir, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { TestCluster, type TestNode } from '../support/cli-cluster';
import { clientKey, rbdAdmin, rbdImages, startCeph, stopCeph, type TestCeph } from '../support/ceph';

const QEMU_USER = 'gnt-qemu';
const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Details {
  instance: { node: string; disks: { uuid: string; template?: string }[] };
  runtime: {
    running: boolean;
    pid: number;
    disks: { uuid: string; pci: number; template: string; rbdPool: string; rbdImage: string; adopted: boolean; sizeBytes: string }[];
    guest: { known: boolean; disks: string[] };
  };
}

function uidOf(user: string): number {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`user ${user} missing: run scripts/setup-host.sh`);
  return Number(line.split(':')[2]);
}

const processUid = (pid: number): number => Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

/** The first `bytes` of an image, read from Ceph by the admin (rbd export). */
function imageHead(ceph: TestCeph, image: string, bytes = 512): string {
  const out = path.join(path.dirname(ceph.dir), `export-${randomUUID().slice(0, 8)}`);
  try {
    rbdAdmin(ceph, 'export', '--no-progress', `${ceph.pool}/${image}`, out);
    const fd = fs.openSync(out, 'r');
    const buf = Buffer.alloc(bytes);
    fs.readSync(fd, buf, 0, bytes, 0);
    fs.closeSync(fd);
    return buf.toString('latin1');
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/** Creates an image whose first sector starts with `text` (rbd import of a small file). */
function makeImage(ceph: TestCeph, image: string, sizeMiB: number, text: string): void {
  const file = path.join(path.dirname(ceph.dir), `import-${image}`);
  fs.writeFileSync(file, `${text}\n`);
  fs.truncateSync(file, sizeMiB * MiB);
  try {
    rbdAdmin(ceph, 'import', '--no-progress', file, `${ceph.pool}/${image}`);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

async function waitLine(file: string, pred: (lines: string[]) => string | undefined, what: string, timeoutMs = SEEN_TIMEOUT_MS): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = pred(fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`the guest never printed ${what}`);
    await sleep(200);
  }
}

describe('RBD disks (QEMU rbd driver, one-node Ceph)', function () {
  this.timeout(900_000);
  let ceph: TestCeph;

  before(async () => {
    ceph = await startCeph();
  });
  after(async () => {
    await stopCeph(ceph);
  });

  describe('through the cluster CLI, QEMU unprivileged in a chroot, two nodes', function () {
    const c = new TestCluster();
    const nodes: Record<string, TestNode> = {};
    let chroot: string;
    const name = 'rbdvm1';
    const info = (): Details => c.instanceInfo<Details>(name);
    const consoleFile = (): string => path.join(nodes[info().instance.node].dataDir, name, 'console.log');
    const rbdDisks = (d: Details): Details['runtime']['disks'] => d.runtime.disks.filter((x) => x.template === 'rbd');

    before(async () => {
      chroot = tempDir('rbd-chroot');
      await c.init();
      const shared = c.dir('shared-storage');
      const rbdArgs = ['--rbd-monitors', ceph.monitors, '--rbd-pool', ceph.pool, '--rbd-id', ceph.clientId, '--rbd-keyring', ceph.keyring];
      nodes.node1 = await c.addNode('node1', { storageDir: shared, extraArgs: rbdArgs });
      nodes.node2 = await c.addNode('node2', { storageDir: shared, extraArgs: rbdArgs });
      const g = guestFiles();
      c.ok(await c.gntAsync('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', g.kernel, '--initrd', g.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1 gnt.blkstamp=1', '--disk', 'size=16M', '-H', `chroot=${chroot}`, name));
      await c.waitGuest<Details>(name, (d) => d.runtime.guest.disks.length === 1, 'its boot disk');
    });
    after(async () => {
      c.gnt('gnt-instance', 'migrate', '--cleanup', name);
      c.gnt('gnt-instance', 'remove', name);
      await c.destroy();
      fs.rmSync(chroot, { recursive: true, force: true });
    });

    it('runs QEMU as the unprivileged user in the chroot', () => {
      const d = info();
      assert.equal(processUid(d.runtime.pid), uidOf(QEMU_USER));
      assert.equal(fs.readlinkSync(`/proc/${d.runtime.pid}/root`), chroot);
    });

    it('hot-adds a 64 MiB RBD disk the node makes: the guest sees it and writes to it; removed, its image is deleted', async () => {
      const t0 = Date.now();
      c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=64M,template=rbd', name));
      const addMs = Date.now() - t0;
      const d = await c.waitGuest<Details>(name, (x) => x.runtime.guest.disks.some((l) => l.includes(` ${(64 * MiB) / 512} `)), 'the 64 MiB RBD disk');
      const disk = rbdDisks(d)[0];
      assert.ok(disk, 'the node reports an rbd disk');
      assert.equal(disk.rbdPool, ceph.pool);
      assert.equal(disk.rbdImage, `${name}-${disk.uuid}`);
      assert.equal(disk.adopted, false);
      assert.equal(disk.sizeBytes, String(64 * MiB), 'the node reports the image\'s size');
      assert.ok(rbdImages(ceph).includes(disk.rbdImage), 'the image is in the pool');
      const dev = d.runtime.guest.disks.find((l) => l.includes(` ${(64 * MiB) / 512} `) && l.includes(slotAddr(disk.pci)))?.split(' ')[0] as string;
      assert.ok(dev, `the guest has the disk at slot ${disk.pci}`);
      await waitLine(consoleFile(), (lines) => lines.find((l) => l === `gnt-guest stamped ${dev}`), `the stamp of ${dev}`);
      assert.match(imageHead(ceph, disk.rbdImage), new RegExp(`^gnt-guest stamp ${dev} ${(64 * MiB) / 512}\n`), 'the guest\'s write reached the image');
      process.stdout.write(`      (hot-add through the CLI: ${addMs} ms)\n`);
      const index = d.instance.disks.findIndex((x) => x.uuid === disk.uuid);
      c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', `${index}:remove`, name));
      await c.waitGuest<Details>(name, (x) => x.runtime.guest.disks.length === 1, 'only the boot disk');
      assert.ok(!rbdImages(ceph).includes(disk.rbdImage), 'the image the node made is deleted');
    });

    it('keeps an RBD disk across stop and start (boot args): the key never on the command line, its file gone once QEMU is up', async () => {
      c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=48M,template=rbd', name));
      await c.waitGuest<Details>(name, (x) => x.runtime.guest.disks.some((l) => l.includes(` ${(48 * MiB) / 512} `)), 'the 48 MiB RBD disk');
      c.ok(c.gnt('gnt-instance', 'stop', name));
      c.ok(await c.gntAsync('gnt-instance', 'start', name));
      const d = await c.waitGuest<Details>(name, (x) => x.runtime.running && x.runtime.guest.disks.some((l) => l.includes(` ${(48 * MiB) / 512} `)), 'the RBD disk after the restart');
      const cmdline = fs.readFileSync(`/proc/${d.runtime.pid}/cmdline`, 'utf8');
      assert.ok(!cmdline.includes(clientKey(ceph)), 'the key is not on QEMU\'s command line');
      assert.match(cmdline, /secret,id=[^,]+-key,file=/);
      assert.equal(fs.existsSync(path.join(nodes.node1.dataDir, name, 'rbd-key')), false, 'the key file is gone');
      assert.equal(processUid(d.runtime.pid), uidOf(QEMU_USER));
    });

    it('migrates with the RBD disk to node2 and back: no copy, the guest keeps the disk and its data', async () => {
      const before = info();
      const disk = rbdDisks(before)[0];
      for (const [to, from] of [['node2', 'node1'], ['node1', 'node2']]) {
        const con = new GuestConsole(path.join(nodes[from].dataDir, name, 'console.log'));
        const tick = con.lastTick;
        const r = c.ok(c.gnt('gnt-instance', 'migrate', '-n', to, name));
        assert.match(r.stdout, new RegExp(`now runs on node ${to}`));
        const d = await c.waitGuest<Details>(name, (x) => x.instance.node === to && x.runtime.guest.disks.some((l) => l.includes(` ${(48 * MiB) / 512} `)), `the RBD disk on ${to}`);
        assert.deepEqual(rbdDisks(d).map((x) => [x.uuid, x.pci, x.rbdImage]), [[disk.uuid, disk.pci, disk.rbdImage]]);
        assert.equal(fs.existsSync(path.join(nodes[from].dataDir, name)), false, `nothing left on ${from}`);
        const after = new GuestConsole(path.join(nodes[to].dataDir, name, 'console.log'));
        const deadline = Date.now() + 30_000;
        while (after.lastTick <= tick && Date.now() < deadline) await sleep(200);
        assert.ok(after.lastTick > tick, `the guest runs on ${to} without a reboot`);
      }
      assert.match(imageHead(ceph, disk.rbdImage), /^gnt-guest stamp vd[a-z] 98304\n/, 'the data written before the moves is there');
    });

    it('grows the RBD disk live (gnt-instance grow-disk): the image and the guest see the new size, a shrink is refused', async () => {
      const before = info();
      const disk = rbdDisks(before)[0];
      const index = before.instance.disks.findIndex((x) => x.uuid === disk.uuid);
      c.ok(c.gnt('gnt-instance', 'grow-disk', name, String(index), '16M'));
      const d = await c.waitGuest<Details>(name, (x) => x.runtime.guest.disks.some((l) => l.includes(` ${(64 * MiB) / 512} `)), 'the grown RBD disk (64 MiB)');
      const size = Number((JSON.parse(rbdAdmin(ceph, 'info', `${ceph.pool}/${disk.rbdImage}`, '--format', 'json')) as { size: number }).size);
      assert.equal(size, 64 * MiB, 'the image was resized in Ceph');
      assert.equal(rbdDisks(d)[0].sizeBytes, String(64 * MiB), 'the node reports the new size');
      const shrink = c.gnt('gnt-instance', 'grow-disk', '--absolute', name, String(index), '32M');
      assert.notEqual(shrink.code, 0);
      assert.match(`${shrink.stdout}${shrink.stderr}`, /shrink|smaller|only grow/i);
      const again = Number((JSON.parse(rbdAdmin(ceph, 'info', `${ceph.pool}/${disk.rbdImage}`, '--format', 'json')) as { size: number }).size);
      assert.equal(again, 64 * MiB, 'a refused shrink leaves the image');
    });

    it('an image made just before the node crashed goes with the intent at the restart (reconcile), the add fails', async () => {
      const before = new Set(rbdImages(ceph));
      await c.killNode('node1', 'SIGTERM');
      c.node('node1').env.GNT_NODED_CRASH_POINT = 'after-disk-file-created';
      await c.restartNode('node1');
      const add = c.gntAsync('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=32M,template=rbd', name);
      const deadline = Date.now() + 60_000;
      let made: string | undefined;
      while (!made && Date.now() < deadline) {
        made = rbdImages(ceph).find((i) => !before.has(i));
        if (!made) await sleep(200);
      }
      assert.ok(made, 'the node made the image before it crashed');
      const n = c.node('node1');
      while (n.daemon.child.exitCode === null && n.daemon.child.signalCode === null && Date.now() < deadline) await sleep(100);
      delete n.env.GNT_NODED_CRASH_POINT;
      await c.restartNode('node1');
      const r = await add;
      assert.notEqual(r.code, 0, 'the hot-add did not succeed');
      while (rbdImages(ceph).includes(made) && Date.now() < deadline + 30_000) await sleep(300);
      assert.ok(!rbdImages(ceph).includes(made), 'reconciliation deleted the image the crash left behind');
      const d = await c.waitGuest<Details>(name, (x) => x.runtime.running, 'the instance running on');
      assert.ok(!d.runtime.disks.some((x) => x.rbdImage === made), 'no disk names it');
      assert.ok(!d.runtime.guest.disks.some((l) => l.includes(` ${(32 * MiB) / 512} `)), 'the guest never got it');
    });

    it('instance remove deletes the images the node made', async () => {
      const made = rbdDisks(info()).map((x) => x.rbdImage);
      assert.equal(made.length, 1);
      c.ok(c.gnt('gnt-instance', 'stop', name));
      c.ok(c.gnt('gnt-instance', 'remove', name));
      assert.ok(!rbdImages(ceph).includes(made[0]), `${made[0]} was deleted`);
    });
  });

  describe('faults never freeze the guest (hypervisor layer with the node\'s RbdPool, QEMU unprivileged in a chroot)', function () {
    let g: BootedGuest;
    let chroot: string;
    let confDir: string;
    let current: RbdPool;
    // The instance's RBD access, switched between the node's real RbdPool of each case.
    const host: RbdHost = {
      get access() {
        return current.access;
      },
      get confFile() {
        return current.confFile;
      },
      removeImage: (img) => current.host.removeImage(img),
      checkImage: (img) => current.host.checkImage(img),
    };
    const poolWith = (over: Partial<RbdPoolConfig>): RbdPool =>
      new RbdPool({ monitors: parseRbdMonitors(ceph.monitors), pool: ceph.pool, clientId: ceph.clientId, keyring: ceph.keyring, ...over }, { confDir });

    before(async () => {
      chroot = tempDir('rbd-fault-chroot');
      confDir = tempDir('rbd-conf');
      current = poolWith({});
      rbdAdmin(ceph, 'create', `${ceph.pool}/fault1`, '--size', '16');
      g = await bootGuest({
        hvparams: { security_model: 'user', security_domain: QEMU_USER, chroot },
        kernelArgs: 'gnt.blkstamp=1',
        instanceOptions: { rbd: host },
      });
    });
    after(async () => {
      await g?.destroy();
      fs.rmSync(chroot, { recursive: true, force: true });
      fs.rmSync(confDir, { recursive: true, force: true });
    });

    /** Nothing of the disk is left: no record, no block node, no secret object. */
    const assertNothingLeft = async (uuid: string): Promise<void> => {
      assert.ok(!g.instance.runtime.block_devices.some((d) => d.uuid === uuid), 'no runtime record');
      assert.ok(!(g.instance.runtime.scsi_disks ?? []).some((d) => d.uuid === uuid), 'no runtime record');
      const mon = await g.instance.monitor();
      const nodes = await mon.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
      assert.ok(!nodes.some((n) => n['node-name'].includes(uuid.split('-')[0])), 'no block node');
      const objects = await mon.execute<Array<{ name: string; type: string }>>('qom-list', { path: '/objects' });
      assert.ok(!objects.some((o) => o.name.endsWith('-key')), `no secret object (${objects.map((o) => o.name).join(', ')})`);
    };

    /** Runs a failing hot-add and samples the guest's ticks while it is pending. */
    const failingAdd = async (uuid: string, image: string): Promise<{ err: HypervisorError; ms: number; ticks: number[] }> => {
      const ticks: number[] = [];
      let done = false;
      const t0 = Date.now();
      const add = g.instance
        .hotAddDisk({ uuid, path: rbdPath({ pool: ceph.pool, image }), template: 'rbd', rbd: { pool: ceph.pool, image } })
        .then(
          () => assert.fail('the hot-add succeeded'),
          (e: unknown) => e as HypervisorError,
        )
        .finally(() => (done = true));
      while (!done) {
        ticks.push(g.console.lastTick);
        await sleep(250);
      }
      return { err: await add, ms: Date.now() - t0, ticks };
    };

    it('an unreachable monitor fails the hot-add with librados\' words, and the guest keeps running meanwhile', async () => {
      current = poolWith({ monitors: [{ host: '127.0.0.1', port: '1' }] });
      const uuid = randomUUID();
      const r = await failingAdd(uuid, 'fault1');
      assert.ok(r.err instanceof HotplugStepError, String(r.err));
      assert.equal(r.err.code, 'FAILED_PRECONDITION');
      assert.match(r.err.message, /check image: .*authenticate timed out after 5.*couldn't connect to the cluster.*Connection timed out/);
      assert.ok(r.ticks[r.ticks.length - 1] > r.ticks[0], `the guest's console kept reporting during the add (ticks ${r.ticks[0]} -> ${r.ticks[r.ticks.length - 1]})`);
      process.stdout.write(`      (unreachable monitor: failed after ${r.ms} ms, guest ticks ${r.ticks[0]} -> ${r.ticks[r.ticks.length - 1]})\n`);
      await assertNothingLeft(uuid);
    });

    it('should the cluster fail after the check, QEMU\'s own connect is bounded by the conf (5 s) and leaves nothing', async () => {
      const bad = poolWith({ monitors: [{ host: '127.0.0.1', port: '1' }] });
      const mon = await g.instance.monitor();
      const id = 'disk-0bad0bad-pci-30';
      const t0 = Date.now();
      await assert.rejects(
        attachRbdDevice(mon, 'disk', id, { pool: ceph.pool, image: 'fault1' }, bad.access, hotplugConfPath(bad.host, chroot), { driver: 'virtio-blk-pci', id, drive: id, bus: 'pci.0', addr: '0x1e' }),
        /blockdev-add: QEMU refused blockdev-add: error connecting: Connection timed out/,
      );
      process.stdout.write(`      (QEMU's blockdev-add with an unreachable monitor: failed after ${Date.now() - t0} ms)\n`);
      await assertNothingLeft('0bad0bad');
    });

    it('a wrong key fails with "Permission denied"; nothing is left', async () => {
      const keyring = path.join(confDir, 'wrong.keyring');
      const other = execFileSync('ceph-authtool', ['--gen-print-key'], { encoding: 'utf8' }).trim();
      fs.writeFileSync(keyring, `[client.${ceph.clientId}]\n\tkey = ${other}\n`, { mode: 0o600 });
      current = poolWith({ keyring });
      const uuid = randomUUID();
      const r = await failingAdd(uuid, 'fault1');
      assert.equal(r.err.code, 'FAILED_PRECONDITION');
      assert.match(r.err.message, /check image: .*couldn't connect to the cluster! \(Permission denied\)/);
      process.stdout.write(`      (wrong key: failed after ${r.ms} ms)\n`);
      await assertNothingLeft(uuid);
    });

    it('a missing image fails with "No such file or directory"; nothing is left', async () => {
      current = poolWith({});
      const uuid = randomUUID();
      const r = await failingAdd(uuid, 'nosuch-image');
      assert.equal(r.err.code, 'FAILED_PRECONDITION');
      assert.match(r.err.message, /error opening image nosuch-image: \(2\) No such file or directory/);
      process.stdout.write(`      (missing image: failed after ${r.ms} ms)\n`);
      await assertNothingLeft(uuid);
    });

    it('adopts an existing image: the guest reads what the host put in it; removed, the image is kept', async () => {
      current = poolWith({});
      makeImage(ceph, 'adopted1', 32, 'host-pattern-4711');
      const d = await g.instance.hotAddDisk({ uuid: randomUUID(), path: rbdPath({ pool: ceph.pool, image: 'adopted1' }), template: 'rbd', rbd: { pool: ceph.pool, image: 'adopted1' } });
      const s = await g.console.waitFor((x) => x.blks.some((b) => b.pci === slotAddr(d.pci as number)), SEEN_TIMEOUT_MS, 'the adopted disk');
      const dev = s.blks.find((b) => b.pci === slotAddr(d.pci as number))?.name as string;
      assert.equal(s.blks.find((b) => b.name === dev)?.sectors, (32 * MiB) / 512);
      const head = await waitLine(g.instance.paths.consoleLog, (lines) => lines.find((l) => l.startsWith(`gnt-guest blkhead ${dev} `)), `the first sector of ${dev}`);
      assert.equal(head, `gnt-guest blkhead ${dev} host-pattern-4711`, 'the guest read what the host wrote into the image');
      await waitLine(g.instance.paths.consoleLog, (lines) => lines.find((l) => l === `gnt-guest stamped ${dev}`), `the stamp of ${dev}`);
      assert.match(imageHead(ceph, 'adopted1'), new RegExp(`^gnt-guest stamp ${dev} ${(32 * MiB) / 512}\n`), 'and the image holds what the guest wrote');
      await g.instance.hotRemoveDisk(d.uuid);
      await g.console.waitFor((x) => !x.blks.some((b) => b.name === dev), SEEN_TIMEOUT_MS, 'the disk gone');
      assert.ok(rbdImages(ceph).includes('adopted1'), 'an adopted image is never deleted');
      await assertNothingLeft(d.uuid);
    });

    it('after the faults, an RBD image hot-adds as a SCSI LUN and as virtio-blk in the chroot, and both go again', async () => {
      current = poolWith({});
      rbdAdmin(ceph, 'create', `${ceph.pool}/fault2`, '--size', '24');
      const t0 = Date.now();
      const blk = await g.instance.hotAddDisk({ uuid: randomUUID(), path: rbdPath({ pool: ceph.pool, image: 'fault1' }), template: 'rbd', rbd: { pool: ceph.pool, image: 'fault1' } });
      const addMs = Date.now() - t0;
      const lun = await g.instance.hotAddScsiDisk({ uuid: randomUUID(), path: rbdPath({ pool: ceph.pool, image: 'fault2' }), template: 'rbd', rbd: { pool: ceph.pool, image: 'fault2' } });
      await g.console.waitFor(
        (s) => s.blks.some((b) => b.pci === slotAddr(blk.pci as number) && b.sectors === (16 * MiB) / 512) && s.blks.some((b) => b.scsi !== '-' && b.sectors === (24 * MiB) / 512),
        SEEN_TIMEOUT_MS,
        'the virtio-blk and the SCSI RBD disks',
      );
      process.stdout.write(`      (hot-add of an RBD disk at the hypervisor layer: ${addMs} ms)\n`);
      await g.instance.hotRemoveDisk(blk.uuid);
      await g.instance.hotRemoveDisk(lun.uuid);
      await g.console.waitFor((s) => s.blks.length === 0, SEEN_TIMEOUT_MS, 'both gone');
      await assertNothingLeft(blk.uuid);
      await assertNothingLeft(lun.uuid);
    });
  });
});
