/** The pure parts of the kill test's harness (test/support/kill-harness.ts): console follower, runtime file reader, rng, fd kinds. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { countCpuList } from '../../src/hypervisor/guest-console';
import { ConsoleFollower, fdKind, readRuntime, Rng } from '../support/kill-harness';
import { tempDir } from '../support/guest';

describe('kill harness', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('kill-harness')));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const block = (n: number, extra: string[]) =>
    [`gnt-guest begin ${n}`, 'pci 0000:00:05.0 1af4:1000 0x020000', ...extra, 'cpu present=0-1 online=0', 'mem 155572', `gnt-guest end ${n}`, `gnt-guest tick ${n}`, ''].join('\r\n');

  it('follows the console: latest block (also when it arrives in pieces), heartbeat, no reboot', () => {
    const file = path.join(dir, 'console.log');
    const text = `gnt-guest init: 6.1.0\n${block(1, ['net eth0 52:54:00:AA:00:01 0000:00:05.0', 'blk vda 65536 0000:00:04.0'])}`;
    fs.writeFileSync(file, text.slice(0, 60));
    const c = new ConsoleFollower(file);
    c.poll();
    const latest = () => c.latest;
    assert.equal(latest(), undefined);
    fs.appendFileSync(file, text.slice(60));
    c.poll();
    assert.deepEqual(c.latest?.nets, [{ name: 'eth0', mac: '52:54:00:aa:00:01', pci: '0000:00:05.0', queues: 0, carrier: '-' }]);
    assert.deepEqual(c.latest?.blks, [{ name: 'vda', sectors: 65536, pci: '0000:00:04.0', scsi: '-' }]);
    assert.equal(c.latest?.cpusPresent, 2);
    assert.equal(c.latest?.cpusOnline, 1);
    assert.equal(c.latest?.memTotalKiB, 155572);
    assert.equal(c.lastTick, 1);
    fs.appendFileSync(file, 'gnt-guest tick 2\n');
    c.poll();
    assert.equal(c.lastTick, 2);
    assert.deepEqual(c.rebootSigns, []);
  });

  it('sees a reboot: a second init line and a heartbeat that goes back', () => {
    const file = path.join(dir, 'console.log');
    fs.writeFileSync(file, `gnt-guest init: 6.1.0\n${block(5, [])}gnt-guest init: 6.1.0\n${block(1, [])}`);
    const c = new ConsoleFollower(file);
    c.poll();
    assert.equal(c.rebootSigns.length, 2, c.rebootSigns.join('\n'));
  });

  it('reads a version 2 runtime file with resources and an operation journal', () => {
    const file = path.join(dir, 'runtime.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        version: 2,
        instance: 'i',
        kvm_cmd: [],
        hvparams: {},
        nics: [{ uuid: 'n1', mac: '52:54:00:AA:00:01', pci: 5, tap: 'gnttap0' }, { uuid: 'n2', mac: '52:54:00:aa:00:02', pci: 6, state: 'detaching' }],
        block_devices: [{ uuid: 'd1', path: '/s/i/d1.img', pci: 4 }],
        scsi_disks: [{ uuid: 's1', path: '/s/i/s1.img', target: 1, lun: 0 }],
        pmem_devices: [{ uuid: 'p1', path: '/s/i/p1.img', sizeMiB: 32, pci: 7 }],
        resources: { bootVcpus: 1, maxVcpus: 8, bootMemoryMiB: 256, maxMemoryMiB: 768, memoryHotplug: 'acpi', cpus: [{}], dimms: [{ id: 'dimm0', sizeMiB: 128 }], cpuThreads: { pid: 7, created: 3 } },
        operations: { revision: 3, records: [{ id: 'op1', kind: 'nic', action: 'add', uuid: 'n1', state: 'running', revision: 3 }] },
      }),
    );
    const rt = readRuntime(file);
    assert.equal(rt.error, undefined);
    assert.deepEqual(rt.nics.map((n) => [n.uuid, n.mac, n.pci, n.tap, n.state]), [['n1', '52:54:00:aa:00:01', 5, 'gnttap0', undefined], ['n2', '52:54:00:aa:00:02', 6, undefined, 'detaching']]);
    assert.deepEqual(rt.disks, [
      { uuid: 'd1', path: '/s/i/d1.img', pci: 4, flavour: 'virtio' },
      { uuid: 's1', path: '/s/i/s1.img', pci: null, flavour: 'scsi', target: 1, lun: 0 },
      { uuid: 'p1', path: '/s/i/p1.img', pci: 7, flavour: 'pmem' },
    ]);
    assert.equal(rt.vcpus, 2);
    assert.equal(rt.memoryMiB, 384);
    assert.deepEqual(rt.cpuThreads, { pid: 7, created: 3 });
    assert.deepEqual(rt.operations, [{ id: 'op1', kind: 'nic', action: 'add', uuid: 'n1', state: 'running' }]);
    assert.match(readRuntime(path.join(dir, 'missing.json')).error ?? '', /cannot read/);
  });

  it('is reproducible from its seed, and names fd kinds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const xs = Array.from({ length: 20 }, () => a.int(0, 60));
    assert.deepEqual(Array.from({ length: 20 }, () => b.int(0, 60)), xs);
    assert.ok(xs.every((x) => x >= 0 && x <= 60));
    assert.equal(countCpuList('0-2,4'), 4);
    const sockets = new Map([['11', 'tcp'], ['12', 'unix']]);
    assert.equal(fdKind('socket:[11]', '/s', sockets), 'tcp');
    assert.equal(fdKind('socket:[12]', '/s', sockets), 'unix');
    assert.equal(fdKind('socket:[13]', '/s', sockets), 'socket');
    assert.equal(fdKind('/dev/net/tun', '/s'), 'tun');
    assert.equal(fdKind('/s/i/d1.img', '/s'), 'disk-file');
    assert.equal(fdKind('/s/i/d1.img (deleted)', '/s'), 'disk-file (deleted)');
    assert.equal(fdKind('anon_inode:[eventfd]', '/s'), 'anon:eventfd');
  });
});
