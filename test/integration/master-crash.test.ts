/**
 * The master killed in the middle of a hotplug job, as real processes:
 * gnt-cluster init, gnt-masterd started with the fault-injection point
 * GNT_MASTERD_CRASH_POINT=after-node-hotplug (it SIGKILLs itself after the
 * node confirmed HotplugDevice and before the configuration commit), a real
 * gnt-noded and the test guest. The restarted master must mark the job
 * failed with its log kept, and settle the job's operation from the node's
 * record of it (src/master/convergence.ts) before it serves: the change is
 * committed exactly once, and the job's log says so.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClusterDir } from '../../src/master/cluster-dir';
import { openDb } from '../../src/master/config/db';
import { ConfigStore } from '../../src/master/config/config-store';
import { JobStore } from '../../src/master/jobs/job-store';
import { NodeRpc } from '../../src/master/node-rpc';
import { GUEST_DIR, guestFiles, tempDir } from '../support/guest';
import { CLI_MAIN, expectOk, NODED_MAIN, runCli, startDaemon, stopDaemon, type CliRun, type Daemon } from '../support/cli-cluster';
import { freePort } from '../support/noded';

const MAIN = CLI_MAIN;
const NODED = NODED_MAIN;
type Run = CliRun;
const CRASH_ENV = { GNT_MASTERD_CRASH_POINT: 'after-node-hotplug' };

describe('gnt-masterd killed between the node hotplug and the config commit', function () {
  this.timeout(180_000);
  let work: string;
  let clusterDir: string;
  let master: Daemon | undefined;
  let noded: Daemon | undefined;
  let nodeRpc: NodeRpc | undefined;
  let guest: { kernel: string; initrd: string };
  const bridge = 'gntcbr0';
  const masterdLog = () => path.join(work, 'masterd.log');

  const gnt = (prog: string, ...args: string[]): Run => {
    return runCli(clusterDir, prog, ...args);
  };
  const ok = expectOk;
  const json = <T>(r: Run): T => JSON.parse(ok(r).stdout) as T;
  const startMaster = async (env: Record<string, string> = {}) => {
    master = await startDaemon([MAIN, 'gnt-masterd', '--cluster-dir', clusterDir], /gnt-masterd listening on 127\.0\.0\.1:\d+/, masterdLog(), env);
  };

  type Details = {
    instance: { nics: { index: number; uuid: string; mac: string; link: string }[]; disks: { index: number; uuid: string; sizeBytes: string | number }[] };
    runtime: { known: boolean; running: boolean; nics: { uuid: string; mac: string; pci: number }[]; disks: { uuid: string; pci: number }[]; guest: { known: boolean; nics: string[]; disks: string[] } };
  };
  const details = () => json<Details>(gnt('gnt-instance', 'info', 'web1', '--output', 'json'));
  type JobInfo = { status: string; error: string; log: { message: string }[] };
  const jobInfo = (id: string) => json<JobInfo>(gnt('gnt-job', 'info', id, '--output', 'json'));

  /** The node's own view (InstanceInfo straight from gnt-noded, with the master's certificate), polled until `pred`. */
  const nodeView = async (pred: (rt: Awaited<ReturnType<NodeRpc['instanceInfo']>>) => boolean, what: string) => {
    const deadline = Date.now() + 60_000;
    const target = { name: 'node1', address: nodeAddress };
    let rt = await nodeRpc!.instanceInfo(target, 'web1');
    while (!pred(rt)) {
      if (Date.now() > deadline) throw new Error(`the node never showed ${what}: ${JSON.stringify(rt)}`);
      await new Promise((r) => setTimeout(r, 500));
      rt = await nodeRpc!.instanceInfo(target, 'web1');
    }
    return rt;
  };
  let nodeAddress = '';

  /**
   * Submits a modify on a master running with the crash point, waits for
   * the master to die by SIGKILL, and restarts it without the crash point.
   * Returns the job id and the restarted master's stderr.
   */
  const modifyKilled = async (...modifyArgs: string[]): Promise<{ id: string }> => {
    await stopDaemon(master);
    await startMaster(CRASH_ENV);
    const dying = master!;
    const id = ok(gnt('gnt-instance', 'modify', '--hotplug', ...modifyArgs, '--submit', 'web1')).stdout.trim();
    assert.match(id, /^\d+$/);
    const exit = await Promise.race([
      dying.exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the master did not die at the crash point within 60 s')), 60_000)),
    ]);
    assert.equal(exit.signal, 'SIGKILL', `master exit: ${JSON.stringify(exit)}; stderr: ${dying.stderr()}`);
    return { id };
  };
  /** Restarts the master without the crash point; returns what it wrote on stderr up to "listening". */
  const restartClean = async (): Promise<string> => {
    await startMaster();
    // stdout ("listening") and stderr are separate pipes: let stderr catch up.
    await new Promise((r) => setTimeout(r, 300));
    return master!.stderr();
  };

  const assertInterrupted = (id: string, hotVerb: RegExp): string[] => {
    const j = jobInfo(id);
    assert.equal(j.status, 'error');
    assert.equal(j.error, 'interrupted by a master restart');
    const messages = j.log.map((l) => l.message);
    assert.ok(messages.some((m) => /submitted: modify instance web1/.test(m)), messages.join('\n'));
    assert.ok(messages.some((m) => hotVerb.test(m)), messages.join('\n'));
    assert.ok(messages.some((m) => /fault injection: GNT_MASTERD_CRASH_POINT=after-node-hotplug/.test(m)), messages.join('\n'));
    assert.ok(messages.some((m) => /interrupted by a master restart/.test(m)), messages.join('\n'));
    return messages;
  };

  before(async function () {
    if (!fs.existsSync(NODED)) {
      console.log(`      (skipped: ${NODED} is not built)`);
      this.skip();
    }
    try {
      guest = guestFiles();
    } catch (err) {
      console.log(`      (skipped: ${(err as Error).message})`);
      this.skip();
    }
    work = tempDir('master-crash');
    clusterDir = path.join(work, 'cluster');
    const masterPort = await freePort();
    ok(gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${masterPort}`, '--name', 'crashcluster'));
    await startMaster();
    const certs = path.join(work, 'node1-certs');
    ok(gnt('gnt-cluster', 'issue-node-cert', 'node1', '--out', certs));
    const nodePort = await freePort();
    nodeAddress = `127.0.0.1:${nodePort}`;
    const data = path.join(work, 'node1-data');
    const storage = path.join(work, 'node1-storage');
    fs.mkdirSync(data, { recursive: true });
    fs.mkdirSync(storage, { recursive: true });
    spawnSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', bridge, 'up']);
    noded = await startDaemon(
      [NODED, '--name', 'node1', '--listen', nodeAddress, '--data-dir', data, '--storage-dir', storage, '--image-dir', GUEST_DIR,
        '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key')],
      /gnt-noded node1 listening on/,
      path.join(work, 'noded.log'),
    );
    ok(gnt('gnt-node', 'add', 'node1', '--address', nodeAddress));
    nodeRpc = new NodeRpc(ClusterDir.resolve(clusterDir).masterIdentity);
  });

  after(async () => {
    if (work) {
      // A test that failed may have left the master dead at the crash point:
      // bring it back (without the crash point) to remove the instance, so
      // no QEMU outlives the test.
      if (noded && (!master || master.child.exitCode !== null || master.child.signalCode !== null)) await startMaster().catch(() => undefined);
      if (noded && master && master.child.exitCode === null && master.child.signalCode === null) gnt('gnt-instance', 'remove', 'web1');
      nodeRpc?.close();
      await stopDaemon(master);
      await stopDaemon(noded);
      spawnSync('ip', ['link', 'del', bridge]);
      fs.rmSync(work, { recursive: true, force: true });
    }
  });

  it('adds and starts web1 with one NIC and one disk', async () => {
    const r = ok(gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--maxmem', '512M',
      '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1',
      '--disk', 'size=32M', '--net', `link=${bridge}`, 'web1'));
    assert.match(r.stdout, /instance web1 started/);
    await nodeView((rt) => !!rt.guest?.known && rt.guest.nics.length === 1, 'the guest up with its NIC');
  });

  let addedUuid = '';
  it('hot-add of a NIC killed before the commit: job failed with its log, NIC settled into the config', async () => {
    const mac = '52:54:00:ab:cd:01';
    const { id } = await modifyKilled('--net', `add:mac=${mac},link=${bridge}`);
    // While the master is down: the node has the NIC, and the guest sees it.
    const rt = await nodeView((x) => x.nics.some((n) => n.mac === mac) && !!x.guest?.nics.some((n) => n.includes(mac)), `NIC ${mac} in the guest`);
    const rtNic = rt.nics.find((n) => n.mac === mac)!;
    addedUuid = rtNic.uuid;

    const stderr = await restartClean();
    assert.match(stderr, new RegExp(`job ${id} was interrupted by a master restart`));
    const settled = `settled by the node after the job: hot-add of new NIC ${rtNic.uuid} (${mac} on ${bridge}) succeeded; committed to the configuration`;
    assert.ok(stderr.includes(settled), stderr);

    const messages = assertInterrupted(id, /hot-add of new NIC/);
    assert.ok(messages.some((m) => m.startsWith(settled)), messages.join('\n'));
    assert.equal(messages.filter((m) => m.startsWith('settled by the node')).length, 1, messages.join('\n'));

    const d = details();
    assert.equal(d.instance.nics.length, 2);
    assert.equal(d.instance.nics[1].uuid, rtNic.uuid);
    assert.equal(d.instance.nics[1].mac, mac);
    assert.equal(d.instance.nics[1].link, bridge);
    assert.deepEqual(d.runtime.nics.map((n) => n.uuid).sort(), d.instance.nics.map((n) => n.uuid).sort(), 'config and runtime agree');
    assert.doesNotMatch(ok(gnt('gnt-instance', 'info', 'web1')).stdout, /not in the configuration/);
    // The MAC is now known to the config: a second add of it is refused.
    const dup = gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=${mac}`, 'web1');
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /already used/);
  });

  it('a second restart finds nothing to reconcile (idempotent)', async () => {
    const before = details().instance;
    await stopDaemon(master);
    const stderr = await restartClean();
    assert.doesNotMatch(stderr, /reconcil/);
    assert.deepEqual(details().instance, before);
  });

  it('hot-remove of that NIC killed before the commit: after the restart the config no longer has it', async () => {
    const { id } = await modifyKilled('--net', '1:remove');
    await nodeView((x) => !x.nics.some((n) => n.uuid === addedUuid), 'the NIC gone from the runtime');

    const stderr = await restartClean();
    const settled = `settled by the node after the job: hot-remove of NIC ${addedUuid} (52:54:00:ab:cd:01) succeeded; committed to the configuration`;
    assert.ok(stderr.includes(settled), stderr);
    const messages = assertInterrupted(id, /hot-remove of NIC 1/);
    assert.ok(messages.some((m) => m.startsWith(settled)), messages.join('\n'));

    const d = details();
    assert.equal(d.instance.nics.length, 1);
    assert.ok(!d.instance.nics.some((n) => n.uuid === addedUuid));
    assert.deepEqual(d.runtime.nics.map((n) => n.uuid), d.instance.nics.map((n) => n.uuid));
    await nodeView((x) => !(x.guest?.nics.some((n) => n.includes('52:54:00:ab:cd:01')) ?? false), 'the NIC gone from the guest');
  });

  it('hot-add of a disk killed before the commit: the disk is settled with the size the job asked for; a config-only change stays', async () => {
    // A NIC added without --hotplug: in the config only until the next start.
    // Settling the interrupted job must not undo it.
    const pending = ok(gnt('gnt-instance', 'modify', '--net', 'add:mac=52:54:00:ab:cd:02', 'web1'));
    assert.match(pending.stdout, /applies at the next start/);
    const pendingNic = details().instance.nics.find((n) => n.mac === '52:54:00:ab:cd:02')!;
    const { id } = await modifyKilled('--disk', 'add:size=16M');
    const rt = await nodeView((x) => x.disks.length === 2 && x.guest?.disks.length === 2, 'the second disk in the guest');
    const stderr = await restartClean();
    const d = details();
    const newDisk = rt.disks.find((x) => !d.instance.disks.slice(0, 1).some((c) => c.uuid === x.uuid))!;
    const settled = `settled by the node after the job: hot-add of new disk ${newDisk.uuid} (16M) succeeded; committed to the configuration`;
    assert.ok(stderr.includes(settled), stderr);
    const messages = assertInterrupted(id, /hot-add of new disk/);
    assert.ok(messages.some((m) => m.startsWith(settled)), messages.join('\n'));
    assert.equal(d.instance.disks.length, 2);
    assert.equal(d.instance.disks[1].uuid, newDisk.uuid);
    assert.equal(Number(d.instance.disks[1].sizeBytes), 16 * 1024 * 1024);
    assert.deepEqual(d.runtime.disks.map((x) => x.uuid).sort(), d.instance.disks.map((x) => x.uuid).sort());
    assert.equal(d.instance.nics.length, 2);
    assert.equal(d.instance.nics[1].uuid, pendingNic.uuid, 'the config-only NIC is kept');
    // Only the job's own operation is settled: nothing else is compared, so nothing else needs a "left as is".
    assert.ok(!messages.some((m) => m.includes(pendingNic.uuid)), messages.join('\n'));
  });

  it('removes the instance', () => {
    ok(gnt('gnt-instance', 'remove', 'web1'));
    assert.deepEqual(json<unknown[]>(gnt('gnt-instance', 'list', '--output', 'json')), []);
  });
});

describe('gnt-masterd start-up reconciliation with an unreachable node', function () {
  this.timeout(60_000);
  let work: string;
  let master: Daemon | undefined;

  after(async () => {
    await stopDaemon(master);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('logs in the interrupted job that the node could not be asked, and changes nothing', async () => {
    work = tempDir('master-crash-unreach');
    const clusterDir = path.join(work, 'cluster');
    const port = await freePort();
    const init = spawnSync(process.execPath, [MAIN, 'gnt-cluster', 'init', '--master-address', `127.0.0.1:${port}`, '--cluster-dir', clusterDir], { encoding: 'utf8' });
    assert.equal(init.status, 0, init.stderr);
    // The state an earlier master left: web9 on a node nobody answers for, and
    // a modify job of web9 still "running".
    const db = openDb(ClusterDir.resolve(clusterDir).dbFile);
    let jobId: number;
    let before: unknown;
    try {
      const config = new ConfigStore(db);
      const jobs = new JobStore(db);
      const node = config.addNode('gone', '127.0.0.1:1');
      const inst = config.addInstance({
        name: 'web9', nodeUuid: node.uuid, vcpus: 1, maxvcpus: 1, memoryMib: 128, maxmemMib: 128, kernel: '/k', initrd: '',
        kernelArgs: '', hvparams: {}, nics: [{ mac: '52:54:00:00:00:09', link: '' }], disks: [{ sizeBytes: 1 << 20 }],
      });
      before = { nics: inst.nics, disks: inst.disks };
      const job = jobs.create('instance-modify', { type: 'instance-modify', name: 'web9', nics: [], disks: [], hotplug: 'HOTPLUG' }, 'modify instance web9', ['instance:web9']);
      jobs.setRunning(job.id);
      jobs.appendLog(job.id, 'started');
      jobId = job.id;
    } finally {
      db.close();
    }
    master = await startDaemon([MAIN, 'gnt-masterd', '--cluster-dir', clusterDir], /gnt-masterd listening on/, path.join(work, 'masterd.log'));
    await new Promise((r) => setTimeout(r, 300));
    assert.match(master.stderr(), /reconcile: cannot reach node gone \(127\.0\.0\.1:1\).*configuration of web9 left unchanged/);
    const run = (...a: string[]) => spawnSync(process.execPath, [MAIN, ...a, '--cluster-dir', clusterDir], { encoding: 'utf8' });
    const j = JSON.parse(run('gnt-job', 'info', String(jobId), '--output', 'json').stdout) as { status: string; error: string; log: { message: string }[] };
    assert.equal(j.status, 'error');
    assert.equal(j.error, 'interrupted by a master restart');
    const messages = j.log.map((l) => l.message);
    assert.equal(messages[0], 'started');
    assert.match(messages[messages.length - 1], /^reconcile: cannot reach node gone .*configuration of web9 left unchanged/);
    const d = JSON.parse(run('gnt-instance', 'info', 'web9', '--output', 'json').stdout) as { instance: { nics: { uuid: string; mac: string }[]; disks: { uuid: string }[] } };
    const b = before as { nics: { uuid: string; mac: string }[]; disks: { uuid: string }[] };
    assert.deepEqual(d.instance.nics.map((n) => [n.uuid, n.mac]), b.nics.map((n) => [n.uuid, n.mac]));
    assert.deepEqual(d.instance.disks.map((x) => x.uuid), b.disks.map((x) => x.uuid));
  });
});
