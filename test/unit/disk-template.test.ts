import { strict as assert } from 'node:assert';
import { diskFlavourOf } from '../../src/common/disk-flavour';
import { excerpt } from '../../src/common/excerpt';
import { parseDiskChange, parseDiskSpec } from '../../src/master/cli/parse';
import { UsageError } from '../../src/master/validate';
import { describeBacking, diskBackingProto, flavourOfNodeDisk } from '../../src/master/jobs/disk-backing';
import { backingToProto, requestedBacking } from '../../src/noded/disk-kinds';
import { parseRuntime } from '../../src/hypervisor/runtime-file';
import { isAdopted, parseRbdImage, templateOf } from '../../src/hypervisor/disk-template';
import { NodeError } from '../../src/noded/status';

const usage = (f: () => unknown, re: RegExp): void => assert.throws(f, (e: unknown) => e instanceof UsageError && re.test(e.message));
const nodeErr = (f: () => unknown, code: string, re: RegExp): void =>
  assert.throws(f, (e: unknown) => e instanceof NodeError && e.code === code && re.test(e.message));

describe('disk templates: master side (disk-flavour.ts, parse.ts, disk-backing.ts)', () => {
  it('infers the template from adopt= and normalizes file to ""', () => {
    assert.deepEqual(diskFlavourOf('', '', excerpt, '', '/dev/loop3'), { diskBus: '', diskType: '', template: 'blockdev', adopt: '/dev/loop3' });
    assert.deepEqual(diskFlavourOf('scsi', '', excerpt, 'rbd', 'rbd/img-1'), { diskBus: 'scsi', diskType: '', template: 'rbd', adopt: 'rbd/img-1' });
    assert.deepEqual(diskFlavourOf('', '', excerpt, 'rbd', ''), { diskBus: '', diskType: '', template: 'rbd', adopt: '' });
    assert.deepEqual(diskFlavourOf('', '', excerpt, 'file', ''), { diskBus: '', diskType: '', template: '', adopt: '' });
  });
  it('refuses what cannot be, naming the problem', () => {
    assert.match(diskFlavourOf('', '', excerpt, 'lvm', '') as string, /template="lvm" is not known/);
    assert.match(diskFlavourOf('', '', excerpt, 'blockdev', '') as string, /give adopt=\/dev\/XYZ/);
    assert.match(diskFlavourOf('', '', excerpt, '', '/etc/passwd') as string, /not a block device path under \/dev/);
    assert.match(diskFlavourOf('', '', excerpt, '', '/dev/../etc/shadow') as string, /not a block device path/);
    assert.match(diskFlavourOf('', '', excerpt, 'rbd', 'a/b/c') as string, /not an RBD image POOL\/IMAGE/);
    assert.match(diskFlavourOf('', '', excerpt, 'file', '/dev/sdb') as string, /template=file disks are files the node makes/);
    assert.match(diskFlavourOf('', 'pmem', excerpt, 'rbd', '') as string, /type=pmem and template=rbd do not go together/);
  });
  it('parses --disk add:adopt= without a size and refuses a size with it', () => {
    assert.deepEqual(parseDiskChange('add:adopt=/dev/loop0'), { action: 'ADD', index: -1, sizeBytes: 0, template: 'blockdev', adopt: '/dev/loop0' });
    assert.deepEqual(parseDiskChange('add:size=64M,template=rbd'), { action: 'ADD', index: -1, sizeBytes: 64 * 1024 * 1024, template: 'rbd' });
    assert.deepEqual(parseDiskSpec('adopt=rbd/base,template=rbd', 0), { sizeBytes: 0, template: 'rbd', adopt: 'rbd/base' });
    usage(() => parseDiskChange('add:size=1G,adopt=/dev/loop0'), /adopted disk keeps the size of "?\/dev\/loop0"?; leave out size=/);
    usage(() => parseDiskChange('add:path=/dev/loop0'), /unknown parameter "path"/);
  });
  it('maps config to the node Disk and back', () => {
    assert.deepEqual(diskBackingProto('blockdev', '/dev/sdb'), { template: 'blockdev', path: '/dev/sdb', rbdPool: '', rbdImage: '' });
    assert.deepEqual(diskBackingProto('rbd', 'p/i'), { template: 'rbd', path: '', rbdPool: 'p', rbdImage: 'i' });
    assert.deepEqual(diskBackingProto('rbd', ''), { template: 'rbd', path: '', rbdPool: '', rbdImage: '' });
    assert.deepEqual(flavourOfNodeDisk({ template: 'rbd', adopted: true, rbdPool: 'p', rbdImage: 'i', path: 'rbd:p/i' }), { diskBus: '', diskType: '', template: 'rbd', adopt: 'p/i' });
    assert.deepEqual(flavourOfNodeDisk({ template: 'rbd', adopted: false, rbdPool: 'p', rbdImage: 'x', path: 'rbd:p/x' }), { diskBus: '', diskType: '', template: 'rbd', adopt: '' });
    assert.deepEqual(flavourOfNodeDisk({ template: 'file', adopted: false, path: '/s/i/u.img' }), { diskBus: '', diskType: '', template: '', adopt: '' });
    assert.equal(describeBacking('blockdev', '/dev/sdb'), 'blockdev /dev/sdb');
    assert.equal(describeBacking('', ''), 'file');
  });
});

describe('disk templates: node side (disk-kinds.ts, runtime-file.ts)', () => {
  const base = { uuid: 'd1', path: '', template: '', rbdPool: '', rbdImage: '', diskType: '' };
  it('a file disk without a path is made by the node; a blockdev disk is adopted', () => {
    assert.deepEqual(requestedBacking(base, 'node1'), { backing: {}, path: '', create: true });
    assert.deepEqual(requestedBacking({ ...base, template: 'blockdev', path: '/dev/loop1' }, 'node1'), { backing: { template: 'blockdev' }, path: '/dev/loop1', create: false });
  });
  it('refuses bad requests with their reason', () => {
    nodeErr(() => requestedBacking({ ...base, template: 'blockdev' }, 'n'), 'INVALID_ARGUMENT', /adopts an existing block device: give its path/);
    nodeErr(() => requestedBacking({ ...base, template: 'zfs' }, 'n'), 'INVALID_ARGUMENT', /template "zfs" is not known/);
    nodeErr(() => requestedBacking({ ...base, path: 'rel/x' }, 'n'), 'INVALID_ARGUMENT', /is not absolute/);
    nodeErr(() => requestedBacking({ ...base, rbdImage: 'x' }, 'n'), 'INVALID_ARGUMENT', /belong to template "rbd"/);
    nodeErr(() => requestedBacking({ ...base, template: 'rbd' }, 'node7'), 'FAILED_PRECONDITION', /node node7 has no RBD configured/);
  });
  it('keeps the template in the runtime file and reports it', () => {
    const text = JSON.stringify({
      version: 2, instance: 'i', kvm_cmd: [], nics: [], hvparams: {},
      block_devices: [
        { uuid: 'a', path: '/dev/loop1', pci: 5, template: 'blockdev' },
        { uuid: 'b', path: 'rbd:rbd/i-b', pci: 6, template: 'rbd', rbd: { pool: 'rbd', image: 'i-b' }, created: true },
        { uuid: 'c', path: '/s/i/c.img', pci: 7, created: true },
      ],
    });
    const data = parseRuntime('/x', text, 'i');
    assert.deepEqual(data.block_devices.map(templateOf), ['blockdev', 'rbd', 'file']);
    assert.deepEqual(data.block_devices.map(isAdopted), [true, false, false]);
    assert.deepEqual(backingToProto(data.block_devices[1]), { template: 'rbd', adopted: false, rbdPool: 'rbd', rbdImage: 'i-b' });
    assert.throws(() => parseRuntime('/x', text.replace('"blockdev"', '"nfs"'), 'i'), /unknown template "nfs"/);
    assert.deepEqual(parseRbdImage('rbd/img'), { pool: 'rbd', image: 'img' });
    assert.equal(parseRbdImage('rbd/../x'), undefined);
  });
});
