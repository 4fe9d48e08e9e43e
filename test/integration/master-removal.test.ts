/**
 * Removal pending end to end, as real processes: gnt-masterd (convergence
 * loop every 300 ms), a gnt-noded with a 2 s NIC unplug timeout and the test
 * QMP socket, the test guest. With the guest paused (QMP "stop" on the test
 * socket) a hot-remove cannot be acknowledged: the job ends OK saying the
 * removal is pending, `gnt-instance info` and `list` show "removal pending",
 * repeating the remove waits again (never NOT_FOUND). Once the guest runs
 * again and lets go, the NIC leaves the node's runtime and the master's
 * configuration with no command, and the first job's log says so.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';
import { QmpClient } from '../../src/hypervisor/qmp-client';
import { instancePaths } from '../../src/hypervisor/instance-paths';

interface Details {
  instance: { nics: { index: number; uuid: string; mac: string; removalPending: boolean }[] };
  runtime: { running: boolean; nics: { uuid: string; state: string }[]; guest: { known: boolean; nics: string[] } };
  operations: { id: string; state: string }[];
}

const NAME = 'rp1';
const MAC = '52:54:00:7e:00:02';

describe('removal pending through the master: a guest that does not release a NIC', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  const bridge = 'gntrpbr0';
  let qmp: QmpClient | undefined;
  const info = (): Details => c.instanceInfo<Details>(NAME);
  const until = async (pred: (d: Details) => boolean, what: string, ms = 60_000): Promise<Details> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const d = info();
      if (pred(d)) return d;
      if (Date.now() > deadline) throw new Error(`never saw ${what}: ${JSON.stringify(d)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
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
    await c.init({ GNT_MASTERD_CONVERGE_INTERVAL_MS: '300' });
    await c.addNode('node1', { extraArgs: ['--test-monitor', '--unplug-timeout', 'nic=2'] });
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--net', `link=${bridge}`, NAME),
    );
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=${MAC},link=${bridge}`, NAME));
    await c.waitGuest<Details>(NAME, (d) => d.runtime.guest.nics.some((n) => n.includes(MAC)), `NIC ${MAC} in the guest`, 120_000);
  });

  after(async () => {
    qmp?.close();
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
    spawnSync('ip', ['link', 'del', bridge]);
  });

  let firstJob = '';
  it('with the guest paused, the remove ends OK as "removal pending", shown by info and list', async () => {
    const sock = instancePaths(c.node('node1').dataDir, NAME).testQmpSocket as string;
    assert.ok(fs.existsSync(sock), `no test QMP socket at ${sock}`);
    qmp = await QmpClient.connect(sock);
    await qmp.execute('stop');
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', '--submit', NAME));
    firstJob = r.stdout.trim();
    const watch = c.ok(c.gnt('gnt-job', 'watch', firstJob));
    assert.match(watch.stdout, /removal pending: the guest has not released the device yet/);
    const d = info();
    assert.equal(d.instance.nics.length, 2);
    assert.equal(d.instance.nics[1].mac, MAC);
    assert.equal(d.instance.nics[1].removalPending, true);
    assert.ok(d.operations.some((o) => o.state === 'removal_pending'), JSON.stringify(d.operations));
    assert.match(c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout, new RegExp(`${MAC} .*removal pending`));
    assert.match(c.ok(c.gnt('gnt-instance', 'list')).stdout, /2 \(1 removal pending\)/);
  });

  it('repeating the remove waits again instead of NOT_FOUND', () => {
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', NAME));
    assert.match(r.stdout, /removal pending/);
    assert.equal(info().instance.nics.length, 2);
  });

  it('once the guest runs and lets go, the NIC leaves the runtime and the configuration with no command', async () => {
    await qmp!.execute('cont');
    const d = await until((x) => x.instance.nics.length === 1 && x.runtime.nics.length === 1, 'the NIC gone from config and runtime');
    assert.ok(!d.instance.nics.some((n) => n.mac === MAC));
    assert.deepEqual(d.operations, []);
    const log = c.json<{ log: { message: string }[] }>(c.gnt('gnt-job', 'info', firstJob, '--output', 'json')).log.map((l) => l.message);
    assert.ok(log.some((m) => /^settled by the node after the job: hot-remove of NIC .* succeeded/.test(m)), log.join('\n'));
    await c.waitGuest<Details>(NAME, (x) => !x.runtime.guest.nics.some((n) => n.includes(MAC)), 'the NIC gone from the guest', 60_000);
  });
});
