/**
 * A grow cut off by a kill converges: gnt-noded killed between the file's
 * grow and QEMU's block_resize (crash point after-disk-grown) finishes the
 * grow at its restart (reconcile: the file has the size, QEMU is resized,
 * the operation succeeds) and the job that waited gets that outcome;
 * gnt-masterd killed after the node confirmed the grow (crash point
 * after-node-hotplug) settles it from the node's operation log after its
 * restart. Config, runtime file, QEMU and guest agree on the size each time.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { runtimeOf } from '../support/runtime-text';

interface Details {
  instance: { disks: { uuid: string; sizeBytes: string }[] };
  runtime: { running: boolean; disks: { uuid: string; sizeBytes: string }[]; guest: { known: boolean; disks: string[] } };
  operations: { id: string }[];
}

const NAME = 'growcrash1';
const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sectors = (d: Details): number[] => d.runtime.guest.disks.map((s) => Number(s.split(' ')[1]));

describe('grow-disk converges after a kill of gnt-noded or gnt-masterd mid-grow (real guest)', function () {
  this.timeout(600_000);
  const c = new TestCluster();
  const runtime = (): RuntimeData => runtimeOf(path.join(c.node('node1').dataDir, NAME, 'runtime.json'));
  const diskFile = (): string => runtime().block_devices[0].path;
  /** Config, node record, file and guest all have `bytes`, and no grow is left open. */
  const assertAgree = async (bytes: number): Promise<void> => {
    const d = await c.waitGuest<Details>(NAME, (x) => sectors(x).includes(bytes / 512) && x.operations.length === 0, `${bytes / 512} sectors in the guest, nothing open`);
    assert.equal(Number(d.instance.disks[0].sizeBytes), bytes, 'config');
    assert.equal(Number(d.runtime.disks[0].sizeBytes), bytes, 'node');
    assert.equal(fs.statSync(diskFile()).size, bytes, 'file');
    const rec = runtime().block_devices[0];
    assert.equal(rec.size_bytes, bytes, 'runtime record');
    assert.equal(rec.grow_to, undefined, 'no grow intent left');
    assert.ok(!runtime().operations?.records.some((o) => o.state === 'running'), 'no operation left running on the node');
  };

  before(async () => {
    const g = guestFiles();
    await c.init();
    await c.addNode('node1', { env: { GNT_NODED_CRASH_POINT: 'after-disk-grown' } });
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--maxmem', '512M', '--kernel', g.kernel, '--initrd', g.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', NAME),
    );
    await c.waitGuest<Details>(NAME, (d) => sectors(d).includes(32768), 'the disk');
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it('gnt-noded killed after the file grew, before block_resize: its restart finishes the grow, the job succeeds', async () => {
    const node = c.node('node1');
    const job = c.gntAsync('gnt-instance', 'grow-disk', NAME, '0', '8M');
    for (let i = 0; i < 600 && node.daemon.child.exitCode === null && node.daemon.child.signalCode === null; i++) await sleep(100);
    assert.equal(node.daemon.child.signalCode, 'SIGKILL', 'the node killed itself at the crash point');
    assert.equal(fs.statSync(diskFile()).size, 24 * MiB, 'the file has grown');
    assert.equal(runtime().block_devices[0].grow_to, 24 * MiB, 'the intent is recorded');
    delete node.env.GNT_NODED_CRASH_POINT;
    await c.restartNode('node1');
    const r = await job;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await assertAgree(24 * MiB);
  });

  it('gnt-masterd killed after the node confirmed the grow: after its restart the configuration follows the node', async () => {
    await c.restartMaster({ GNT_MASTERD_CRASH_POINT: 'after-node-hotplug' });
    const r = await c.gntAsync('gnt-instance', 'grow-disk', NAME, '0', '8M');
    await c.waitMasterExit();
    assert.notEqual(r.code, 0, 'the job did not finish: the master died');
    assert.equal(fs.statSync(diskFile()).size, 32 * MiB, 'the node did the grow');
    await c.restartMaster();
    await assertAgree(32 * MiB);
  });
});
