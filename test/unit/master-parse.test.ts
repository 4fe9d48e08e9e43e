import * as assert from 'node:assert/strict';
import { parseArgs } from '../../src/master/cli/args';
import { parseDiskChange, parseDiskSpec, parseHvparams, parseNicChange, parseNicSpec } from '../../src/master/cli/parse';
import { checkAddress, checkMac, checkName, formatSize, parseSize, parseSizeMiB, UsageError } from '../../src/master/validate';
import { prepareJob } from '../../src/master/jobs/ops';
import type { SubmitJobRequest__Output } from '../../src/generated/gnt/master/v1/SubmitJobRequest';

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test((e as Error).message));

describe('master CLI parsing', () => {
  describe('sizes', () => {
    it('accepts binary units with optional iB/B', () => {
      assert.equal(parseSize('512M'), 512 * 1024 ** 2);
      assert.equal(parseSize('1G'), 1024 ** 3);
      assert.equal(parseSize('64MiB'), 64 * 1024 ** 2);
      assert.equal(parseSize('2g'), 2 * 1024 ** 3);
      assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
      assert.equal(parseSize('100KB'), 100 * 1024);
      assert.equal(parseSizeMiB('1G'), 1024);
    });
    it('refuses plain numbers, negatives, zero and junk', () => {
      usage(() => parseSize('512'), /has no unit/);
      usage(() => parseSize('-1G'), /negative/);
      usage(() => parseSize('0M'), /greater than zero/);
      usage(() => parseSize('1X'), /not valid/);
      usage(() => parseSize(''), /not valid/);
      usage(() => parseSizeMiB('1K'), /whole number of MiB/);
    });
    it('formats sizes', () => {
      assert.equal(formatSize(1024 ** 3), '1G');
      assert.equal(formatSize(512 * 1024 ** 2), '512M');
    });
  });

  describe('MACs, names, addresses', () => {
    it('normalizes a MAC to lower case', () => assert.equal(checkMac('52:54:00:AB:CD:EF'), '52:54:00:ab:cd:ef'));
    it('refuses malformed and multicast MACs', () => {
      usage(() => checkMac('52:54:00:ab:cd'), /malformed/);
      usage(() => checkMac('52-54-00-ab-cd-ef'), /malformed/);
      usage(() => checkMac('52:54:00:ab:cd:eg'), /malformed/);
      usage(() => checkMac('01:00:5e:00:00:01'), /multicast/);
    });
    it('refuses instance names with /, .. or shell characters', () => {
      assert.equal(checkName('instance', 'web1.example'), 'web1.example');
      for (const bad of ['a/b', '../x', 'a..b', 'a;rm', 'a b', '$(x)', '', '-a', 'a'.repeat(64), 'a`b`'])
        usage(() => checkName('instance', bad), /instance name .* is not valid/);
    });
    it('checks host:port', () => {
      assert.deepEqual(checkAddress('127.0.0.1:1811'), { host: '127.0.0.1', port: 1811 });
      assert.deepEqual(checkAddress('[::1]:5'), { host: '::1', port: 5 });
      usage(() => checkAddress('127.0.0.1'), /HOST:PORT/);
      usage(() => checkAddress('h:70000'), /HOST:PORT/);
    });
  });

  describe('Ganeti modify syntax', () => {
    it('--net add with and without parameters', () => {
      assert.deepEqual(parseNicChange('add'), { action: 'ADD', index: -1, mac: '', link: '' });
      assert.deepEqual(parseNicChange('add:mac=52:54:00:00:00:01,link=br0'), { action: 'ADD', index: -1, mac: '52:54:00:00:00:01', link: 'br0' });
      assert.deepEqual(parseNicChange('add:link=br1'), { action: 'ADD', index: -1, mac: '', link: 'br1' });
      assert.equal(parseNicChange('add:mac=auto').mac, '');
    });
    it('--net N:mac=..,link=.. and N:remove', () => {
      assert.deepEqual(parseNicChange('1:mac=52:54:00:00:00:02'), { action: 'MODIFY', index: 1, mac: '52:54:00:00:00:02', link: '' });
      assert.deepEqual(parseNicChange('0:link=br2'), { action: 'MODIFY', index: 0, mac: '', link: 'br2' });
      assert.deepEqual(parseNicChange('2:remove'), { action: 'REMOVE', index: 2 });
    });
    it('refuses malformed --net changes', () => {
      usage(() => parseNicChange('1:mac=zz'), /malformed/);
      usage(() => parseNicChange('remove'), /say which NIC/);
      usage(() => parseNicChange('x:remove'), /not a device index/);
      usage(() => parseNicChange('-1:remove'), /not a device index/);
      usage(() => parseNicChange('1:foo=bar'), /unknown parameter "foo"/);
      usage(() => parseNicChange('1:'), /mac=MAC and\/or link/);
      usage(() => parseNicChange('add:mac=52:54:00:00:00:01,mac=52:54:00:00:00:02'), /given twice/);
    });
    it('--disk add:size=SIZE and N:remove', () => {
      assert.deepEqual(parseDiskChange('add:size=1G'), { action: 'ADD', index: -1, sizeBytes: 1024 ** 3 });
      assert.deepEqual(parseDiskChange('0:remove'), { action: 'REMOVE', index: 0 });
      usage(() => parseDiskChange('add'), /size=SIZE is required/);
      usage(() => parseDiskChange('add:size=100'), /has no unit/);
      usage(() => parseDiskChange('add:size=-5G'), /negative/);
      usage(() => parseDiskChange('1:size=2G'), /the size of an existing disk changes with gnt-instance grow-disk/);
    });
    it('add-time --net and --disk, with optional index', () => {
      assert.deepEqual(parseNicSpec('link=br0', 0), { mac: '', link: 'br0' });
      assert.deepEqual(parseNicSpec('1:mac=52:54:00:00:00:03', 1), { mac: '52:54:00:00:00:03', link: '' });
      usage(() => parseNicSpec('3:link=br0', 1), /given in position 1/);
      assert.deepEqual(parseDiskSpec('size=64MiB', 0), { sizeBytes: 64 * 1024 ** 2 });
      usage(() => parseDiskSpec('size=64', 0), /has no unit/);
      usage(() => parseDiskSpec('', 0), /size=SIZE is required/);
    });
    it('hvparams', () => {
      assert.deepEqual(parseHvparams(['kvm:security_model=user,security_domain=gnt-qemu']), { security_model: 'user', security_domain: 'gnt-qemu' });
      assert.deepEqual(parseHvparams(['security_model=user']), { security_model: 'user' }); // the node's --qemu-user
      usage(() => parseHvparams(['security_model=root']), /security_model="root" is not valid: it must be one of none, user, pool/);
    });
  });

  describe('argument parser', () => {
    it('takes --opt value, --opt=value, repeats and aliases', () => {
      const a = parseArgs(['-n', 'node1', '--disk=size=1G', '--disk', 'size=2G', '--submit', 'web1'], {
        values: ['node'], multi: ['disk'], flags: ['submit'], aliases: { n: 'node' },
      });
      assert.equal(a.value('node'), 'node1');
      assert.deepEqual(a.all('disk'), ['size=1G', 'size=2G']);
      assert.ok(a.flags.has('submit'));
      assert.deepEqual(a.positional, ['web1']);
    });
    it('refuses unknown options and missing values', () => {
      usage(() => parseArgs(['--bogus'], {}), /unknown option --bogus/);
      usage(() => parseArgs(['--node'], { values: ['node'] }), /needs a value/);
      usage(() => parseArgs(['--submit=yes'], { flags: ['submit'] }), /takes no value/);
    });
  });

  describe('master-side request checks (prepareJob)', () => {
    const modify = (m: object): SubmitJobRequest__Output =>
      ({ op: 'instanceModify', instanceModify: { name: 'web1', nics: [], disks: [], hotplug: 'HOTPLUG', vcpus: 0, memoryMib: '0', waitGuest: 'WAIT_GUEST_MODE_UNSPECIFIED', waitGuestTimeoutS: 0, ...m } }) as SubmitJobRequest__Output;
    it('turns a modify into an op locked on the instance', () => {
      const p = prepareJob(modify({ nics: [{ action: 'ADD', index: -1, mac: '', link: 'br0' }] }));
      assert.deepEqual(p.locks, ['instance:web1']);
      assert.equal(p.op.type, 'instance-modify');
    });
    it('checks again what any client could send', () => {
      usage(() => prepareJob(modify({})), /nothing to change/);
      usage(() => prepareJob(modify({ name: '../etc', nics: [{ action: 'REMOVE', index: 0, mac: '', link: '' }] })), /not valid/);
      usage(() => prepareJob(modify({ nics: [{ action: 'ADD', index: -1, mac: 'ff:ff:ff:ff:ff:ff', link: '' }] })), /multicast/);
      usage(() => prepareJob(modify({ disks: [{ action: 'ADD', index: -1, sizeBytes: '0' }] })), /greater than zero/);
      usage(() => prepareJob({} as SubmitJobRequest__Output), /no operation/);
    });
  });
});
