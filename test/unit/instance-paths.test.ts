import { strict as assert } from 'node:assert';
import { InvalidArgumentError } from '../../src/hypervisor/errors';
import { assertInstanceName, instancePaths } from '../../src/hypervisor/instance-paths';

describe('instance-paths', () => {
  describe('assertInstanceName', () => {
    for (const good of ['web-1.example', 'a', 'A9_x', '1web', 'x'.repeat(63)]) {
      it(`accepts ${JSON.stringify(good.length > 20 ? `${good.length} characters` : good)}`, () => {
        assert.equal(assertInstanceName(good), good);
      });
    }

    for (const bad of [
      'a/b',
      '/',
      '..',
      'a..b',
      '../etc',
      'a b',
      '$(x)',
      '`x`',
      'a;b',
      '',
      'x'.repeat(64),
      '.hidden',
      '-rf',
      'web-1\n',
      'wéb',
    ]) {
      it(`rejects ${JSON.stringify(bad.length > 20 ? `${bad.length} characters` : bad)}`, () => {
        assert.throws(
          () => assertInstanceName(bad),
          (err: unknown) => {
            assert.ok(err instanceof InvalidArgumentError);
            assert.equal(err.code, 'INVALID_ARGUMENT');
            assert.ok(err.message.startsWith(`instance name "${bad}" is not valid: `), err.message);
            return true;
          },
        );
      });
    }
  });

  describe('instancePaths', () => {
    it('puts every file in the instance directory', () => {
      assert.deepEqual(instancePaths('/var/lib/gnt', 'web-1.example'), {
        dir: '/var/lib/gnt/web-1.example',
        runtimeFile: '/var/lib/gnt/web-1.example/runtime.json',
        qmpSocket: '/var/lib/gnt/web-1.example/qmp.sock',
        testQmpSocket: '/var/lib/gnt/web-1.example/qmp-test.sock',
        consoleLog: '/var/lib/gnt/web-1.example/console.log',
        pidFile: '/var/lib/gnt/web-1.example/qemu.pid',
        qemuLog: '/var/lib/gnt/web-1.example/qemu.log',
        agentSocket: '/var/lib/gnt/web-1.example/qga.sock',
        consoleSocket: '/var/lib/gnt/web-1.example/console.sock',
      });
    });

    it('refuses a name that would leave the data directory', () => {
      assert.throws(() => instancePaths('/var/lib/gnt', '../x'), InvalidArgumentError);
    });
  });
});
