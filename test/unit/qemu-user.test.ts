import { strict as assert } from 'node:assert';
import { chooseUid, parseQemuUser, parseUidPool, resolveSecurity } from '../../src/noded/qemu-user';

const user = { user: 'gnt-qemu' };
const pool = { user: 'gnt-qemu', uidPool: { start: 40000, end: 40002 } };

describe('QEMU privilege model (src/noded/qemu-user.ts)', () => {
  it('defaults a new instance to the node\'s user, or to the pool when there is one', () => {
    assert.deepEqual(resolveSecurity('a', { machine: 'pc' }, undefined, user, new Set()), { machine: 'pc', security_model: 'user', security_domain: 'gnt-qemu' });
    assert.deepEqual(resolveSecurity('a', {}, undefined, pool, new Set([40000])), { security_model: 'pool', security_uid: 40001 });
  });

  it('gives root only for an explicit security_model=none', () => {
    assert.deepEqual(resolveSecurity('a', { security_model: 'none' }, undefined, pool, new Set()), { security_model: 'none' });
  });

  it('keeps the recorded model and uid at a restart', () => {
    const recorded = { security_model: 'pool', security_uid: 40002 };
    assert.deepEqual(resolveSecurity('a', {}, recorded, pool, new Set([40000])), { security_model: 'pool', security_uid: 40002 });
    assert.deepEqual(resolveSecurity('a', {}, { security_model: 'user', security_domain: 'other' }, pool, new Set()), { security_model: 'user', security_domain: 'other' });
    // a recorded uid another instance holds now is not reused
    assert.deepEqual(resolveSecurity('a', {}, recorded, pool, new Set([40002])), { security_model: 'pool', security_uid: 40000 });
  });

  it('refuses pool on a node without one, and when the pool is used up', () => {
    assert.throws(() => resolveSecurity('a', { security_model: 'pool' }, undefined, user, new Set()), { code: 'FAILED_PRECONDITION', message: /has no uid pool/ } as never);
    assert.throws(() => chooseUid(pool.uidPool, new Set([40000, 40001, 40002]), 'a'), { code: 'RESOURCE_EXHAUSTED', message: /uid pool 40000-40002 of this node is used up/ } as never);
  });

  it('parses --uid-pool and --qemu-user', () => {
    assert.deepEqual(parseUidPool('40000-40999'), { start: 40000, end: 40999 });
    for (const bad of ['0-10', '10-5', '1-70000', 'a-b', '40000'])
      assert.throws(() => parseUidPool(bad), /--uid-pool ".*" is not valid/);
    assert.equal(parseQemuUser('gnt-qemu'), 'gnt-qemu');
    assert.throws(() => parseQemuUser('root'), /not an unprivileged user name/);
    assert.throws(() => parseQemuUser('a,b'), /not an unprivileged user name/);
  });
});
