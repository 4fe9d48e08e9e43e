import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import type { QemuFeatures } from '../../src/hypervisor/qemu-binary';
import { buildFixedCommand, nodeLocalArgs, securityArgs, type InstanceSpec } from '../../src/hypervisor/qemu-command';

const qemu = (runWith: boolean, sandbox: boolean): QemuFeatures => ({
  binary: 'qemu-system-x86_64',
  version: { major: runWith ? 10 : 8, minor: 0, micro: 0 },
  runWith,
  sandbox,
});

const spec = (over: Partial<InstanceSpec> = {}): InstanceSpec => ({
  name: 'web-1',
  memoryMiB: 256,
  vcpus: 1,
  kernel: '/boot/vmlinuz',
  ...over,
});

const invalid = (fn: () => unknown, message: string): void => {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `got ${String(err)}`);
    assert.equal(err.message, message);
    return true;
  });
};

describe('qemu-command', () => {
  describe('buildFixedCommand', () => {
    it('builds the minimal machine', () => {
      assert.deepEqual(buildFixedCommand(spec()), [
        '-name', 'web-1',
        '-machine', 'pc',
        '-accel', 'tcg',
        '-m', '256M',
        '-smp', '1,maxcpus=1',
        '-nodefaults', '-no-user-config', '-display', 'none',
        '-kernel', '/boot/vmlinuz',
      ]);
    });

    it('builds a full spec with hotplug room, uuid, initrd and kernel arguments', () => {
      assert.deepEqual(
        buildFixedCommand(
          spec({
            uuid: '6f1c1b2a-0000-4000-8000-000000000001',
            memoryMiB: 512,
            maxMemoryMiB: 2048,
            memorySlots: 8,
            vcpus: 2,
            maxVcpus: 4,
            initrd: '/boot/initrd.img',
            kernelArgs: 'console=ttyS0 quiet',
            machine: 'q35',
            accel: 'kvm',
          }),
        ),
        [
          '-name', 'web-1',
          '-machine', 'q35',
          '-accel', 'kvm',
          '-m', '512M,slots=8,maxmem=2048M',
          '-smp', '2,maxcpus=4',
          '-nodefaults', '-no-user-config', '-display', 'none',
          '-kernel', '/boot/vmlinuz',
          '-uuid', '6f1c1b2a-0000-4000-8000-000000000001',
          '-initrd', '/boot/initrd.img',
          '-append', 'console=ttyS0 quiet',
        ],
      );
    });

    const memArg = (s: InstanceSpec): string => {
      const cmd = buildFixedCommand(s);
      return cmd[cmd.indexOf('-m') + 1];
    };

    it('formats -m with 4 slots by default when maxmem exceeds memory', () => {
      assert.equal(memArg(spec({ memoryMiB: 256, maxMemoryMiB: 1024 })), '256M,slots=4,maxmem=1024M');
    });

    it('formats -m without slots when maxmem equals memory', () => {
      assert.equal(memArg(spec({ memoryMiB: 256, maxMemoryMiB: 256, memorySlots: 8 })), '256M');
    });

    it('treats maxmem 0 as "no memory hotplug", as documented on InstanceSpec.maxMemoryMiB', () => {
      assert.equal(memArg(spec({ memoryMiB: 256, maxMemoryMiB: 0 })), '256M');
    });

    it('rejects vcpus 0 and other non-positive or fractional counts', () => {
      invalid(() => buildFixedCommand(spec({ vcpus: 0 })), 'vcpus must be a positive integer, not 0');
      invalid(() => buildFixedCommand(spec({ vcpus: 1.5 })), 'vcpus must be a positive integer, not 1.5');
      invalid(() => buildFixedCommand(spec({ memoryMiB: 0 })), 'memory (MiB) must be a positive integer, not 0');
      invalid(() => buildFixedCommand(spec({ maxVcpus: 0 })), 'maxvcpus must be a positive integer, not 0');
    });

    it('rejects maxvcpus below vcpus', () => {
      invalid(() => buildFixedCommand(spec({ vcpus: 4, maxVcpus: 2 })), 'maxvcpus 2 is below vcpus 4');
    });

    it('rejects maxmem below memory', () => {
      invalid(() => buildFixedCommand(spec({ memoryMiB: 512, maxMemoryMiB: 256 })), 'maxmem 256 MiB is below memory 512 MiB');
    });
  });

  describe('nodeLocalArgs', () => {
    it('adds monitor, console and pid file', () => {
      assert.deepEqual(nodeLocalArgs({ qmpSocket: '/d/qmp.sock', consoleLog: '/d/console.log', consoleSocket: '/d/console.sock', pidFile: '/d/qemu.pid' }), [
        '-qmp', 'unix:/d/qmp.sock,server=on,wait=off',
        '-chardev', 'socket,id=console,path=/d/console.sock,server=on,wait=off,logfile=/d/console.log',
        '-serial', 'chardev:console',
        '-pidfile', '/d/qemu.pid',
      ]);
    });

    it('adds the test monitor only when asked (gnt-noded --test-monitor)', () => {
      const paths = { qmpSocket: '/d/qmp.sock', consoleLog: '/d/console.log', consoleSocket: '/d/console.sock', pidFile: '/d/qemu.pid', testQmpSocket: '/d/qmp-test.sock' };
      assert.ok(!nodeLocalArgs(paths).includes('unix:/d/qmp-test.sock,server=on,wait=off'));
      assert.deepEqual(nodeLocalArgs(paths, { testMonitor: true }).slice(0, 4), [
        '-qmp', 'unix:/d/qmp.sock,server=on,wait=off',
        '-qmp', 'unix:/d/qmp-test.sock,server=on,wait=off',
      ]);
    });
  });

  describe('securityArgs', () => {
    it('adds nothing for security_model none or unset', () => {
      assert.deepEqual(securityArgs({ security_model: 'none' }, qemu(true, true)), []);
      assert.deepEqual(securityArgs({}, qemu(true, true)), []);
    });

    it('uses -run-with and the sandbox on a QEMU that has both', () => {
      assert.deepEqual(
        securityArgs({ security_model: 'user', security_domain: 'gnt-qemu', chroot: '/x' }, qemu(true, true)),
        ['-run-with', 'user=gnt-qemu,chroot=/x', '-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny'],
      );
    });

    it('uses -runas and -chroot on a QEMU without -run-with', () => {
      assert.deepEqual(
        securityArgs({ security_model: 'user', security_domain: 'gnt-qemu', chroot: '/x' }, qemu(false, true)),
        ['-runas', 'gnt-qemu', '-chroot', '/x', '-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny'],
      );
    });

    it('leaves out the chroot when none is set, and the sandbox when QEMU lacks it', () => {
      assert.deepEqual(securityArgs({ security_model: 'user', security_domain: 'u' }, qemu(true, false)), ['-run-with', 'user=u']);
      assert.deepEqual(securityArgs({ security_model: 'user', security_domain: 'u', chroot: '' }, qemu(false, false)), ['-runas', 'u']);
    });

    it('rejects security_model user without security_domain', () => {
      const msg = 'security_model=user needs security_domain (a user name)';
      invalid(() => securityArgs({ security_model: 'user' }, qemu(true, true)), msg);
      invalid(() => securityArgs({ security_model: 'user', security_domain: '' }, qemu(true, true)), msg);
      invalid(
        () => securityArgs({ security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' }, qemu(true, true)),
        'hvparam security_domain="nobody,chroot=/nonexistent" is not valid: it must be a user name (lower-case letter or "_", then up to 31 lower-case letters, digits, "_" or "-")',
      );
    });

    it('runs a pool instance as uid:gid of its recorded security_uid', () => {
      assert.deepEqual(securityArgs({ security_model: 'pool', security_uid: 40001 }, qemu(true, true)), ['-run-with', 'user=40001:40001', '-sandbox', 'on,obsolete=deny,spawn=deny,resourcecontrol=deny']);
      assert.deepEqual(securityArgs({ security_model: 'pool', security_uid: '40002' }, qemu(false, false)), ['-runas', '40002:40002']);
      invalid(() => securityArgs({ security_model: 'pool' }, qemu(true, true)), "security_model=pool needs security_uid (a uid of the node's pool)");
    });

    it('rejects an unknown security_model', () => {
      invalid(() => securityArgs({ security_model: 'root' }, qemu(true, true)), 'hvparam security_model="root" is not valid: it must be one of none, user, pool');
    });
  });
});
