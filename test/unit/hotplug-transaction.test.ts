import { strict as assert } from 'node:assert';
import { HotplugStepError, QmpCommandError, QmpTimeoutError, isOutcomeUnknown } from '../../src/hypervisor/errors';
import { HotplugTransaction, inTransaction } from '../../src/hypervisor/hotplug-transaction';

/** Runs `p` and returns the HotplugStepError it rejects with. */
async function stepError(p: Promise<unknown>): Promise<HotplugStepError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HotplugStepError, `expected a HotplugStepError, got ${String(err)}`);
    return err;
  }
  assert.fail('no error');
}

describe('hotplug-transaction', () => {
  it('returns the body result when every step succeeds, undoing nothing', async () => {
    const log: string[] = [];
    const result = await inTransaction('hot-add of NIC x', async (tx) => {
      const a = await tx.step('one', () => 1, () => log.push('undo one'));
      const b = await tx.step('two', async () => a + 1, () => log.push('undo two'));
      return `${a}+${b}`;
    });
    assert.equal(result, '1+2');
    assert.deepEqual(log, []);
  });

  it('step returns the result of run and hands it to undo', async () => {
    const seen: unknown[] = [];
    await assert.rejects(
      inTransaction('act', async (tx) => {
        const r = await tx.step('make', async () => ({ fd: 42 }), (res) => seen.push(res));
        assert.deepEqual(r, { fd: 42 });
        throw new Error('later');
      }),
      HotplugStepError,
    );
    assert.deepEqual(seen, [{ fd: 42 }]);
  });

  it('a failing third step rolls back the first two, newest first', async () => {
    const log: string[] = [];
    const err = await stepError(
      inTransaction('hot-add of NIC nic-a-pci-5', async (tx) => {
        await tx.step('create tap', () => log.push('run create tap'), () => log.push('undo create tap'));
        await tx.step('getfd', async () => log.push('run getfd'), async () => {
          await new Promise((r) => setTimeout(r, 10));
          log.push('undo getfd');
        });
        await tx.step('netdev_add', async () => {
          log.push('run netdev_add');
          throw new Error('tap busy');
        }, () => log.push('undo netdev_add'));
        log.push('not reached');
      }),
    );
    assert.deepEqual(log, ['run create tap', 'run getfd', 'run netdev_add', 'undo getfd', 'undo create tap']);
    assert.equal(err.step, 'netdev_add');
    assert.deepEqual(err.undone, ['getfd', 'create tap']);
    assert.deepEqual(err.undoFailures, []);
    assert.equal(err.code, 'INTERNAL');
    assert.equal(
      err.message,
      'hot-add of NIC nic-a-pci-5 failed at step netdev_add: tap busy; rolled back: getfd, create tap',
    );
    assert.ok(err.cause instanceof Error);
    assert.equal(err.cause.message, 'tap busy');
  });

  it('steps without an undo are not listed as rolled back', async () => {
    const err = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('a', () => 1, () => undefined);
        await tx.step('b', () => 2);
        await tx.step('c', () => {
          throw new Error('boom');
        });
      }),
    );
    assert.deepEqual(err.undone, ['a']);
    assert.equal(err.message, 'act failed at step c: boom; rolled back: a');
  });

  it('a failing first step rolls back nothing and the message says so plainly', async () => {
    const err = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('first', () => {
          throw new Error('nope');
        }, () => assert.fail('the failed step itself must not be undone'));
      }),
    );
    assert.equal(err.step, 'first');
    assert.deepEqual(err.undone, []);
    assert.equal(err.message, 'act failed at step first: nope');
  });

  it('an undo that throws is reported in undoFailures and the other undos still run', async () => {
    const log: string[] = [];
    const err = await stepError(
      inTransaction('hot-add of disk d', async (tx) => {
        await tx.step('s1', () => 'a', () => log.push('undo s1'));
        await tx.step('s2', () => 'b', async () => {
          throw new Error('QEMU gone');
        });
        await tx.step('s3', () => 'c', () => log.push('undo s3'));
        await tx.step('s4', () => {
          throw new Error('device_add refused');
        });
      }),
    );
    assert.deepEqual(log, ['undo s3', 'undo s1']);
    assert.deepEqual(err.undone, ['s3', 's1']);
    assert.deepEqual(err.undoFailures, ['s2 (QEMU gone)']);
    assert.equal(
      err.message,
      'hot-add of disk d failed at step s4: device_add refused; rolled back: s3, s1; rollback FAILED for: s2 (QEMU gone)',
    );
  });

  it('an undo that throws a non-Error is reported too', async () => {
    const err = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('s1', () => 1, () => {
          throw 'string failure';
        });
        throw new Error('x');
      }),
    );
    assert.deepEqual(err.undone, []);
    assert.deepEqual(err.undoFailures, ['s1 (string failure)']);
  });

  it('forget drops the undo of the named step only', async () => {
    const log: string[] = [];
    const err = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('getfd', () => 1, () => log.push('closefd'));
        await tx.step('netdev_add', () => 2, () => log.push('netdev_del'));
        tx.forget('getfd');
        tx.forget('no such step');
        await tx.step('device_add', () => {
          throw new Error('bus full');
        });
      }),
    );
    assert.deepEqual(log, ['netdev_del']);
    assert.deepEqual(err.undone, ['netdev_add']);
  });

  it('takes the error code of a HypervisorError cause', async () => {
    const qmp = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('device_add', () => {
          throw new QmpCommandError('device_add', 'GenericError', 'Duplicate device ID');
        });
      }),
    );
    assert.equal(qmp.code, 'FAILED_PRECONDITION');
    assert.equal(qmp.message, 'act failed at step device_add: QEMU refused device_add: Duplicate device ID (GenericError)');

    const timeout = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('netdev_add', () => {
          throw new QmpTimeoutError('netdev_add', '/run/x/qmp.sock', 5000);
        });
      }),
    );
    assert.equal(timeout.code, 'DEADLINE_EXCEEDED');
  });

  it('undoes nothing after a step whose outcome is unknown (timeout), and says so', async () => {
    const log: string[] = [];
    const err = await stepError(
      inTransaction('hot-add of NIC n', async (tx) => {
        await tx.step('netdev_add', () => 1, () => log.push('netdev_del'));
        await tx.step('device_add', () => {
          throw new QmpTimeoutError('device_add', '/run/x/qmp.sock', 5000);
        });
      }),
    );
    assert.deepEqual(log, [], 'a device_add that may have run keeps its netdev');
    assert.equal(err.outcomeUnknown, true);
    assert.deepEqual(err.undone, []);
    assert.match(err.message, /its outcome is unknown .* nothing was undone, reconciliation settles it/);
    assert.equal(isOutcomeUnknown(err), true);
    assert.equal(isOutcomeUnknown(new QmpCommandError('device_add', 'GenericError', 'no')), false);
  });

  it('uses INTERNAL and the string form for a cause that is not an Error', async () => {
    const err = await stepError(
      inTransaction('act', async (tx) => {
        await tx.step('s', () => {
          throw 'raw string';
        });
      }),
    );
    assert.equal(err.code, 'INTERNAL');
    assert.equal(err.message, 'act failed at step s: raw string');
    assert.equal(err.cause, 'raw string');
  });

  it('names "start" as the step when the body fails before any step', async () => {
    const err = await stepError(
      inTransaction('act', async () => {
        throw new Error('early');
      }),
    );
    assert.equal(err.step, 'start');
    assert.equal(err.message, 'act failed at step start: early');
  });

  it('rollback can be called directly on a transaction', async () => {
    const tx = new HotplugTransaction('manual');
    const log: string[] = [];
    await tx.step('a', () => 1, () => log.push('undo a'));
    const err = await stepError(tx.rollback(new Error('stop')));
    assert.equal(tx.action, 'manual');
    assert.deepEqual(err.undone, ['a']);
    assert.equal(err.message.startsWith('manual failed at step '), true);
    assert.deepEqual(log, ['undo a']);
  });
});
