/**
 * The case issue 10 starts from, as real processes: gnt-noded SIGKILLs
 * itself after it applied a hotplug and before it replied
 * (GNT_NODED_CRASH_POINT=after-hotplug-applied), and is started again a
 * moment later. The master's job must not report "configuration unchanged":
 * it asks the restarted node for the operation's outcome and commits the
 * change exactly once, so configuration, runtime and guest agree with no
 * operator command.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

interface Details {
  instance: { nics: { uuid: string; mac: string }[]; disks: { uuid: string }[] };
  runtime: { running: boolean; nics: { uuid: string; mac: string }[]; disks: { uuid: string }[]; guest: { known: boolean; nics: string[]; disks: string[] } };
  operations: unknown[];
}

const NAME = 'oc1';
const CRASH = { GNT_NODED_CRASH_POINT: 'after-hotplug-applied' };

describe('gnt-noded killed between applying a hotplug and replying: the master settles the outcome', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  const bridge = 'gntocbr0';

  /** Submits the modify to a node that dies at the crash point, restarts the node without it, and returns the finished job. */
  const modifyThroughCrash = async (...change: string[]): Promise<{ status: string; error: string; log: string[] }> => {
    const n = c.node('node1');
    await c.killNode('node1', 'SIGTERM');
    n.env = CRASH;
    await c.restartNode('node1');
    const id = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', ...change, '--submit', NAME)).stdout.trim();
    const exit = await Promise.race([
      n.daemon.exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('gnt-noded did not die at the crash point')), 60_000)),
    ]);
    assert.equal(exit.signal, 'SIGKILL');
    n.env = {};
    await new Promise((r) => setTimeout(r, 1000));
    await c.restartNode('node1');
    c.gnt('gnt-job', 'watch', id);
    const j = c.json<{ status: string; error: string; log: { message: string }[] }>(c.gnt('gnt-job', 'info', id, '--output', 'json'));
    return { status: j.status, error: j.error, log: j.log.map((l) => l.message) };
  };

  before(async function () {
    let guest: { kernel: string; initrd: string };
    try {
      guest = guestFiles();
    } catch (err) {
      console.log(`      (skipped: ${(err as Error).message})`);
      this.skip();
    }
    spawnSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', bridge, 'up']);
    await c.init();
    await c.addNode('node1');
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=32M', '--net', `link=${bridge}`, NAME),
    );
    await c.waitGuest<Details>(NAME, (d) => d.runtime.guest.nics.length === 1, 'the guest up with its NIC', 120_000);
  });

  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
    spawnSync('ip', ['link', 'del', bridge]);
  });

  it('NIC hot-add: the job succeeds and the NIC is in the configuration once', async () => {
    const mac = '52:54:00:0c:00:02';
    const j = await modifyThroughCrash('--net', `add:mac=${mac},link=${bridge}`);
    assert.equal(j.status, 'success', `${j.error}\n${j.log.join('\n')}`);
    assert.ok(j.log.some((m) => /outcome unknown .*asking node node1 for operation/.test(m)), j.log.join('\n'));
    assert.ok(!j.log.some((m) => /unchanged/.test(m)), j.log.join('\n'));
    const d = await c.waitGuest<Details>(NAME, (x) => x.runtime.guest.nics.some((n) => n.includes(mac)), `NIC ${mac} in the guest`, 60_000);
    assert.equal(d.instance.nics.filter((n) => n.mac === mac).length, 1);
    assert.deepEqual(d.runtime.nics.map((n) => n.uuid).sort(), d.instance.nics.map((n) => n.uuid).sort(), 'config and runtime agree');
    assert.deepEqual(d.operations, []);
  });

  it('disk hot-add: the same, with the size the job asked for', async () => {
    const j = await modifyThroughCrash('--disk', 'add:size=16M');
    assert.equal(j.status, 'success', `${j.error}\n${j.log.join('\n')}`);
    const d = await c.waitGuest<Details>(NAME, (x) => x.runtime.guest.disks.length === 2, 'the second disk in the guest', 60_000);
    assert.equal(d.instance.disks.length, 2);
    assert.deepEqual(d.runtime.disks.map((x) => x.uuid).sort(), d.instance.disks.map((x) => x.uuid).sort());
  });

  it('NIC hot-remove: the job succeeds and the NIC is gone from the configuration', async () => {
    const j = await modifyThroughCrash('--net', '1:remove');
    assert.equal(j.status, 'success', `${j.error}\n${j.log.join('\n')}`);
    const d = await c.waitGuest<Details>(NAME, (x) => x.runtime.guest.nics.length === 1, 'one NIC left in the guest', 60_000);
    assert.equal(d.instance.nics.length, 1);
    assert.deepEqual(d.runtime.nics.map((n) => n.uuid), d.instance.nics.map((n) => n.uuid));
  });
});
