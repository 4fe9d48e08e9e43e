/** Parsing of --disk I/O limits and gnt-instance grow-disk, the shared limit rules, and the master's plan of a disk modify. */
import * as assert from 'node:assert/strict';
import { parseArgs } from '../../src/master/cli/args';
import { parseDiskChange, parseDiskSpec } from '../../src/master/cli/parse';
import { instanceCommands, parseGrowDiskArgs } from '../../src/master/cli/instance';
import { withCommon } from '../../src/master/cli/common';
import { UsageError } from '../../src/master/validate';
import { prepareJob } from '../../src/master/jobs/ops';
import { ioLimitsProblem, normalizeIoLimits } from '../../src/common/io-limits';
import { ioLimitsFrom, throttleArgs } from '../../src/hypervisor/disk-io-limits';
import { devNumbers } from '../../src/hypervisor/disk-size';
import { compareDiskSizes } from '../../src/hypervisor/disk-size-compare';
import { diskId } from '../../src/hypervisor/disk';
import type { QemuInventory } from '../../src/hypervisor/qemu-inventory';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import type { SubmitJobRequest__Output } from '../../src/generated/gnt/master/v1/SubmitJobRequest';

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test((e as Error).message));
const MiB = 1024 * 1024;
const growArgs = (...argv: string[]) => parseGrowDiskArgs(parseArgs(argv, withCommon(instanceCommands['grow-disk'].spec)));

describe('disk I/O limits and grow-disk: parsing', () => {
  it('parses limits on --disk N: (modify): given keys set, the others kept (-1), bps with sizes', () => {
    assert.deepEqual(parseDiskChange('1:iops_max=50'), { action: 'MODIFY', index: 1, ioLimits: { iops: 50, iopsRd: -1, iopsWr: -1, bps: -1, bpsRd: -1, bpsWr: -1 } });
    assert.deepEqual(parseDiskChange('0:bps_rd_max=10M,bps_wr_max=1048576,iops_max=0'), {
      action: 'MODIFY', index: 0, ioLimits: { iops: 0, iopsRd: -1, iopsWr: -1, bps: -1, bpsRd: 10 * MiB, bpsWr: MiB },
    });
  });
  it('parses limits on --disk add: and on instance add (0 where not given)', () => {
    const c = parseDiskChange('add:size=1G,iops_rd_max=100,iops_wr_max=20');
    assert.deepEqual(c.ioLimits, { iops: 0, iopsRd: 100, iopsWr: 20, bps: 0, bpsRd: 0, bpsWr: 0 });
    assert.deepEqual(parseDiskSpec('size=1G,bps_max=5M', 0).ioLimits, { iops: 0, iopsRd: 0, iopsWr: 0, bps: 5 * MiB, bpsRd: 0, bpsWr: 0 });
    assert.equal(parseDiskSpec('size=1G', 0).ioLimits, undefined);
  });
  it('refuses a total with its read/write split, naming both keys', () => {
    usage(() => parseDiskChange('0:iops_max=50,iops_rd_max=10'), /iops_max and iops_rd_max cannot both be set/);
    usage(() => parseDiskChange('add:size=1G,bps_max=1M,bps_rd_max=1M,bps_wr_max=1M'), /bps_max and bps_rd_max\/bps_wr_max cannot both be set/);
    usage(() => parseDiskSpec('size=1G,iops_max=5,iops_wr_max=1', 0), /iops_max and iops_wr_max/);
  });
  it('refuses bad values and unknown keys with the key named', () => {
    usage(() => parseDiskChange('0:iops_max=10M'), /iops_max must be a whole number of operations per second/);
    usage(() => parseDiskChange('0:iops_max=-1'), /iops_max must be a whole number/);
    usage(() => parseDiskChange('0:bps_max=fast'), /bps_max must be a whole number of bytes per second or a size/);
    usage(() => parseDiskChange('0:iops=5'), /unknown parameter "iops"/);
    usage(() => parseDiskChange('0:size=2G'), /grow-disk/);
    usage(() => parseDiskChange('0:'), /a disk change is/);
  });
  it('parses gnt-instance grow-disk [--absolute] INSTANCE N AMOUNT', () => {
    assert.deepEqual(growArgs('web1', '0', '512M'), { name: 'web1', index: 0, amountBytes: 512 * MiB, absolute: false });
    assert.deepEqual(growArgs('--absolute', 'web1', '2', '2G'), { name: 'web1', index: 2, amountBytes: 2048 * MiB, absolute: true });
    usage(() => growArgs('web1', 'x', '1G'), /disk index "x" is not a number/);
    usage(() => growArgs('web1', '0', '512'), /has no unit/);
    usage(() => growArgs('web1', '0'), /missing AMOUNT/);
  });
  it('the master checks the API op: limits, exclusivity, an empty modify, a grow amount', () => {
    const job = (r: Partial<SubmitJobRequest__Output>) => prepareJob(r as SubmitJobRequest__Output);
    const modify = (disks: unknown[]) => job({ op: 'instanceModify', instanceModify: { name: 'w', nics: [], disks, hotplug: 'HOTPLUG', vcpus: 0, memoryMib: '0' } as never });
    const l = (o: Record<string, number>) => ({ iops: -1, iopsRd: -1, iopsWr: -1, bps: -1, bpsRd: -1, bpsWr: -1, ...o });
    const ok = modify([{ action: 'MODIFY', index: 0, ioLimits: l({ iops: 50 }), growToBytes: '0' }]);
    assert.deepEqual((ok.op as { disks: unknown[] }).disks, [{ action: 'MODIFY', index: 0, sizeBytes: 0, ioLimits: { iops: 50 } }]);
    usage(() => modify([{ action: 'MODIFY', index: 0, ioLimits: l({ iops: 50, iopsWr: 3 }), growToBytes: '0' }]), /iops_max and iops_wr_max/);
    usage(() => modify([{ action: 'MODIFY', index: 0, ioLimits: l({ bps: -5 }), growToBytes: '0' }]), /bps_max must be a non-negative/);
    usage(() => modify([{ action: 'MODIFY', index: 0, ioLimits: l({}), growToBytes: '0' }]), /nothing to change/);
    usage(() => job({ op: 'instanceGrowDisk', instanceGrowDisk: { name: 'w', index: 0, amountBytes: '0', absolute: false } }), /greater than zero/);
    const g = job({ op: 'instanceGrowDisk', instanceGrowDisk: { name: 'w', index: 1, amountBytes: String(MiB), absolute: true } });
    assert.equal(g.summary, 'grow disk 1 of instance w to 1M');
  });
});

describe('disk I/O limits: shared rules and QMP arguments', () => {
  it('checks ranges and exclusivity; normalizes zeros away', () => {
    assert.equal(ioLimitsProblem({ iops: 1, bps_rd: 2, bps_wr: 3 }), undefined);
    assert.match(ioLimitsProblem({ iops: 1.5 }) ?? '', /iops must be a whole number/);
    assert.match(ioLimitsProblem({ bps: 1, bps_wr: 1 }) ?? '', /bps and bps_wr cannot both be set/);
    assert.equal(ioLimitsProblem({ iops: 0, iops_rd: 5 }), undefined, 'a total of 0 is no total');
    assert.deepEqual(normalizeIoLimits({ iops: 0, bps: 7 }), { bps: 7 });
    assert.equal(normalizeIoLimits({ iops: 0 }), undefined);
  });
  it('block_set_io_throttle gets all six fields (a missing one is cleared)', () => {
    assert.deepEqual(throttleArgs('d0/virtio-backend', { iops: 50 }), { id: 'd0/virtio-backend', iops: 50, iops_rd: 0, iops_wr: 0, bps: 0, bps_rd: 0, bps_wr: 0 });
  });
  it('reads runtime file limits, dropping invalid ones', () => {
    assert.deepEqual(ioLimitsFrom({ iops: 50, junk: 1 }), { iops: 50 });
    assert.equal(ioLimitsFrom({ iops: 5, iops_rd: 1 }), undefined);
    assert.equal(ioLimitsFrom('x'), undefined);
  });
  it('splits a dev_t into major and minor as Linux encodes it', () => {
    assert.deepEqual(devNumbers(0x0701), { major: 7, minor: 1 });
    assert.deepEqual(devNumbers(0x10300), { major: 259, minor: 0 });
    assert.deepEqual(devNumbers((7 << 8) | 0x12 | (0x3 << 20)), { major: 7, minor: 0x312 });
  });
});

describe('verify: disk sizes against QEMU', () => {
  const rt = (rec: Record<string, unknown>): RuntimeData =>
    ({ version: 2, instance: 'i', kvm_cmd: [], nics: [], hvparams: {}, block_devices: [{ uuid: 'aaaa-1', path: '/s/a.img', pci: 5, ...rec }] }) as RuntimeData;
  const inv = (size?: number): QemuInventory =>
    ({ blockNodes: [{ nodeName: diskId({ uuid: 'aaaa-1', path: '', pci: 5 }, 5), driver: 'file', file: '/dev/fdset/1', ...(size === undefined ? {} : { size }) }] }) as unknown as QemuInventory;
  it('reports a grow left open and a recorded size QEMU does not have; nothing when they agree', () => {
    assert.deepEqual(compareDiskSizes(rt({ size_bytes: 2 * MiB }), inv(2 * MiB)), []);
    assert.deepEqual(compareDiskSizes(rt({}), inv(MiB)), [], 'no recorded size: nothing to compare');
    const [open] = compareDiskSizes(rt({ grow_to: 2 * MiB }), inv(MiB));
    assert.equal(open.code, 'grow-unfinished');
    assert.match(open.problem, /a grow to 2097152 bytes is not finished \(QEMU has 1048576 bytes\)/);
    const [differs] = compareDiskSizes(rt({ size_bytes: 2 * MiB }), inv(MiB));
    assert.equal(differs.code, 'disk-size');
    assert.equal(differs.uuid, 'aaaa-1');
    assert.match(differs.problem, /QEMU has 1048576 bytes, the runtime file records 2097152/);
  });
});
