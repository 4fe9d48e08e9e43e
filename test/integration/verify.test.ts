/**
 * gnt-cluster verify / gnt-instance verify on a real cluster (gnt-masterd,
 * gnt-noded, the CLI, a booted guest): a clean cluster verifies clean;
 * differences made behind the system's back (a NIC and a vCPU removed with
 * raw QMP while gnt-noded was stopped, the runtime file edited, a stray tap,
 * orphan disk files) are each reported on one line with a non-zero exit,
 * --fix repairs them and the next verify is clean; a change made without
 * --hotplug is a note, not a difference. Two node daemons share the network
 * namespace and the storage directory, as on a one-host test cluster: neither
 * takes the other's taps or disk files for its own.
 */
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deleteDevice } from '../../src/hypervisor/qdev';
import { QmpClient } from '../../src/hypervisor/qmp-client';
import { saveRuntimeFile } from '../../src/hypervisor/runtime-file';
import { runtimeOf } from '../support/runtime-text';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';

interface Details {
  instance: { nics: { uuid: string; mac: string }[]; disks: { uuid: string }[] };
  runtime: {
    running: boolean;
    nics: { uuid: string; pci: number; deviceId: string }[];
    disks: { uuid: string; deviceId: string }[];
    guest: { known: boolean; nics: string[]; disks: string[] };
  };
}

const BRIDGE = 'gntvfybr0';
const STRAY = 'gnttap77';
const NAME = 'vfy1';
/** On node2, sharing node1's storage directory and network namespace. */
const OTHER = 'vfy2';

/** GNT_TEST_VERBOSE=1 prints every verify report. */
const show = (r: CliRun): CliRun => {
  if (process.env.GNT_TEST_VERBOSE) process.stdout.write(`${r.stdout}${r.stderr}\n`);
  return r;
};

/** The report lines of a verify run, without the summary. */
const lines = (r: CliRun, severity?: string): string[] =>
  r.stdout.split('\n').filter((l) => /^(ERROR|FIXED|FIX-FAILED|NOTE|INFO): /.test(l) && (!severity || l.startsWith(`${severity}: `)));

/** Exactly one line of `severity` mentions `needle`. */
function one(r: CliRun, severity: string, needle: string | RegExp): string {
  const hits = lines(r, severity).filter((l) => (typeof needle === 'string' ? l.includes(needle) : needle.test(l)));
  assert.equal(hits.length, 1, `one ${severity} line with ${needle}, got ${hits.length}:\n${r.stdout}\n${r.stderr}`);
  return hits[0];
}

describe('gnt-cluster verify and gnt-instance verify (masterd, noded, CLI, a real guest)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const info = (): Details => c.instanceInfo<Details>(NAME);

  before(async () => {
    const guest = guestFiles();
    spawnSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', BRIDGE, 'up']);
    await c.init();
    // Two node daemons in one network namespace on one shared storage directory: neither may take
    // the other's taps for stray nor the other's disk files for orphans.
    const shared = c.dir('shared-storage');
    await c.addNode('node1', { storageDir: shared });
    await c.addNode('node2', { storageDir: shared });
    const add = (node: string, name: string): Promise<CliRun> =>
      c.gntAsync('gnt-instance', 'add', '-n', node, '--vcpus', '1', '--maxvcpus', '2', '--memory', '256M', '--kernel', guest.kernel,
        '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', '--net', `link=${BRIDGE}`, name);
    const [a, b] = await Promise.all([add('node1', NAME), add('node2', OTHER)]);
    c.ok(a);
    c.ok(b);
    await c.waitGuest<Details>(NAME, (d) => d.runtime.guest.nics.length === 1, 'its NIC');
  });

  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    c.gnt('gnt-instance', 'remove', OTHER);
    await c.destroy();
    spawnSync('ip', ['link', 'del', STRAY]);
    spawnSync('ip', ['link', 'del', BRIDGE]);
  });

  it('a clean cluster and a clean instance verify clean (exit 0)', () => {
    const r = c.ok(c.gnt('gnt-cluster', 'verify'));
    assert.deepEqual(lines(r, 'ERROR'), [], r.stdout);
    assert.match(r.stdout, /INFO: node node1: gnt-noded: \d+ open fds/);
    assert.match(r.stdout, new RegExp(`INFO: node node1 instance ${NAME}: QEMU pid \\d+: \\d+ open fds`));
    assert.match(r.stdout, new RegExp(`INFO: node node2 instance ${OTHER}: QEMU pid \\d+: \\d+ open fds`));
    assert.match(r.stdout, /verify: 0 difference\(s\)/);
    const i = c.ok(c.gnt('gnt-instance', 'verify', NAME));
    assert.deepEqual(lines(i, 'ERROR'), [], i.stdout);
  });

  it('reports a NIC removed with raw QMP, edits of the runtime file, a stray tap and an orphan file; --fix repairs them', async () => {
    // A hot-added NIC and disk, to be taken away behind the system's back.
    const before = info();
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:7e:00:02,link=${BRIDGE}`, NAME));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=8M', NAME));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '-B', 'vcpus=2', NAME));
    const full = await c.waitGuest<Details>(NAME, (d) => d.runtime.guest.nics.some((n) => n.includes('52:54:00:7e:00:02')) && d.runtime.guest.disks.length === 2, 'the hot-added NIC and disk');
    const added = full.runtime.nics.find((n) => !before.runtime.nics.some((x) => x.uuid === n.uuid));
    const disk = full.runtime.disks.find((n) => !before.runtime.disks.some((x) => x.uuid === n.uuid));
    assert.ok(added && disk, 'the hot-added NIC and disk in the runtime view');
    const node = c.node('node1');
    const dir = path.join(node.dataDir, NAME);

    // gnt-noded stopped (QEMU keeps running): the QMP socket is free for one raw client.
    await c.killNode('node1', 'SIGTERM');
    const file = path.join(dir, 'runtime.json');
    const vcpu = runtimeOf(file).resources?.cpus[0]?.id ?? assert.fail("no hot-added vCPU recorded");
    const qmp = await QmpClient.connect(path.join(dir, 'qmp.sock'));
    try {
      await deleteDevice(qmp, added.deviceId, 30_000); // device only: its netdev stays behind
      await deleteDevice(qmp, vcpu, 30_000); // the hot-added vCPU, its record stays
    } finally {
      qmp.close();
    }
    // The runtime file edited: a settled NIC record QEMU never had.
    const fake = randomUUID();
    // Edited as an operator would: loaded (journal included) and written whole again.
    const rt = runtimeOf(file);
    rt.nics.push({ uuid: fake, mac: '52:54:00:7e:00:99', pci: 21, link: BRIDGE });
    // ... and the record of a disk QEMU has removed: QEMU's device, its file and the configuration's disk lose their record.
    rt.block_devices = rt.block_devices.filter((d) => d.uuid !== disk.uuid);
    saveRuntimeFile(file, rt);
    // A stray tap (persistent, nobody holds it) and a disk file nothing references.
    execFileSync('ip', ['tuntap', 'add', 'dev', STRAY, 'mode', 'tap']);
    const orphan = path.join(node.storageDir, NAME, `${randomUUID()}.img`);
    fs.writeFileSync(orphan, '');
    // ... and one in the directory of an instance no node knows.
    const ghostDir = path.join(node.storageDir, 'ghost1');
    fs.mkdirSync(ghostDir);
    const ghost = path.join(ghostDir, `${randomUUID()}.img`);
    fs.writeFileSync(ghost, '');
    await c.restartNode('node1');

    const r = show(c.gnt('gnt-cluster', 'verify'));
    assert.equal(r.code, 1, `verify must fail:\n${r.stdout}\n${r.stderr}`);
    one(r, 'ERROR', new RegExp(`NIC ${added.uuid} \\(${added.deviceId}\\): recorded in the runtime file, QEMU has no such device`));
    one(r, 'ERROR', new RegExp(`netdev ${added.deviceId} \\(tap\\): no NIC uses this netdev`));
    one(r, 'ERROR', new RegExp(`NIC ${fake} .*recorded in the runtime file, QEMU has no such device`));
    // (node2 shares the namespace, so it reports the same tap: on separate hosts each node sees its own.)
    one(r, 'ERROR', `node node1: tap ${STRAY}: no instance of this node uses it`);
    one(r, 'ERROR', `file ${orphan}: a disk file in the storage directory that no runtime file references`);
    one(r, 'ERROR', `vCPU ${vcpu}: recorded as hot-added, QEMU has no such vCPU`);
    one(r, 'ERROR', `node node1: file ${ghost}: a disk file in the storage directory that no runtime file references`);
    const diskFile = path.join(node.storageDir, NAME, `${disk.uuid}.img`);
    one(r, 'ERROR', `virtio-blk-pci ${disk.deviceId}: QEMU has this device, the runtime file does not record it`);
    one(r, 'ERROR', `file ${diskFile}: a disk file in the storage directory that no runtime file references; kept: the cluster configuration still lists disk ${disk.uuid}`);
    one(r, 'ERROR', new RegExp(`disk ${disk.uuid}: in the configuration \\(.*\\), the node does not have it`));
    const i = c.gnt('gnt-instance', 'verify', NAME);
    assert.equal(i.code, 1, i.stdout);
    one(i, 'ERROR', `NIC ${fake}`);

    const f = show(c.gnt('gnt-cluster', 'verify', '--fix'));
    assert.equal(f.code, 0, `verify --fix must repair everything:\n${f.stdout}\n${f.stderr}`);
    one(f, 'FIXED', new RegExp(`NIC ${added.uuid} \\(${added.deviceId}\\):.*-> record dropped from the runtime file`));
    one(f, 'FIXED', new RegExp(`netdev ${added.deviceId} \\(tap\\):.*-> netdev_del ${added.deviceId}`));
    one(f, 'FIXED', new RegExp(`NIC ${fake} .*-> record dropped from the runtime file`));
    one(f, 'FIXED', `tap ${STRAY} deleted`);
    one(f, 'FIXED', `${orphan} deleted`);
    one(f, 'FIXED', `${ghost} deleted`);
    one(f, 'FIXED', `vCPU ${vcpu}: recorded as hot-added, QEMU has no such vCPU -> record dropped from the runtime file`);
    one(f, 'FIXED', 'vCPUs/memory: 1 vCPUs and 256 MiB on the node, 2 vCPUs and 256 MiB in the configuration -> configuration set to 1 vCPUs and 256 MiB');
    one(f, 'FIXED', new RegExp(`NIC ${added.uuid}: in the configuration .* -> NIC ${added.uuid} dropped from the configuration`));
    one(f, 'FIXED', `virtio-blk-pci ${disk.deviceId}: QEMU has this device, the runtime file does not record it -> device_del ${disk.deviceId}`);
    one(f, 'FIXED', `${diskFile} deleted`);
    one(f, 'FIXED', `disk ${disk.uuid} dropped from the configuration`);

    const again = c.ok(show(c.gnt('gnt-cluster', 'verify')));
    assert.deepEqual(lines(again, 'ERROR'), [], again.stdout);
    assert.equal(fs.existsSync(`/sys/class/net/${STRAY}`), false, 'the stray tap is gone');
    assert.equal(fs.existsSync(orphan), false, 'the orphan file is gone');
    assert.equal(fs.existsSync(ghostDir), false, 'the unknown instance\'s directory is gone with its file');
    assert.equal(fs.existsSync(diskFile), false, 'the file of the disk whose record went is gone');
    const d = info();
    assert.deepEqual(d.instance.nics.map((n) => n.uuid), d.runtime.nics.map((n) => n.uuid), 'configuration and node agree on the NICs');
    assert.equal(d.instance.nics.length, 1);
    assert.deepEqual(d.instance.disks.map((x) => x.uuid), d.runtime.disks.map((x) => x.uuid), 'configuration and node agree on the disks');
    await c.waitGuest<Details>(NAME, (g) => g.runtime.guest.nics.length === 1 && g.runtime.guest.disks.length === 1, 'the guest without the removed NIC and disk');
    const hist = c.instanceInfo<{ history?: Array<{ message: string }> }>(NAME).history ?? [];
    assert.ok(hist.some((h) => h.message.includes(`verify --fix`) && h.message.includes(added.uuid)), JSON.stringify(hist));
  });

  it('a change made without --hotplug is a note, not a difference', () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--net', `add:mac=52:54:00:7e:00:03,link=${BRIDGE}`, NAME));
    const r = c.ok(show(c.gnt('gnt-cluster', 'verify')));
    one(r, 'NOTE', /NIC [0-9a-f-]+: in the configuration only: a change made without --hotplug; it applies at the next start/);
    assert.deepEqual(lines(r, 'ERROR'), [], r.stdout);
    const f = c.ok(c.gnt('gnt-cluster', 'verify', '--fix'));
    assert.deepEqual(lines(f, 'FIXED'), [], 'a legitimate difference is not "repaired"');
    assert.equal(info().instance.nics.length, 2, 'the config-only NIC stays in the configuration');
  });
});
