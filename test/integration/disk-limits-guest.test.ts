/**
 * Live I/O limits as the guest itself measures them: the test guest
 * (gnt.ddread=N) times N direct 4 KiB reads of each extra disk with dd every
 * 2 s and prints `gnt-dd <name> <reads> <centiseconds>`. An iops limit set
 * live through the CLI must make the guest's dd slower, to about the limit,
 * and removing it must make it fast again. The bound asserted is the
 * feature itself (throughput inside the guest under a limit), not a
 * latency of this software.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';

const NAME = 'ddlimit1';
const READS = 32;
const IOPS = 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Details {
  runtime: { guest: { known: boolean; disks: string[] } };
}

describe('I/O limits seen by the guest: dd inside it slows to the iops limit and speeds up when it is removed', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  let consoleFile = '';

  /** The reads per second of the next `n` gnt-dd lines for vdb printed after now. */
  const guestRates = async (n: number): Promise<number[]> => {
    const start = fs.statSync(consoleFile).size;
    const deadline = Date.now() + 90_000;
    for (;;) {
      const fd = fs.openSync(consoleFile, 'r');
      const buf = Buffer.alloc(fs.fstatSync(fd).size - start);
      fs.readSync(fd, buf, 0, buf.length, start);
      fs.closeSync(fd);
      // The first line after `start` may have begun before it: skip it.
      const lines = buf.toString('utf8').split('\n').filter((l) => /^gnt-dd vdb \d+ \d+\s*$/.test(l.trim())).slice(1);
      if (lines.length >= n)
        return lines.slice(0, n).map((l) => {
          const [, , reads, cs] = l.trim().split(' ').map(Number);
          return reads / Math.max(cs, 1) * 100;
        });
      if (Date.now() > deadline) throw new Error(`the guest printed ${lines.length} of ${n} gnt-dd lines for vdb in 90 s`);
      await sleep(500);
    }
  };
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

  before(async () => {
    const g = guestFiles();
    await c.init();
    const node = await c.addNode('node1');
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', g.kernel, '--initrd', g.initrd,
        '--kernel-args', `console=ttyS0 quiet loglevel=1 panic=-1 gnt.ddread=${READS}`, '--disk', 'size=16M', '--disk', 'size=16M', NAME),
    );
    await c.waitGuest<Details>(NAME, (d) => d.runtime.guest.disks.length === 2, 'both disks');
    consoleFile = path.join(node.dataDir, NAME, 'console.log');
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it(`iops_max=${IOPS} set live brings the guest's direct reads down to about ${IOPS}/s; iops_max=0 lifts it`, async () => {
    const free = median(await guestRates(3));
    process.stdout.write(`      (guest dd without a limit: ${free.toFixed(0)} reads/s)\n`);
    assert.ok(free > IOPS * 3, `without a limit the guest reads ${free.toFixed(0)}/s; the test needs more than ${IOPS * 3}/s to show a limit of ${IOPS}`);

    const r = c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', `1:iops_max=${IOPS}`, NAME));
    assert.match(r.stdout, /live/);
    // QEMU's throttle lets a burst of a tenth of a second's worth through before it delays requests.
    const limited = await guestRates(3);
    process.stdout.write(`      (guest dd with iops_max=${IOPS}: ${limited.map((x) => x.toFixed(1)).join(', ')} reads/s)\n`);
    for (const x of limited) assert.ok(x <= IOPS * 1.5, `under iops_max=${IOPS} the guest read ${x.toFixed(1)}/s`);
    assert.ok(median(limited) < free / 3, 'the guest\'s dd is slower under the limit');

    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--disk', '1:iops_max=0', NAME));
    const again = median(await guestRates(3));
    process.stdout.write(`      (guest dd after iops_max=0: ${again.toFixed(0)} reads/s)\n`);
    assert.ok(again > IOPS * 3, `with the limit removed the guest reads ${again.toFixed(0)}/s again`);
  });
});
