import { strict as assert } from 'node:assert';
import { CLIENT_HVPARAM_KEYS, checkHvparams, hvparamProblem } from '../../src/common/hvparams';
import { parseHvparams } from '../../src/master/cli/parse';
import { UsageError } from '../../src/master/validate';

const fail = (m: string): Error => new Error(m);
const problem = (hv: Record<string, string | number>, client = true): string | undefined => {
  try {
    checkHvparams(hv, fail, client);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

describe('hvparams schema (src/common/hvparams.ts)', () => {
  it('knows every hvparam the code reads', () => {
    for (const k of ['machine', 'accel', 'memory_hotplug', 'security_model', 'security_domain', 'chroot', 'migration_bandwidth', 'migration_downtime', 'unplug_timeout_nic', 'unplug_timeout_disk', 'unplug_timeout_cpu', 'unplug_timeout_memory'])
      assert.ok(CLIENT_HVPARAM_KEYS.includes(k), k);
    assert.ok(!CLIENT_HVPARAM_KEYS.includes('security_uid'), 'security_uid is the node\'s');
  });

  it('accepts good values', () => {
    assert.equal(problem({ machine: 'pc-q35-10.0', accel: 'kvm', security_model: 'user', security_domain: 'gnt-qemu', chroot: '/var/lib/gnt/chroot', unplug_timeout_disk: '2.5', migration_bandwidth: '0' }), undefined);
    assert.equal(problem({ security_model: 'pool', security_uid: 40001 }, false), undefined);
  });

  it('refuses the -run-with injection in security_domain, naming the key and the rule', () => {
    assert.equal(
      problem({ security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' }),
      'hvparam security_domain="nobody,chroot=/nonexistent" is not valid: it must be a user name (lower-case letter or "_", then up to 31 lower-case letters, digits, "_" or "-")',
    );
  });

  it('refuses unknown keys, as Ganeti does', () => {
    assert.match(problem({ kernel_path: '/x' }) as string, /^unknown hvparam "kernel_path" \(known: machine, accel, /);
    assert.match(problem({ constructor: 'x' }) as string, /^unknown hvparam "constructor"/);
  });

  it('refuses node-only keys from a client', () => {
    assert.equal(problem({ security_model: 'pool', security_uid: '0' }), 'hvparam security_uid is set by the node itself and cannot be given');
  });

  for (const [hv, why] of [
    [{ unplug_timeout_nic: '0' }, /unplug_timeout_nic="0" is not valid: it must be a number of seconds above 0 and at most 3600/],
    [{ unplug_timeout_cpu: '3601' }, /unplug_timeout_cpu="3601" is not valid/],
    [{ unplug_timeout_disk: '1e3' }, /unplug_timeout_disk="1e3" is not valid/],
    [{ chroot: '/a,b' }, /chroot="\/a,b" is not valid: it must be an absolute path without ","/],
    [{ chroot: '/a/../etc' }, /chroot="\/a\/..\/etc" is not valid/],
    [{ chroot: 'rel' }, /chroot="rel" is not valid/],
    [{ machine: 'pc,accel=kvm' }, /machine="pc,accel=kvm" is not valid: it must be a QEMU machine type name/],
    [{ accel: 'xen' }, /accel="xen" is not valid: it must be one of tcg, kvm/],
    [{ migration_downtime: '-1' }, /migration_downtime="-1" is not valid: it must be a whole number from 0 to 999999999/],
    [{ security_model: 'none', chroot: '/srv' }, /chroot needs an unprivileged security_model/],
    [{ security_model: 'pool', security_domain: 'gnt-qemu' }, /security_domain is only used with security_model=user/],
  ] as const) {
    it(`refuses ${JSON.stringify(hv)}`, () => assert.match(problem(hv) as string, why));
  }

  it('quotes a huge value only as an excerpt', () => {
    const msg = hvparamProblem('security_domain', 'x'.repeat(100_000), true) as string;
    assert.ok(msg.length < 300, msg);
  });

  it('is what gnt-instance add -H applies (UsageError naming the key)', () => {
    assert.throws(() => parseHvparams(['security_domain=nobody,,chroot=/nonexistent']), UsageError);
    assert.throws(() => parseHvparams(['unplug_timeout_nic=7200']), { name: 'UsageError', message: /unplug_timeout_nic="7200" is not valid/ });
    assert.throws(() => parseHvparams(['security_uid=5']), { name: 'UsageError', message: /unknown parameter "security_uid"/ });
    assert.throws(() => parseHvparams(['machine=pc', 'machine=q35']), { name: 'UsageError', message: /"machine" given twice/ });
  });
});

describe('master: InstanceAdd hvparams by the schema (prepareJob, what any gRPC client reaches)', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { prepareJob } = require('../../src/master/jobs/ops') as typeof import('../../src/master/jobs/ops');
  const add = (hvparams: Record<string, string>) =>
    prepareJob({
      op: 'instanceAdd',
      instanceAdd: {
        name: 'web1', node: 'node1', vcpus: 1, maxvcpus: 0, memoryMib: '128', maxmemMib: '0', kernel: '/boot/vmlinuz', initrd: '',
        kernelArgs: '', disks: [], nics: [], hvparams, noStart: true,
      },
    } as never);

  it('refuses security_domain="nobody,chroot=/nonexistent" naming the key', () => {
    assert.throws(() => add({ security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' }), {
      name: 'UsageError',
      message: /^hvparam security_domain="nobody,chroot=\/nonexistent" is not valid: it must be a user name/,
    });
  });

  it('refuses an unknown hvparam and an out-of-range unplug timeout', () => {
    assert.throws(() => add({ vnc_bind_address: '0.0.0.0' }), { name: 'UsageError', message: /^unknown hvparam "vnc_bind_address"/ });
    assert.throws(() => add({ unplug_timeout_memory: '0.0001' }), { name: 'UsageError', message: /unplug_timeout_memory="0.0001" is not valid/ });
  });

  it('keeps good hvparams', () => {
    const job = add({ security_model: 'none' });
    assert.deepEqual((job.op as { hvparams: Record<string, string> }).hvparams, { security_model: 'none' });
  });
});
