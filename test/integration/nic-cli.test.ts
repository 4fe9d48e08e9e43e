/**
 * Live NIC changes end to end: `gnt-instance add --net ...,queues=N,rate=..`
 * and `gnt-instance modify --hotplug --net N:link=..,link_state=..,rate=..`
 * through the CLI, the master's job and a node daemon, seen by the real
 * guest; the job log says how each change was applied; bad input refused
 * with the configuration unchanged; stop and start keep everything.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { guestFiles, sh } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

interface NicCfg { mac: string; link: string; linkState: string; rateMbit: number; queues: number; model: string }
interface Details {
  instance: { nics: NicCfg[] };
  runtime: { running: boolean; nics: Array<{ tap: string; pci: number; linkState: string; rateMbit: number; queues: number }>; guest: { known: boolean; nics: string[] } };
}

const NAME = 'nl1';
const BR_A = 'gntclia0';
const BR_B = 'gntclib0';
const MAC = '52:54:00:c1:00:01';

/** The guest's line of the NIC: "eth0 MAC PCI QUEUES CARRIER". */
const guestNic = (d: Details): { pci: string; queues: string; carrier: string } | undefined => {
  const line = d.runtime.guest.nics.find((l) => l.includes(MAC));
  if (!line) return undefined;
  const [, , pci, queues, carrier] = line.split(' ');
  return { pci, queues, carrier };
};

describe('live NIC changes through the cluster (gnt-instance modify --net N:link=,link_state=,rate=)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  const info = (): Details => c.instanceInfo<Details>(NAME);
  const waitGuest = (pred: (d: Details) => boolean, what: string): Promise<Details> => c.waitGuest<Details>(NAME, (d) => d.runtime.running && pred(d), what, 120_000);
  const refused = (args: string[], re: RegExp): void => {
    const before = info().instance.nics;
    const r = c.gnt('gnt-instance', 'modify', '--hotplug', ...args, NAME);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail: ${r.stdout}`);
    assert.match(r.stderr, re);
    assert.deepEqual(info().instance.nics, before, 'the configuration is unchanged');
  };

  before(async () => {
    for (const br of [BR_A, BR_B]) sh('ip', ['link', 'add', br, 'type', 'bridge']);
    const guest = guestFiles();
    await c.init();
    await c.addNode('node1');
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '2', '--maxvcpus', '4', '--memory', '256M', '--maxmem', '1G',
        '--net', `mac=${MAC},link=${BR_A},queues=2,rate=10`,
        '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', NAME),
    );
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
    for (const br of [BR_A, BR_B]) sh('ip', ['link', 'del', br]);
  });

  it('instance add: two queues in the guest, the limit on the tap, the values in the configuration', async () => {
    const d = await waitGuest((x) => guestNic(x)?.queues === '2' && guestNic(x)?.carrier === '1', 'the NIC with two queues, carrier up');
    const n = d.instance.nics[0];
    assert.deepEqual([n.mac, n.link, n.linkState, n.rateMbit, n.queues, n.model], [MAC, BR_A, 'up', 10, 2, 'virtio']);
    assert.deepEqual([d.runtime.nics[0].rateMbit, d.runtime.nics[0].queues], [10, 2], 'the node records them too');
    const tap = d.runtime.nics[0].tap;
    assert.match(sh('tc', ['qdisc', 'show', 'dev', tap]), /tbf .* rate 10Mbit/);
    const text = c.ok(c.gnt('gnt-instance', 'info', NAME)).stdout;
    assert.match(text, new RegExp(`${MAC}\\s+${BR_A}\\s+up\\s+10 Mbit/s\\s+2\\s+virtio`));
  });

  it('--net 0:link=BR2,link_state=down,rate=0: applied live, the job log says so, the guest keeps the device', async () => {
    const before = await waitGuest((x) => !!guestNic(x), 'the NIC');
    const tap = before.runtime.nics[0].tap;
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `0:link=${BR_B},link_state=down,rate=0`, NAME));
    assert.match(r.stdout, new RegExp(`applied: link=${BR_B}: live, rate=none: live, link_state=down: live`));
    const d = await waitGuest((x) => guestNic(x)?.carrier === '0', 'carrier down');
    assert.equal(guestNic(d)?.pci, guestNic(before)?.pci, 'same PCI address');
    assert.equal(d.runtime.nics[0].tap, tap, 'same tap');
    assert.equal(fs.readlinkSync(`/sys/class/net/${tap}/master`).split('/').pop(), BR_B);
    assert.doesNotMatch(sh('tc', ['qdisc', 'show', 'dev', tap]), /tbf/);
    assert.deepEqual([d.instance.nics[0].link, d.instance.nics[0].linkState, d.instance.nics[0].rateMbit], [BR_B, 'down', 0]);
    assert.equal(d.runtime.nics[0].linkState, 'down');
  });

  it('refuses bad values, unknown keys, queues on a modify and a missing bridge; nothing changes', () => {
    refused(['--net', '0:queues=4'], /queues of an existing NIC cannot change/);
    refused(['--net', '0:link_state=off'], /link_state must be up or down, not "off"/);
    refused(['--net', '0:rate=fast'], /rate must be a whole number of Mbit\/s/);
    refused(['--net', '0:model=ne2k'], /model must be one of virtio, e1000, rtl8139/);
    refused(['--net', '0:colour=red'], /unknown parameter "colour"/);
    refused(['--net', 'add:queues=5'], /queues=5 is more than the instance's 4 maximum vCPUs/);
    refused(['--net', '0:link=gntnobr0'], /bridge "gntnobr0" does not exist/);
  });

  it('stop and start keep link down, bridge and queues; link_state=up brings the carrier back', async () => {
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    c.ok(c.gnt('gnt-instance', 'start', NAME));
    const d = await waitGuest((x) => guestNic(x)?.queues === '2' && guestNic(x)?.carrier === '0', 'two queues, carrier still down');
    assert.equal(fs.readlinkSync(`/sys/class/net/${d.runtime.nics[0].tap}/master`).split('/').pop(), BR_B);
    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '0:link_state=up', NAME));
    assert.match(r.stdout, /applied: link_state=up: live/);
    await waitGuest((x) => guestNic(x)?.carrier === '1', 'carrier up');
  });

  it('gnt-cluster verify reports a tap moved to another bridge and a changed tc limit behind its back; --fix puts back the recorded ones', async () => {
    // An e1000 NIC and a rate-limited one: their records match QEMU and the host, so no finding.
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:c1:00:02,model=e1000', NAME));
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', '0:rate=40', NAME));
    const clean = c.gnt('gnt-cluster', 'verify');
    assert.equal(clean.code, 0, `a clean cluster: ${clean.stdout}${clean.stderr}`);
    const tap = info().runtime.nics[0].tap;
    sh('ip', ['link', 'set', tap, 'nomaster']);
    sh('ip', ['link', 'set', tap, 'master', BR_A]);
    sh('tc', ['qdisc', 'replace', 'dev', tap, 'root', 'tbf', 'rate', '7mbit', 'burst', '32768', 'latency', '50ms']);
    const r = c.gnt('gnt-cluster', 'verify');
    assert.notEqual(r.code, 0);
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('ERROR: '));
    assert.equal(errors.filter((l) => l.includes(`tap ${tap} is on bridge ${BR_A}, the runtime file says bridge ${BR_B}`)).length, 1, r.stdout);
    assert.equal(errors.filter((l) => l.includes(`tap ${tap} has a limit of 7 Mbit/s, the runtime file says 40 Mbit/s`)).length, 1, r.stdout);
    assert.equal(errors.length, 2, `only these two: ${r.stdout}`);
    const fixed = c.gnt('gnt-cluster', 'verify', '--fix');
    assert.equal(fixed.stdout.split('\n').filter((l) => l.startsWith('FIXED: ')).length, 2, fixed.stdout);
    assert.equal(fs.readlinkSync(`/sys/class/net/${tap}/master`).split('/').pop(), BR_B);
    assert.match(sh('tc', ['qdisc', 'show', 'dev', tap]), /tbf .* rate 40Mbit/);
    assert.equal(c.gnt('gnt-cluster', 'verify').code, 0, 'clean again');
  });
});
