/**
 * Live migration with local disks through the cluster: two node daemons on
 * this machine with SEPARATE storage directories (different storage ids), so
 * `gnt-instance migrate` copies the disks over NBD (TLS) while the guest
 * writes to them. QEMU runs unprivileged (the node's default) and in a
 * chroot. The guest (gnt.diskwrite=1) compares its disks with the copy of
 * what it wrote that it keeps in RAM, on the source and then on the target.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun, type TestNode } from '../support/cli-cluster';

interface Details {
  instance: { node: string; disks: { uuid: string }[] };
  runtime: { running: boolean; pid: number; disks: { uuid: string; path: string }[]; guest: { known: boolean; disks: string[] } };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The last disk check per guest disk on a console log, and every failed one. */
function diskChecks(consoleLog: string): { last: Map<string, number>; bad: string[] } {
  const last = new Map<string, number>();
  const bad: string[] = [];
  const text = fs.existsSync(consoleLog) ? fs.readFileSync(consoleLog, 'utf8') : '';
  for (const m of text.matchAll(/gnt-disk (\S+) (\d+) (ok|BAD) ([0-9a-f]+)/g)) {
    last.set(m[1], Number(m[2]));
    if (m[3] === 'BAD') bad.push(m[0]);
  }
  return { last, bad };
}

describe('live migration with local disks through the cluster (separate storage, NBD copy, TLS, unprivileged QEMU in a chroot)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const nodes: Record<string, TestNode> = {};
  let chroot: string;
  const info = (name: string): Details => c.instanceInfo<Details>(name);
  const consoleOf = (node: string, name: string): string => path.join(nodes[node].dataDir, name, 'console.log');
  const filesOf = (node: string, name: string): string[] => {
    const dir = path.join(nodes[node].storageDir, name);
    return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
  };
  const addInstance = (name: string, kernelArgs: string, ...extra: string[]): CliRun => {
    const g = guestFiles();
    return c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', g.kernel, '--initrd', g.initrd,
      '--kernel-args', `console=ttyS0 quiet loglevel=1 panic=-1 ${kernelArgs}`.trim(), '--disk', 'size=16M', ...extra, name);
  };
  const untilChecks = async (node: string, name: string, pred: (last: Map<string, number>) => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 90_000;
    while (!pred(diskChecks(consoleOf(node, name)).last)) {
      if (Date.now() > deadline) throw new Error(`${name} on ${node} never showed ${what}: ${JSON.stringify([...diskChecks(consoleOf(node, name)).last])}`);
      await sleep(300);
    }
  };
  const lastJob = (): string => {
    const jobs = c.json<Array<{ id: string }>>(c.gnt('gnt-job', 'list', '--output', 'json'));
    return String(jobs[jobs.length - 1].id);
  };

  before(async () => {
    await c.init();
    chroot = c.dir('qemu-chroot');
    fs.chmodSync(chroot, 0o711); // QEMU's user must be able to enter its chroot (and reach the TLS files made there)
    nodes.node1 = await c.addNode('node1');
    nodes.node2 = await c.addNode('node2');
    assert.notEqual(nodes.node1.storageDir, nodes.node2.storageDir);
    c.ok(addInstance('web1', 'gnt.diskwrite=1', '-H', `chroot=${chroot}`));
    c.ok(addInstance('slow1', '', '-H', 'migration_bandwidth=2'));
  });
  after(async () => {
    for (const name of ['web1', 'slow1']) {
      c.gnt('gnt-instance', 'migrate', '--cleanup', name);
      c.gnt('gnt-instance', 'remove', name);
    }
    await c.destroy();
  });

  it('the guest writes to its boot disk and a hot-added disk on node1 and checks them', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=24M', 'web1'));
    await untilChecks('node1', 'web1', (l) => (l.get('vda') ?? 0) >= 2 && (l.get('vdb') ?? 0) >= 2, 'checks of vda and vdb');
    assert.deepEqual(diskChecks(consoleOf('node1', 'web1')).bad, []);
    assert.equal(filesOf('node1', 'web1').length, 2);
    const pid = info('web1').runtime.pid;
    assert.equal(fs.readlinkSync(`/proc/${pid}/root`), chroot, 'QEMU runs in the chroot');
  });

  it('migrates to node2, copying both disks over TLS while the guest writes; the guest keeps running there and its disks match', async () => {
    const before = diskChecks(consoleOf('node1', 'web1')).last;
    const r = c.ok(c.gnt('gnt-instance', 'migrate', '-n', 'node2', 'web1'));
    assert.match(r.stdout, /do not share storage \(different storage ids\)/);
    assert.match(r.stdout, /TLS: on/);
    assert.match(r.stdout, /disk copy: \S+ ready (1[6-9])\.\d\/\1\.\d MiB, \S+ ready (2[4-9])\.\d\/\2\.\d MiB/); // the job counts what the guest rewrote too
    assert.match(r.stdout, /migration completed in [\d.]+ s, downtime \d+ ms/);
    assert.match(r.stdout, /disk copy ended on node1/);
    assert.match(r.stdout, /now runs on node node2/);
    const d = info('web1');
    assert.equal(d.instance.node, 'node2');
    assert.equal(d.runtime.running, true);
    for (const disk of d.runtime.disks) assert.equal(path.dirname(disk.path), path.join(nodes.node2.storageDir, 'web1'), 'the disks are node2\'s own files');
    assert.equal(fs.existsSync(path.join(nodes.node1.dataDir, 'web1')), false, 'no runtime files (nor QEMU) left on node1');
    assert.deepEqual(filesOf('node1', 'web1'), [], 'no disk files left on node1');
    assert.equal(filesOf('node2', 'web1').length, 2);
    await untilChecks('node2', 'web1', (l) => ['vda', 'vdb'].every((n) => (l.get(n) ?? 0) > (before.get(n) ?? 0) + 2), 'further checks on node2');
    assert.deepEqual(diskChecks(consoleOf('node2', 'web1')).bad, [], 'every check of the disks on node2 passed');
    assert.doesNotMatch(fs.readFileSync(consoleOf('node2', 'web1'), 'utf8'), /gnt-guest init/, 'it did not boot on node2');
  });

  it('the target QEMU killed mid-copy: the job fails, the guest keeps running on node1 with its disks, nothing is left on node2', async () => {
    const cli = c.gntAsync('gnt-instance', 'migrate', '-n', 'node2', 'slow1');
    const deadline = Date.now() + 60_000;
    for (;;) {
      await sleep(300);
      if (/disk copy: \S+ running [1-9]/.test(c.gnt('gnt-job', 'info', lastJob()).stdout)) break;
      if (Date.now() > deadline) throw new Error('the disk copy never showed progress');
    }
    const pid = Number(fs.readFileSync(path.join(nodes.node2.dataDir, 'slow1', 'qemu.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    const r = await cli;
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /keeps running on node1/);
    const d = info('slow1');
    assert.equal(d.instance.node, 'node1');
    assert.equal(d.runtime.running, true);
    assert.equal(fs.existsSync(path.join(nodes.node2.dataDir, 'slow1')), false, 'no runtime dir on node2');
    assert.deepEqual(filesOf('node2', 'slow1'), [], 'no copied disk file on node2');
    assert.equal(filesOf('node1', 'slow1').length, 1, 'the disk stays on node1');
    await c.waitGuest<Details>('slow1', (x) => x.runtime.guest.disks.length === 1, 'its disk');
  });

  it('after gnt-cluster renew-crypto --new-ca, the running instance migrates with TLS on the new certificates', async () => {
    const before = diskChecks(consoleOf('node2', 'web1')).last;
    const caBefore = fs.readFileSync(path.join(nodes.node1.certsDir, 'ca.pem'), 'utf8');
    c.ok(c.gnt('gnt-cluster', 'renew-crypto', '--new-ca'));
    assert.notEqual(fs.readFileSync(path.join(nodes.node1.certsDir, 'ca.pem'), 'utf8'), caBefore, 'the node has the new CA bundle');
    const r = c.ok(c.gnt('gnt-instance', 'migrate', '-n', 'node1', 'web1'));
    assert.match(r.stdout, /TLS: on/);
    assert.match(r.stdout, /now runs on node node1/);
    await untilChecks('node1', 'web1', (l) => ['vda', 'vdb'].every((n) => (l.get(n) ?? 0) > (before.get(n) ?? 0) + 2), 'further checks on node1');
    assert.deepEqual(diskChecks(consoleOf('node1', 'web1')).bad, []);
  });

  it('with migration TLS off (gnt-cluster modify), a plain migration with disk copy works too', async () => {
    c.ok(c.gnt('gnt-cluster', 'modify', '--migration-tls=off'));
    const before = diskChecks(consoleOf('node1', 'web1')).last;
    const r = c.ok(c.gnt('gnt-instance', 'migrate', '-n', 'node2', 'web1'));
    assert.match(r.stdout, /TLS: off/);
    assert.match(r.stdout, /now runs on node node2/);
    assert.deepEqual(filesOf('node1', 'web1'), []);
    await untilChecks('node2', 'web1', (l) => ['vda', 'vdb'].every((n) => (l.get(n) ?? 0) > (before.get(n) ?? 0) + 2), 'further checks on node2');
    assert.deepEqual(diskChecks(consoleOf('node2', 'web1')).bad, []);
    c.ok(c.gnt('gnt-cluster', 'modify', '--migration-tls=on'));
    const bad = c.gnt('gnt-cluster', 'modify', '--migration-tls=maybe');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--migration-tls must be on or off/);
  });
});
