/**
 * The comparisons of verify (src/hypervisor/inventory.ts) on QEMU's lists
 * captured from QEMU 10.0.2 (test/fixtures/verify-qemu10-pc.json): a guest
 * with a boot NIC and disk, a hot-added NIC and disk, a hot-added vCPU and a
 * DIMM ("settled"), and the same QEMU after a raw device_del of the
 * hot-added NIC and disk ("unplugged": their netdev, block node and fdset
 * stay behind).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  compareBackends,
  compareDevices,
  compareInstance,
  compareResources,
  compareStopped,
  compareTaps,
  findOrphanFiles,
  findStrayTaps,
  flattenPci,
  inventoryFrom,
  parseInfoNetwork,
  tapOfFdinfo,
  tapOfNic,
  type Finding,
  type HostTap,
  type QemuInventory,
  type RawInventory,
} from '../../src/hypervisor/inventory';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';

interface Snapshot extends RawInventory {
  runtime: RuntimeData;
  tunFdinfo: Record<string, string>;
}

const FIXTURES = path.resolve(__dirname, '../../../test/fixtures');
const captured = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'verify-qemu10-pc.json'), 'utf8')) as { settled: Snapshot; unplugged: Snapshot };

function load(which: 'settled' | 'unplugged'): { rt: RuntimeData; q: QemuInventory } {
  const s = JSON.parse(JSON.stringify(captured[which])) as Snapshot;
  const tun = new Map(Object.entries(s.tunFdinfo).map(([fd, text]) => [Number(fd), tapOfFdinfo(text) as string]));
  return { rt: s.runtime, q: inventoryFrom(s, tun) };
}

const HOST: HostTap[] = [{ name: 'gnttap0', master: 'vbr0' }, { name: 'gnttap1', master: 'vbr0' }];
const bridges = (link: string): boolean => link === 'vbr0';
const codes = (fs: Finding[]): string[] => fs.map((f) => `${f.code} ${f.device}`).sort();

const NIC2 = '01fc3e26-2a1f-4fc1-9cd6-45c2fd43f0d3';
const DISK2 = 'dcb12bee-7bdd-4744-9f47-0ae2f05d5e05';

describe('verify inventory (QEMU 10 lists)', () => {
  it('parses info network: NICs with their MAC and netdev, netdevs with their fd', () => {
    const net = parseInfoNetwork(captured.settled.infoNetwork);
    assert.deepEqual(
      net.map((c) => [c.id, c.type, c.peer, c.mac ?? c.fd]),
      [
        ['nic-d44a6056-pci-5', 'nic', 'nic-d44a6056-pci-5', '52:54:00:aa:00:01'],
        ['nic-d44a6056-pci-5', 'tap', 'nic-d44a6056-pci-5', 4],
        ['nic-01fc3e26-pci-6', 'nic', 'nic-01fc3e26-pci-6', '52:54:00:aa:00:02'],
        ['nic-01fc3e26-pci-6', 'tap', 'nic-01fc3e26-pci-6', 22],
      ],
    );
    const left = parseInfoNetwork(captured.unplugged.infoNetwork).find((c) => c.id === 'nic-01fc3e26-pci-6');
    assert.deepEqual(left, { id: 'nic-01fc3e26-pci-6', type: 'tap', fd: 22 }, 'a netdev without its NIC has no peer');
  });

  it('reads the tap of a tun fd from fdinfo and maps each NIC to its tap', () => {
    assert.equal(tapOfFdinfo('pos:\t122\nflags:\t0104002\nmnt_id:\t58\nino:\t105\niff:\tgnttap0\n'), 'gnttap0');
    assert.equal(tapOfFdinfo('pos:\t0\nflags:\t02\n'), undefined);
    const { q } = load('settled');
    assert.equal(tapOfNic(q, 'nic-d44a6056-pci-5'), 'gnttap0');
    assert.equal(tapOfNic(q, 'nic-01fc3e26-pci-6'), 'gnttap1');
  });

  it('flattens query-pci through bridges (q35 fixture)', () => {
    const q35 = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'query-pci-qemu10-q35.json'), 'utf8')) as Parameters<typeof flattenPci>[0];
    const all = flattenPci(q35);
    assert.ok(all.some((p) => p.qdevId === 'nic-aa-pci-3' && p.bus === 0 && p.slot === 3));
    const bridged = flattenPci([{ bus: 0, devices: [{ bus: 0, slot: 2, function: 0, qdev_id: 'br', pci_bridge: { devices: [{ bus: 1, slot: 1, function: 0, qdev_id: 'behind' }] } }] }]);
    assert.deepEqual(bridged.map((p) => [p.qdevId, p.bus, p.slot]), [['br', 0, 2], ['behind', 1, 1]]);
  });

  it('finds nothing on a settled instance', () => {
    const { rt, q } = load('settled');
    assert.deepEqual(compareInstance(rt, q, HOST, bridges), []);
  });

  it('a device removed with a raw device_del: its record has no device, its netdev, block node and fdset no user', () => {
    const { rt, q } = load('unplugged');
    const found = compareInstance(rt, q, HOST, bridges);
    assert.deepEqual(codes(found), [
      'record-without-device NIC 01fc3e26-2a1f-4fc1-9cd6-45c2fd43f0d3 (nic-01fc3e26-pci-6)',
      'record-without-device disk dcb12bee-7bdd-4744-9f47-0ae2f05d5e05 (disk-dcb12bee-pci-7)',
      'unused-backend block node disk-dcb12bee-pci-7 (file, /dev/fdset/0)',
      'unused-backend netdev nic-01fc3e26-pci-6 (tap)',
    ]);
    const repairs = found.map((f) => f.repair);
    assert.deepEqual(repairs.filter((r) => r?.kind === 'drop-record'), [
      { kind: 'drop-record', record: 'nic', key: NIC2 },
      { kind: 'drop-record', record: 'disk', key: DISK2 },
    ]);
    assert.ok(repairs.some((r) => r?.kind === 'release-block-node' && r.id === 'disk-dcb12bee-pci-7'));
    assert.equal(found.find((f) => f.code === 'record-without-device' && f.device.startsWith('NIC'))?.uuid, NIC2);
  });

  it('once the records are dropped only the backends are left; the fdset once its block node went; then nothing', () => {
    const { rt, q } = load('unplugged');
    rt.nics = rt.nics.filter((n) => n.uuid !== NIC2);
    rt.block_devices = rt.block_devices.filter((d) => d.uuid !== DISK2);
    assert.deepEqual(compareDevices(rt, q), []);
    assert.equal(compareBackends(rt, q).length, 2);
    q.net = q.net.filter((c) => c.id !== 'nic-01fc3e26-pci-6');
    q.tunFds.delete(22); // netdev_del closes QEMU's tap fd
    q.blockNodes = q.blockNodes.filter((n) => n.nodeName !== 'disk-dcb12bee-pci-7');
    assert.deepEqual(compareBackends(rt, q).map((f) => f.repair), [{ kind: 'release-fdset', id: 0 }]);
    q.fdsets = q.fdsets.filter((s) => s.id !== 0);
    assert.deepEqual(compareBackends(rt, q), []);
  });

  it('a tap fd QEMU holds that no netdev reads (a leaked getfd) is reported', () => {
    const { rt, q } = load('settled');
    q.tunFds.set(30, 'gnttap4');
    assert.deepEqual(compareBackends(rt, q).map((f) => [f.device, f.code, f.repair]), [['tap gnttap4 (QEMU fd 30)', 'unused-backend', undefined]]);
  });

  it('a device the runtime file lacks is to be removed from QEMU, with its kind', () => {
    const { rt, q } = load('settled');
    rt.nics = rt.nics.filter((n) => n.uuid !== NIC2);
    rt.resources!.dimms = [];
    const found = compareDevices(rt, q);
    assert.deepEqual(found.map((f) => f.repair), [
      { kind: 'remove-device', id: 'dimm0', device: 'dimm' },
      { kind: 'remove-device', id: 'nic-01fc3e26-pci-6', device: 'nic' },
    ]);
    assert.ok(compareBackends(rt, q).every((f) => f.code !== 'unused-backend' || f.device.startsWith('memory backend')), 'the DIMM\'s backend counts as used while the DIMM is there');
  });

  it('"attaching" with the device present is completed, without it dropped; "detaching" with it present is a note', () => {
    const { rt, q } = load('settled');
    rt.nics[1].state = 'attaching';
    rt.block_devices[1].state = 'detaching';
    const found = compareDevices(rt, q);
    assert.deepEqual(found.map((f) => [f.code, !!f.note, f.repair?.kind]), [
      ['attach-unconfirmed', false, 'complete-attach'],
      ['removal-pending', true, undefined],
    ]);
    const gone = load('unplugged');
    gone.rt.nics[1].state = 'attaching';
    gone.rt.block_devices[1].state = 'detaching';
    assert.deepEqual(compareDevices(gone.rt, gone.q).map((f) => [f.code, f.repair?.kind]), [
      ['attach-failed', 'drop-record'],
      ['removal-unfinished', 'drop-record'],
    ]);
  });

  it('a MAC or a slot that differs from the runtime file is reported', () => {
    const { rt, q } = load('settled');
    rt.nics[0].mac = '52:54:00:aa:00:09';
    const fn = q.pci.find((p) => p.qdevId === 'disk-ccc358cd-pci-4');
    fn!.slot = 9;
    assert.deepEqual(compareDevices(rt, q).map((f) => f.code), ['mac-differs', 'wrong-slot']);
  });

  it('vCPUs and DIMMs against query-hotpluggable-cpus and query-memory-devices', () => {
    const { rt, q } = load('settled');
    assert.deepEqual(compareResources(rt, q), []);
    rt.resources!.cpus.push({ id: 'vcpu-s0-c2-t0', driver: 'qemu64-x86_64-cpu', props: { 'core-id': 2, 'thread-id': 0, 'node-id': 0, 'socket-id': 0 } });
    rt.resources!.dimms.push({ id: 'dimm1', sizeMiB: 128 });
    rt.resources!.bootVcpus = 2;
    assert.deepEqual(compareResources(rt, q).map((f) => [f.code, f.device, f.repair?.kind]), [
      ['record-without-device', 'vCPU vcpu-s0-c2-t0', 'drop-record'],
      ['vcpu-count', 'vCPUs', undefined],
      ['record-without-device', 'DIMM dimm1', 'drop-record'],
    ]);
  });

  it('taps: the one QEMU uses, on the recorded bridge', () => {
    const { rt, q } = load('settled');
    delete rt.nics[1].tap;
    rt.nics[0].link = 'vbr1';
    const found = compareTaps(rt, q, [{ name: 'gnttap0', master: 'vbr0' }], (l) => l === 'vbr0' || l === 'vbr1');
    assert.deepEqual(found.map((f) => [f.code, f.repair]), [
      ['tap-wrong-bridge', { kind: 'connect-tap', tap: 'gnttap0', link: 'vbr1' }],
      ['tap-not-recorded', { kind: 'record-tap', uuid: NIC2, tap: 'gnttap1' }],
      ['tap-missing', undefined],
    ]);
  });

  it('stray taps: not owned and held by no process', () => {
    const host: HostTap[] = [{ name: 'gnttap0', master: 'vbr0' }, { name: 'gnttap5' }, { name: 'gnttap7' }];
    const found = findStrayTaps(host, new Set(['gnttap0']), new Map([['gnttap7', [1234]]]));
    assert.deepEqual(found.map((f) => [f.device, f.repair]), [['tap gnttap5', { kind: 'delete-tap', name: 'gnttap5' }]]);
  });

  it('orphan files: candidates no runtime file references', () => {
    const found = findOrphanFiles(['/s/i/a.img', '/s/i/b.img'], new Set(['/s/i/a.img']));
    assert.deepEqual(found.map((f) => f.repair), [{ kind: 'delete-file', path: '/s/i/b.img' }]);
  });

  it('a stopped instance: pending states are notes (dropped at the next start)', () => {
    const { rt } = load('settled');
    assert.deepEqual(compareStopped(rt), []);
    rt.nics[1].state = 'detaching';
    assert.deepEqual(compareStopped(rt).map((f) => [f.code, f.note]), [['removal-pending', true]]);
  });
});
