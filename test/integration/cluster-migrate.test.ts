/**
 * Issue 5 end to end: live migration through `gnt-instance migrate` between
 * two node daemons that share one storage directory (Ganeti's sharedfile),
 * with the real guest. Every hot change (NIC, disk, vCPU, memory) must be
 * there after the move, at the same PCI slot; failures and interruptions
 * (a target that cannot start, a killed master, a killed node daemon) must
 * end with the instance running on exactly one node and config and runtime
 * files agreeing, after `gnt-instance migrate --cleanup` where needed.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun, type TestNode } from '../support/cli-cluster';

interface Details {
  instance: { node: string; nics: { uuid: string; mac: string }[]; disks: { uuid: string; size_bytes?: number }[] };
  runtime: {
    running: boolean;
    pid: number;
    nics: { uuid: string; mac: string; pci: number; tap: string }[];
    disks: { uuid: string; pci: number }[];
    guest: { known: boolean; nics: string[]; disks: string[]; cpusOnline: string; memTotalKib: string | number };
  };
}

const BRIDGE = 'gntmigbr0';
const DOOMED_BRIDGE = 'gntmigbr1';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const taps = (): string[] => fs.readdirSync('/sys/class/net').filter((n) => n.startsWith('gnttap'));

describe('live migration through the cluster (gnt-instance migrate, two noded on shared storage, real guest)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const nodes: Record<string, TestNode> = {};
  const info = (name: string): Details => c.instanceInfo<Details>(name);
  const waitGuest = (name: string, pred: (d: Details) => boolean, what: string): Promise<Details> => c.waitGuest<Details>(name, pred, what);
  const consoleOf = (node: string, name: string): GuestConsole => new GuestConsole(path.join(nodes[node].dataDir, name, 'console.log'));
  const runtimeDirOf = (node: string, name: string): string => path.join(nodes[node].dataDir, name);
  /** The guest's own view, in a form that must not change across a migration. */
  const view = (d: Details): string =>
    JSON.stringify({ nics: [...d.runtime.guest.nics].sort(), disks: [...d.runtime.guest.disks].sort(), cpus: d.runtime.guest.cpusOnline, mem: String(d.runtime.guest.memTotalKib) });
  const addInstance = (name: string, ...extra: string[]): CliRun => {
    const g = guestFiles();
    return c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--maxvcpus', '4', '--memory', '256M', '--maxmem', '1G',
      '--kernel', g.kernel, '--initrd', g.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1',
      '--disk', 'size=16M', '--net', `link=${BRIDGE}`, ...extra, name);
  };
  /** Exactly one node has a runtime file and a QEMU for the instance, and it is the one the config names. */
  const assertRunsOnlyOn = (name: string, node: string): Details => {
    const d = info(name);
    assert.equal(d.instance.node, node, 'the config names the node');
    assert.equal(d.runtime.running, true, `it runs on ${node}`);
    for (const other of Object.keys(nodes).filter((n) => n !== node))
      assert.equal(fs.existsSync(runtimeDirOf(other, name)), false, `no runtime files of ${name} left on ${other}`);
    return d;
  };
  /** Waits until the guest's tick on `node` passes `after`: it runs, and did not reboot (ticks count from boot). */
  const waitTickAfter = async (node: string, name: string, after: number): Promise<number> => {
    const con = consoleOf(node, name);
    const deadline = Date.now() + 30_000;
    while (con.lastTick <= after) {
      if (Date.now() > deadline) throw new Error(`the guest of ${name} on ${node} stopped counting at ${con.lastTick} (was ${after})`);
      await sleep(200);
    }
    return con.lastTick;
  };

  before(async () => {
    for (const br of [BRIDGE, DOOMED_BRIDGE]) {
      spawnSync('ip', ['link', 'add', br, 'type', 'bridge']);
      spawnSync('ip', ['link', 'set', br, 'up']);
    }
    await c.init();
    const shared = c.dir('shared-storage');
    nodes.node1 = await c.addNode('node1', { storageDir: shared });
    nodes.node2 = await c.addNode('node2', { storageDir: shared });
    c.ok(addInstance('web1'));
  });

  after(async () => {
    // After a failed test an instance may still carry a migration mark, which
    // refuses its stop: settle it first, so that remove stops its QEMU.
    for (const name of ['web1', 'slow1']) {
      c.gnt('gnt-instance', 'migrate', '--cleanup', name);
      c.gnt('gnt-instance', 'remove', name);
    }
    await c.destroy();
    for (const br of [BRIDGE, DOOMED_BRIDGE]) spawnSync('ip', ['link', 'del', br]);
  });

  let before1: Details;

  it('hot-adds a NIC, a disk, a vCPU and memory on node1', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:77:00:02,link=${BRIDGE}`, 'web1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=24M', 'web1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '-B', 'vcpus=2,memory=384M', 'web1'));
    before1 = await waitGuest(
      'web1',
      (d) => d.runtime.guest.nics.length === 2 && d.runtime.guest.disks.length === 2 && d.runtime.guest.cpusOnline === '0-1' && Number(d.runtime.guest.memTotalKib) > 250_000,
      'two NICs, two disks, two CPUs and more memory',
    );
  });

  it('migrates to node2: the guest keeps counting and sees every device with the same MAC, size and slot', async () => {
    const tick = consoleOf('node1', 'web1').lastTick;
    const r = c.ok(c.gnt('gnt-instance', 'migrate', '-n', 'node2', 'web1'));
    assert.match(r.stdout, /migration completed in [\d.]+ s, downtime \d+ ms/);
    assert.match(r.stdout, /now runs on node node2/);
    const d = assertRunsOnlyOn('web1', 'node2');
    assert.deepEqual(d.runtime.nics.map((n) => [n.uuid, n.mac, n.pci]), before1.runtime.nics.map((n) => [n.uuid, n.mac, n.pci]));
    assert.deepEqual(d.runtime.disks.map((x) => [x.uuid, x.pci]), before1.runtime.disks.map((x) => [x.uuid, x.pci]));
    await waitTickAfter('node2', 'web1', tick);
    assert.doesNotMatch(fs.readFileSync(path.join(runtimeDirOf('node2', 'web1'), 'console.log'), 'utf8'), /gnt-guest init/, 'it did not boot on node2');
    const after = await waitGuest('web1', (x) => view(x) === view(before1), 'the same devices, CPUs and memory');
    assert.equal(view(after), view(before1));
    assert.equal(taps().length, 2, 'only node2\'s two taps: none left from node1');
  });

  it('on node2: hot-removes a NIC and hot-adds a disk, then migrates back to node1, and all of it holds', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', 'web1'));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=8M', 'web1'));
    const want = await waitGuest('web1', (d) => d.runtime.guest.nics.length === 1 && d.runtime.guest.disks.length === 3, 'one NIC, three disks');
    const tick = consoleOf('node2', 'web1').lastTick;
    c.ok(c.gnt('gnt-instance', 'migrate', 'web1')); // the only other node
    const d = assertRunsOnlyOn('web1', 'node1');
    assert.deepEqual(d.runtime.disks.map((x) => [x.uuid, x.pci]), want.runtime.disks.map((x) => [x.uuid, x.pci]));
    assert.equal(d.instance.disks.length, 3);
    assert.equal(d.instance.nics.length, 1);
    await waitTickAfter('node1', 'web1', tick);
    const after = await waitGuest('web1', (x) => view(x) === view(want), 'the same devices back on node1');
    assert.equal(view(after), view(want));
    assert.equal(taps().length, 1);
  });

  it('refuses a migration whose target cannot start (bridge missing there): the instance keeps running on node1, nothing on node2', async () => {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:77:00:0b,link=${DOOMED_BRIDGE}`, 'web1'));
    // Both node daemons share this network namespace: deleting the bridge
    // makes it missing for the target (the source's tap just loses its master).
    spawnSync('ip', ['link', 'del', DOOMED_BRIDGE]);
    const tapsBefore = taps();
    const r = c.gnt('gnt-instance', 'migrate', '-n', 'node2', 'web1');
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /bridge "gntmigbr1" does not exist/);
    assert.match(r.stdout + r.stderr, /keeps running on (node )?node1/);
    assertRunsOnlyOn('web1', 'node1');
    assert.deepEqual(taps(), tapsBefore, 'no tap left by the target');
    await waitTickAfter('node1', 'web1', consoleOf('node1', 'web1').lastTick);
    // Hotplug works again right away: no migration is recorded any more.
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', 'web1'));
    spawnSync('ip', ['link', 'add', DOOMED_BRIDGE, 'type', 'bridge']);
  });

  it('a master killed right after the migration started: the job is failed, --cleanup ends with one running copy', async () => {
    await c.restartMaster({ GNT_MASTERD_CRASH_POINT: 'after-migration-start' }, 'SIGTERM');
    const r = c.gnt('gnt-instance', 'migrate', '-n', 'node2', 'web1');
    assert.notEqual(r.code, 0, 'the CLI lost its master');
    await c.waitMasterExit();
    await c.startMaster();
    const jobs = c.json<Array<{ id: string; opType: string; status: string }>>(c.gnt('gnt-job', 'list', '--output', 'json'));
    const job = jobs.filter((j) => j.opType === 'instance-migrate').pop()!;
    assert.equal(job.status, 'error');
    assert.match(c.ok(c.gnt('gnt-job', 'info', String(job.id))).stdout, /migrate --cleanup web1/);
    const clean = c.ok(c.gnt('gnt-instance', 'migrate', '--cleanup', 'web1'));
    const node = info('web1').instance.node;
    assert.match(clean.stdout, new RegExp(node));
    assertRunsOnlyOn('web1', node);
    await waitTickAfter(node, 'web1', consoleOf(node, 'web1').lastTick);
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=4M', 'web1'));
    // A second cleanup finds nothing to repair.
    c.ok(c.gnt('gnt-instance', 'migrate', '--cleanup', 'web1'));
    assertRunsOnlyOn('web1', node);
  });

  it('gnt-instance failover: the guest reboots on the other node with the same PCI layout', async () => {
    const from = info('web1').instance.node;
    const to = from === 'node1' ? 'node2' : 'node1';
    const before = info('web1');
    c.ok(c.gnt('gnt-instance', 'failover', '-n', to, 'web1'));
    const d = assertRunsOnlyOn('web1', to);
    assert.deepEqual(d.runtime.nics.map((n) => [n.uuid, n.mac, n.pci]), before.runtime.nics.map((n) => [n.uuid, n.mac, n.pci]));
    assert.deepEqual(d.runtime.disks.map((x) => [x.uuid, x.pci]), before.runtime.disks.map((x) => [x.uuid, x.pci]));
    // A reboot names disks in PCI order (hot-added ones were named in the order they came): compare without names.
    const unnamed = (l: string[]): string[] => l.map((e) => e.split(' ').slice(1).join(' ')).sort();
    const devices = (x: Details): string => JSON.stringify([unnamed(x.runtime.guest.nics), unnamed(x.runtime.guest.disks), x.runtime.guest.cpusOnline]);
    const after = await waitGuest('web1', (x) => devices(x) === devices(before), 'the same devices after the reboot');
    assert.equal(devices(after), devices(before));
    assert.match(fs.readFileSync(path.join(runtimeDirOf(to, 'web1'), 'console.log'), 'utf8'), /gnt-guest init/, 'it booted on the new node');
  });

  /** Starts a slow (3 MiB/s) migration of slow1 to node2 and resolves once the job log shows progress. */
  const startSlowMigration = async (): Promise<{ cli: Promise<CliRun>; job: string }> => {
    const cli = c.gntAsync('gnt-instance', 'migrate', '-n', 'node2', 'slow1');
    const deadline = Date.now() + 60_000;
    for (;;) {
      await sleep(300);
      const job = lastJobId();
      if (/migration active: \d+% transferred/.test(c.gnt('gnt-job', 'info', job).stdout)) return { cli, job };
      if (Date.now() > deadline) throw new Error('the migration never showed progress');
    }
  };

  it('refuses hotplug while a migration runs, and gnt-job cancel stops it: the instance keeps running on node1, nothing on node2', async () => {
    c.ok(addInstance('slow1', '-H', 'migration_bandwidth=3'));
    await waitGuest('slow1', (d) => d.runtime.guest.nics.length === 1, 'its NIC');
    const { cli, job } = await startSlowMigration();
    const refused = c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=4M', 'slow1');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout + refused.stderr, /migration in progress/);
    const tapsBefore = taps().length;
    c.ok(c.gnt('gnt-job', 'cancel', job));
    const r = await cli;
    assert.notEqual(r.code, 0);
    const done = c.json<{ status: string; error: string }>(c.gnt('gnt-job', 'info', job, '--output', 'json'));
    assert.equal(done.status, 'canceled');
    assert.match(done.error, /canceled by request .*keeps running on node1/);
    assertRunsOnlyOn('slow1', 'node1');
    assert.equal(taps().length, tapsBefore - 1, 'the incoming copy\'s tap is gone');
    await waitTickAfter('node1', 'slow1', consoleOf('node1', 'slow1').lastTick);
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=4M', 'slow1'));
  });

  it('a source node daemon killed mid-migration, then --cleanup, leaves one running copy', async () => {
    const { cli } = await startSlowMigration();
    await c.killNode('node1');
    const r = await cli;
    assert.notEqual(r.code, 0, 'the job fails when the source node daemon is gone');
    await c.restartNode('node1');
    c.ok(c.gnt('gnt-instance', 'migrate', '--cleanup', 'slow1'));
    const node = info('slow1').instance.node;
    assertRunsOnlyOn('slow1', node);
    await waitTickAfter(node, 'slow1', consoleOf(node, 'slow1').lastTick);
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=4M', 'slow1'));
  });

  function lastJobId(): string {
    const jobs = c.json<Array<{ id: string }>>(c.gnt('gnt-job', 'list', '--output', 'json'));
    return String(jobs[jobs.length - 1].id);
  }
});
