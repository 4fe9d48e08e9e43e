import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { listDeviceIds } from '../../src/hypervisor/qdev';
import { CONTROLLER_BUS_RULE } from '../../src/hypervisor/device-id';
import { AGENT_CONTROLLER_ID, AGENT_PORT_ID } from '../../src/hypervisor/guest-agent-channel';
import { bootGuest, newUuid, REPO, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

/**
 * Runs one hotplug operation in a child process that kills itself with
 * SIGKILL right after QEMU answers `command` (with `beforeSend`: just before
 * `command` is sent, the commands pipelined ahead of it already written): a
 * crash of the node at that line.
 */
function crashAfter(g: BootedGuest, command: string, operation: string, beforeSend = false): void {
  const script = `
    const { KvmInstance } = require(${JSON.stringify(path.join(REPO, 'dist/src/hypervisor/kvm-instance.js'))});
    const wrap = (mon) => ({
      hmp: (c) => mon.hmp(c),
      waitForEvent: (m, t, w) => mon.waitForEvent(m, t, w),
      async execute(cmd, args, opts) {
        if (${beforeSend} && cmd === ${JSON.stringify(command)}) process.kill(process.pid, 'SIGKILL');
        const r = await mon.execute(cmd, args, opts);
        if (cmd === ${JSON.stringify(command)}) process.kill(process.pid, 'SIGKILL');
        return r;
      },
    });
    const { HostPathPolicy } = require(${JSON.stringify(path.join(REPO, 'dist/src/hypervisor/host-paths.js'))});
    const hostPaths = new HostPathPolicy(${JSON.stringify({ storageDir: g.hostPaths.storageDir, imageDir: g.hostPaths.imageDir })});
    const inst = KvmInstance.open(${JSON.stringify(g.dataDir)}, ${JSON.stringify(g.instance.name)}, { wrapMonitor: wrap, hostPaths });
    (async () => { ${operation} })().catch((e) => { console.error(e); process.exit(3); });`;
  g.instance.disconnect(); // the QMP socket serves one client at a time
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, 'SIGKILL', `child should die by SIGKILL after ${command}: ${r.stderr}`);
}

describe('kill -9 in the middle of a hotplug, then reconcile', function () {
  let g: BootedGuest;

  before(async () => {
    g = await bootGuest();
  });
  after(async () => {
    await g?.destroy();
  });

  it('a NIC whose device_add went through but was never recorded as done is kept', async () => {
    const uuid = newUuid();
    crashAfter(g, 'device_add', `await inst.hotAddNic({ uuid: '${uuid}', mac: '52:54:00:99:00:01' });`);
    const after = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths });
    assert.equal(after.runtime.nics[0].state, 'attaching', 'the intent is on disk');
    const tap = after.runtime.nics[0].tap;
    assert.ok(tap && fs.existsSync(`/sys/class/net/${tap}`), `the intent names the tap QEMU holds (${tap})`);
    const report = await after.reconcile();
    assert.equal(report.completed.length, 1);
    assert.equal(after.runtime.nics[0].state, undefined);
    assert.equal(after.runtime.nics[0].tap, tap, 'the completed NIC keeps its tap recorded');
    await g.console.waitFor((s) => s.nets.some((n) => n.mac === '52:54:00:99:00:01'), SEEN_TIMEOUT_MS, 'the NIC');
    g.instance = after;
  });

  it('a removal cut off after device_del is carried to its end', async () => {
    const uuid = g.instance.runtime.nics[0].uuid;
    crashAfter(g, 'device_del', `await inst.hotRemoveNic('${uuid}');`);
    const after = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths });
    assert.equal(after.runtime.nics[0].state, 'detaching');
    const report = await after.reconcile();
    assert.deepEqual(report.rolledBack, []);
    assert.equal(report.completed.length, 1);
    assert.equal(after.runtime.nics.length, 0);
    await g.console.waitFor((s) => s.nets.length === 0, SEEN_TIMEOUT_MS, 'the NIC gone');
    const mon = await after.monitor();
    assert.doesNotMatch(await mon.hmp('info network'), /nic-/, 'netdev released');
    g.instance = after;
  });

  it('a disk whose blockdev-add went out but not its device_add is rolled back', async () => {
    const file = path.join(g.dataDir, 'crash.img');
    require('node:fs').writeFileSync(file, Buffer.alloc(1024 * 1024));
    // blockdev-add and device_add are sent together (pipelined): the crash falls between the two.
    crashAfter(g, 'device_add', `await inst.hotAddDisk({ uuid: '${newUuid()}', path: '${file}' });`, true);
    const after = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths });
    assert.equal(after.runtime.block_devices[0].state, 'attaching');
    const report = await after.reconcile();
    assert.equal(report.rolledBack.length, 1);
    assert.equal(after.runtime.block_devices.length, 0);
    const mon = await after.monitor();
    const nodes = await mon.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
    assert.ok(!nodes.some((n) => n['node-name'].startsWith('disk-')), 'block node released');
    const fdsets = await mon.execute<unknown[]>('query-fdsets');
    assert.deepEqual(fdsets, [], 'fdset released');
    // The PCI bridges of the instance's tree (pcib1, pcib2 by default) and the guest agent's channel are the machine's, not a leftover.
    const own = (id: string): boolean => CONTROLLER_BUS_RULE.test(id) || id === AGENT_CONTROLLER_ID || id === AGENT_PORT_ID;
    assert.deepEqual([...(await listDeviceIds(mon))].filter((id) => !own(id)), [], 'no device left');
    g.instance = after;
  });
});
