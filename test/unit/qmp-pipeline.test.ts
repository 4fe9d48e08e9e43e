import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { attachCpu, cpuSlots, detachCpu, freeCpuSlots, withRecorded, type HotpluggableCpu } from '../../src/hypervisor/cpu';
import { attachBlockDevice, releaseBacked } from '../../src/hypervisor/disk';
import { HotplugStepError, isOutcomeUnknown } from '../../src/hypervisor/errors';
import { fdsetsOf } from '../../src/hypervisor/fdset-book';
import { HostPathPolicy } from '../../src/hypervisor/host-paths';
import { inTransaction } from '../../src/hypervisor/hotplug-transaction';
import { attachDimm } from '../../src/hypervisor/memory';
import { attachNic, releaseNic } from '../../src/hypervisor/nic';
import type { NicRecord } from '../../src/hypervisor/runtime-file';
import { GONE, ScriptedMonitor, type Script } from './scripted-monitor';

/** The HotplugStepError `p` rejects with. */
async function stepError(p: Promise<unknown>): Promise<HotplugStepError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HotplugStepError, `expected a HotplugStepError, got ${String(err)}`);
    return err;
  }
  assert.fail('no error');
}

const refused = (desc: string, cls = 'GenericError'): { error: string; class: string } => ({ error: desc, class: cls });

const NIC: NicRecord = { uuid: '3f2a9c1e-0000-4000-8000-000000000001', mac: '52:54:00:12:34:56', pci: 5 };
const NIC_ID = 'nic-3f2a9c1e-pci-5';

describe('pipelined QMP steps (scripted monitor)', () => {
  describe('HotplugTransaction.pipeline', () => {
    it('sends every command before the first answer and returns the answers in order', async () => {
      const mon = new ScriptedMonitor({ a: { ok: 1 }, b: { ok: 2 }, c: { ok: 3 } });
      let sentBeforeAnswer = -1;
      const result = await inTransaction('act', async (tx) => {
        const p = tx.pipeline(['a', 'b', 'c'].map((name) => ({ name, send: () => mon.execute(name) })));
        sentBeforeAnswer = mon.sent.length;
        return p;
      });
      assert.equal(sentBeforeAnswer, 3);
      assert.deepEqual(result, [1, 2, 3]);
    });

    it('a send that throws at once is that step failing, and the steps QEMU ran before it are undone', async () => {
      const mon = new ScriptedMonitor({});
      const err = await stepError(
        inTransaction('act', (tx) =>
          tx.pipeline([
            { name: 'a', send: () => mon.execute('a'), undo: () => mon.execute('undo-a') },
            {
              name: 'b',
              send: () => {
                throw new Error('bad arguments');
              },
            },
          ]),
        ),
      );
      assert.equal(err.step, 'b');
      assert.deepEqual(err.undone, ['a']);
      assert.deepEqual(mon.commands(), ['a', 'undo-a']);
    });
  });

  describe('NIC attach: getfd, netdev_add, device_add in one pipeline', () => {
    it('sends all three at once, the fd with its getfd, and undoes nothing when QEMU takes them', async () => {
      const mon = new ScriptedMonitor({});
      const p = attachNic(mon, NIC, 5, {}, [42]);
      assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add'], 'all sent before any answer');
      await p;
      assert.deepEqual(mon.sent[0], { command: 'getfd', args: { fdname: NIC_ID }, fds: [42] });
      assert.deepEqual(mon.sent[1].args, { type: 'tap', id: NIC_ID, fd: NIC_ID });
      assert.equal(mon.sent[1].fds, undefined, 'netdev_add carries no fd');
      assert.equal(mon.sent.length, 3);
    });

    it('getfd refused: the two after it only followed from it; nothing is undone', async () => {
      const mon = new ScriptedMonitor({
        getfd: refused('No file descriptor supplied via SCM_RIGHTS'),
        netdev_add: refused(`File descriptor named '${NIC_ID}' has not been found`),
        device_add: refused(`Property 'virtio-net-pci.netdev' can't find value '${NIC_ID}'`),
      });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.equal(err.step, `getfd ${NIC_ID}`);
      assert.match(err.message, /No file descriptor supplied/);
      assert.doesNotMatch(err.message, /has not been found|can't find value/, 'the followers are not reported as faults');
      assert.deepEqual(err.undone, []);
      assert.deepEqual(err.undoFailures, []);
      assert.equal(isOutcomeUnknown(err), false);
      assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add']);
    });

    it('netdev_add refused: the named fd is closed again, device_add only followed', async () => {
      const mon = new ScriptedMonitor({
        netdev_add: refused('could not configure /dev/net/tun'),
        device_add: refused(`Property 'virtio-net-pci.netdev' can't find value '${NIC_ID}'`),
      });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.equal(err.step, 'netdev_add');
      assert.deepEqual(err.undone, [`getfd ${NIC_ID}`]);
      assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add', 'closefd']);
      assert.deepEqual(mon.sent[3].args, { fdname: NIC_ID });
    });

    it('netdev_add refused after it had taken the fd: the closefd that finds nothing is not a rollback failure', async () => {
      const mon = new ScriptedMonitor({
        netdev_add: refused('tap: vnet_hdr probe failed'),
        device_add: refused("can't find value"),
        closefd: refused(`File descriptor named '${NIC_ID}' not found`),
      });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.deepEqual(err.undone, [`getfd ${NIC_ID}`]);
      assert.deepEqual(err.undoFailures, []);
    });

    it('device_add refused: netdev_add is undone, and getfd is not (netdev_add consumed its fd)', async () => {
      const mon = new ScriptedMonitor({ device_add: refused('PCI: slot 5 function 0 not available for virtio-net-pci, in use by intruder') });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.equal(err.step, 'device_add');
      assert.deepEqual(err.undone, ['netdev_add']);
      assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add', 'netdev_del']);
    });

    it('netdev_add refused but device_add executed (a netdev of that id was left from before): the device is taken out again', async () => {
      const mon = new ScriptedMonitor({ netdev_add: refused(`Duplicate ID '${NIC_ID}' for netdev`, 'GenericError'), ...GONE });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.equal(err.step, 'netdev_add');
      assert.deepEqual(err.undone, ['device_add', `getfd ${NIC_ID}`], 'exactly what QEMU executed, newest first');
      const after = mon.commands().slice(3);
      assert.equal(after[0], 'device_del');
      assert.deepEqual(mon.sent[3].args, { id: NIC_ID });
      assert.ok(after.includes('qom-list') && after.includes('query-pci'), 'waited until QEMU no longer lists it');
      assert.equal(after[after.length - 1], 'closefd');
      assert.ok(!after.includes('netdev_del'), 'the netdev that was there before is not ours to delete');
    });

    it('set_link refused (a link-down NIC): device_add and netdev_add are undone', async () => {
      const mon = new ScriptedMonitor({ set_link: refused(`Device '${NIC_ID}' not found`, 'DeviceNotFound'), ...GONE });
      const err = await stepError(attachNic(mon, { ...NIC, link_state: 'down' }, 5, {}, [42]));
      assert.equal(err.step, 'set_link');
      assert.deepEqual(err.undone, ['device_add', 'netdev_add']);
      assert.deepEqual(mon.commands().slice(0, 5), ['getfd', 'netdev_add', 'device_add', 'set_link', 'device_del']);
      assert.equal(mon.commands()[mon.commands().length - 1], 'netdev_del');
    });

    for (const position of ['getfd', 'netdev_add', 'device_add'] as const) {
      it(`a timeout at ${position} leaves the outcome unknown: nothing is undone, the intent stays for reconcile`, async () => {
        const script: Script = { [position]: 'timeout' };
        const mon = new ScriptedMonitor(script);
        const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
        assert.equal(isOutcomeUnknown(err), true);
        assert.equal(err.outcomeUnknown, true);
        assert.deepEqual(err.undone, []);
        assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add'], 'no undo sent');
      });
    }

    it('a monitor that goes away mid-pipeline, after an earlier refusal too, is still "outcome unknown"', async () => {
      const mon = new ScriptedMonitor({ getfd: refused('boom'), netdev_add: 'gone', device_add: 'gone' });
      const err = await stepError(attachNic(mon, NIC, 5, {}, [42]));
      assert.equal(err.outcomeUnknown, true);
      assert.equal(err.step, 'netdev_add');
      assert.deepEqual(mon.commands(), ['getfd', 'netdev_add', 'device_add']);
    });

    it('a multi-queue NIC: one getfd per queue, each with its own fd; netdev_add takes over both', async () => {
      const mon = new ScriptedMonitor({ device_add: refused('refused') });
      const err = await stepError(attachNic(mon, { ...NIC, queues: 2 }, 5, {}, [40, 41]));
      assert.deepEqual(mon.sent.slice(0, 2).map((s) => [s.args?.fdname, s.fds]), [[`${NIC_ID}-q0`, [40]], [`${NIC_ID}-q1`, [41]]]);
      assert.deepEqual(mon.sent[2].args, { type: 'tap', id: NIC_ID, fds: `${NIC_ID}-q0:${NIC_ID}-q1`, vhost: false });
      assert.deepEqual(err.undone, ['netdev_add']);
    });
  });

  describe('NIC release', () => {
    it('a NIC whose attach went through: netdev_del only (netdev_add took its fd)', async () => {
      const mon = new ScriptedMonitor({});
      await releaseNic(mon, NIC, 5);
      assert.deepEqual(mon.commands(), ['netdev_del']);
    });

    it('a NIC removed while detaching: netdev_del only', async () => {
      const mon = new ScriptedMonitor({});
      await releaseNic(mon, { ...NIC, state: 'detaching' }, 5);
      assert.deepEqual(mon.commands(), ['netdev_del']);
    });

    it('a record still attaching (its attach was cut off, maybe before netdev_add): closefd of every name too, "not found" is fine', async () => {
      const mon = new ScriptedMonitor({ netdev_del: refused(`Device '${NIC_ID}' not found`, 'DeviceNotFound'), closefd: refused('File descriptor named x not found') });
      await releaseNic(mon, { ...NIC, state: 'attaching', queues: 2 }, 5);
      assert.deepEqual(mon.commands(), ['netdev_del', 'closefd', 'closefd']);
      assert.deepEqual(mon.sent.slice(1).map((s) => s.args?.fdname), [`${NIC_ID}-q0`, `${NIC_ID}-q1`]);
    });
  });

  describe('DIMM attach: object-add and device_add in one pipeline', () => {
    const dimm = { id: 'dimm0', sizeMiB: 128 };

    it('object-add refused: device_add only followed, nothing to undo', async () => {
      const mon = new ScriptedMonitor({ 'object-add': refused('cannot set up guest memory'), device_add: refused("can't find value 'mem-dimm0'") });
      const err = await stepError(attachDimm(mon, dimm));
      assert.equal(err.step, 'object-add');
      assert.deepEqual(err.undone, []);
      assert.deepEqual(mon.commands(), ['object-add', 'device_add']);
    });

    it('device_add refused: the backend is deleted', async () => {
      const mon = new ScriptedMonitor({ device_add: refused('not enough space') });
      const err = await stepError(attachDimm(mon, dimm));
      assert.equal(err.step, 'device_add');
      assert.deepEqual(err.undone, ['object-add']);
      assert.deepEqual(mon.commands(), ['object-add', 'device_add', 'object-del']);
      assert.deepEqual(mon.sent[2].args, { id: 'mem-dimm0' });
    });

    it('a timeout of device_add: outcome unknown, the backend stays for reconcile', async () => {
      const mon = new ScriptedMonitor({ device_add: 'timeout' });
      const err = await stepError(attachDimm(mon, dimm));
      assert.equal(err.outcomeUnknown, true);
      assert.deepEqual(mon.commands(), ['object-add', 'device_add']);
    });
  });

  describe('disk attach and release: the fdset from add-fd, no query-fdsets', () => {
    let dir: string;
    let file: string;
    let policy: HostPathPolicy;
    before(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-pipeline-'));
      file = path.join(dir, 'd.img');
      fs.writeFileSync(file, Buffer.alloc(4096));
      policy = new HostPathPolicy({ storageDir: dir });
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    const props = { driver: 'virtio-blk-pci', id: 'disk-a', drive: 'disk-a', addr: '0x6' };

    it('add-fd answered first, then blockdev-add and device_add together; release uses the fdset add-fd gave', async () => {
      const mon = new ScriptedMonitor({ 'add-fd': { ok: { 'fdset-id': 7, fd: 30 } } });
      await attachBlockDevice(mon, 'disk', 'disk-a', file, policy, props);
      assert.deepEqual(mon.commands(), ['add-fd', 'blockdev-add', 'device_add']);
      assert.equal((mon.sent[1].args as { filename: string }).filename, '/dev/fdset/7');
      await releaseBacked(mon, 'disk-a', {});
      assert.deepEqual(mon.commands().slice(3), ['blockdev-del', 'remove-fd']);
      assert.deepEqual(mon.sent[4].args, { 'fdset-id': 7 });
      assert.deepEqual(await fdsetsOf(mon, 'disk-a'), [], 'the book knows it is gone');
      assert.ok(!mon.commands().includes('query-fdsets'));
    });

    it('blockdev-add refused: device_add only followed; the fdset is removed and the book forgets it', async () => {
      const mon = new ScriptedMonitor({ 'add-fd': { ok: { 'fdset-id': 3, fd: 31 } }, 'blockdev-add': refused('Failed to get "write" lock'), device_add: refused("Property 'virtio-blk-pci.drive' can't find value 'disk-a'") });
      const err = await stepError(attachBlockDevice(mon, 'disk', 'disk-a', file, policy, props));
      assert.equal(err.step, 'blockdev-add');
      assert.deepEqual(err.undone, ['add-fd', 'open disk']);
      assert.deepEqual(mon.commands(), ['add-fd', 'blockdev-add', 'device_add', 'remove-fd']);
      await releaseBacked(mon, 'disk-a', {});
      assert.deepEqual(mon.commands().slice(4), ['blockdev-del'], 'no fdset left to remove, none asked for');
    });

    it('device_add refused: the block node and the fdset are undone', async () => {
      const mon = new ScriptedMonitor({ 'add-fd': { ok: { 'fdset-id': 4, fd: 32 } }, device_add: refused('slot in use') });
      const err = await stepError(attachBlockDevice(mon, 'disk', 'disk-a', file, policy, props));
      assert.equal(err.step, 'device_add');
      assert.deepEqual(err.undone, ['blockdev-add', 'add-fd', 'open disk']);
      assert.deepEqual(mon.commands(), ['add-fd', 'blockdev-add', 'device_add', 'blockdev-del', 'remove-fd']);
    });

    it('a connection that did not add the disk (boot-time disks, a node daemon restart) reads query-fdsets once for all of them', async () => {
      const mon = new ScriptedMonitor({
        'query-fdsets': { ok: [{ 'fdset-id': 1, fds: [{ fd: 20, opaque: 'disk-a' }] }, { 'fdset-id': 2, fds: [{ fd: 21, opaque: 'disk-b' }] }] },
      });
      await releaseBacked(mon, 'disk-a', {});
      await releaseBacked(mon, 'disk-b', {});
      await releaseBacked(mon, 'disk-c', {});
      assert.deepEqual(mon.commands(), ['blockdev-del', 'query-fdsets', 'remove-fd', 'blockdev-del', 'remove-fd', 'blockdev-del']);
      assert.deepEqual([mon.sent[2].args, mon.sent[4].args], [{ 'fdset-id': 1 }, { 'fdset-id': 2 }]);
    });

    it('a remove-fd without an answer drops the book: the next release asks QEMU', async () => {
      let n = 0;
      const mon = new ScriptedMonitor({ 'add-fd': { ok: { 'fdset-id': 5, fd: 33 } }, 'remove-fd': () => (n++ === 0 ? 'timeout' : { ok: {} }), 'query-fdsets': { ok: [{ 'fdset-id': 5, fds: [{ fd: 33, opaque: 'disk-a' }] }] } });
      await attachBlockDevice(mon, 'disk', 'disk-a', file, policy, props);
      await assert.rejects(releaseBacked(mon, 'disk-a', {}), (e: unknown) => isOutcomeUnknown(e));
      await releaseBacked(mon, 'disk-a', {});
      assert.deepEqual(mon.commands().slice(3), ['blockdev-del', 'remove-fd', 'blockdev-del', 'query-fdsets', 'remove-fd']);
    });
  });

  describe('vCPU slots: read once per connection, kept by our own adds and removes', () => {
    const slot = (core: number, plugged: boolean): HotpluggableCpu => ({
      type: 'qemu64-x86_64-cpu',
      'vcpus-count': 1,
      props: { 'socket-id': 0, 'core-id': core, 'thread-id': 0 },
      ...(plugged ? { 'qom-path': `/machine/unattached/device[${core}]` } : {}),
    });
    const cpusOf = (): HotpluggableCpu[] => [slot(0, true), slot(1, false), slot(2, false)];

    it('one query-hotpluggable-cpus, then adds and removes are counted without asking QEMU', async () => {
      const mon = new ScriptedMonitor({ 'query-hotpluggable-cpus': { ok: cpusOf() }, ...GONE });
      const [first] = freeCpuSlots('g1', await cpuSlots(mon), 1);
      assert.equal(first.id, 'vcpu-s0-c1-t0');
      await attachCpu(mon, first);
      const [second] = freeCpuSlots('g1', await cpuSlots(mon), 1);
      assert.equal(second.id, 'vcpu-s0-c2-t0', 'the one just added is taken');
      await detachCpu(mon, first, 1000);
      assert.equal(freeCpuSlots('g1', await cpuSlots(mon), 1)[0].id, 'vcpu-s0-c1-t0', 'the removed one is free again');
      assert.equal(mon.commands().filter((c) => c === 'query-hotpluggable-cpus').length, 1);
    });

    it('a device_add QEMU refuses drops the kept slots: the next add reads QEMU again', async () => {
      const mon = new ScriptedMonitor({ 'query-hotpluggable-cpus': { ok: cpusOf() }, device_add: refused('CPU is already plugged') });
      const [cpu] = freeCpuSlots('g1', await cpuSlots(mon), 1);
      await assert.rejects(attachCpu(mon, cpu), /already plugged/);
      await cpuSlots(mon);
      assert.equal(mon.commands().filter((c) => c === 'query-hotpluggable-cpus').length, 2);
    });

    it('the records count as plugged whatever was kept', () => {
      const rec = { id: 'vcpu-s0-c1-t0', driver: 'qemu64-x86_64-cpu', props: { 'socket-id': 0, 'core-id': 1, 'thread-id': 0 }, state: 'attaching' as const };
      assert.equal(freeCpuSlots('g1', withRecorded(cpusOf(), [rec]), 1)[0].id, 'vcpu-s0-c2-t0');
      assert.throws(() => freeCpuSlots('g1', withRecorded(cpusOf(), [rec]), 2), /room for 1 more vCPUs/);
    });
  });
});

describe('block node release (scripted monitor)', () => {
  it('"is in use" (the device left the lists but is not finalized yet) is retried until QEMU lets go', async () => {
    const { releaseBacked } = await import('../../src/hypervisor/disk');
    const mon = new ScriptedMonitor({
      'blockdev-del': (_a, n) => (n < 2 ? refused('Node disk-a is in use') : { ok: {} }),
      'query-fdsets': { ok: [] },
    });
    await releaseBacked(mon, 'disk-a', {});
    assert.deepEqual(mon.commands(), ['blockdev-del', 'blockdev-del', 'blockdev-del', 'query-fdsets']);
  });

  it('any other refusal of blockdev-del is not retried', async () => {
    const { releaseBacked } = await import('../../src/hypervisor/disk');
    const mon = new ScriptedMonitor({ 'blockdev-del': refused('Permission denied') });
    await assert.rejects(releaseBacked(mon, 'disk-a', {}), /Permission denied/);
    assert.deepEqual(mon.commands(), ['blockdev-del']);
  });

  it('a blockdev-del slower than the retry interval (an RBD close) leaves no unhandled rejection behind', async () => {
    const { releaseBacked } = await import('../../src/hypervisor/disk');
    const unhandled: unknown[] = [];
    const onUnhandled = (r: unknown): void => void unhandled.push(r);
    process.on('unhandledRejection', onUnhandled);
    try {
      const inner = new ScriptedMonitor({ 'query-fdsets': { ok: [] } });
      const slow = Object.assign(Object.create(inner) as ScriptedMonitor, {
        execute: async <T>(command: string, args?: Record<string, unknown>): Promise<T> => {
          const p = inner.execute<T>(command, args);
          if (command === 'blockdev-del') await new Promise((r) => setTimeout(r, 60));
          return p;
        },
      });
      await releaseBacked(slow, 'disk-a', {});
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, []);
  });
});
