import * as assert from 'node:assert/strict';
import { parseArgs } from '../../src/master/cli/args';
import { withCommon } from '../../src/master/cli/common';
import { instanceCommands, parseFailoverArgs, parseMigrateArgs } from '../../src/master/cli/instance';
import { parseHvparams } from '../../src/master/cli/parse';
import { prepareJob } from '../../src/master/jobs/ops';
import { UsageError } from '../../src/master/validate';
import type { SubmitJobRequest__Output } from '../../src/generated/gnt/master/v1/SubmitJobRequest';
import type { InstanceMigrateOp__Output } from '../../src/generated/gnt/master/v1/InstanceMigrateOp';

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test((e as Error).message));
const migrateArgs = (...argv: string[]) => parseMigrateArgs(parseArgs(argv, withCommon(instanceCommands.migrate.spec)));
const failoverArgs = (...argv: string[]) => parseFailoverArgs(parseArgs(argv, withCommon(instanceCommands.failover.spec)));
const req = (o: Partial<InstanceMigrateOp__Output>): SubmitJobRequest__Output =>
  ({ op: 'instanceMigrate', instanceMigrate: { name: 'web1', target: '', cleanup: false, failover: false, ...o } }) as SubmitJobRequest__Output;

describe('gnt-instance migrate / failover parsing', () => {
  it('migrate [-n TARGET] [--cleanup] INSTANCE', () => {
    assert.deepEqual(migrateArgs('web1'), { name: 'web1', target: '', cleanup: false, failover: false });
    assert.deepEqual(migrateArgs('-n', 'node2', 'web1'), { name: 'web1', target: 'node2', cleanup: false, failover: false });
    assert.deepEqual(migrateArgs('--node=node2', '--submit', 'web1'), { name: 'web1', target: 'node2', cleanup: false, failover: false });
    assert.deepEqual(migrateArgs('--cleanup', 'web1'), { name: 'web1', target: '', cleanup: true, failover: false });
  });

  it('failover [-n TARGET] INSTANCE', () => {
    assert.deepEqual(failoverArgs('web1'), { name: 'web1', target: '', cleanup: false, failover: true });
    assert.deepEqual(failoverArgs('-n', 'node3', 'web1'), { name: 'web1', target: 'node3', cleanup: false, failover: true });
  });

  it('refuses bad names, a missing instance, -n with --cleanup, and --cleanup on failover', () => {
    usage(() => migrateArgs('../x'), /instance name "\.\.\/x" is not valid/);
    usage(() => migrateArgs('-n', 'no/de', 'web1'), /node name "no\/de" is not valid/);
    usage(() => migrateArgs(), /missing INSTANCE/);
    usage(() => migrateArgs('web1', 'web2'), /unexpected argument "web2"/);
    usage(() => migrateArgs('--cleanup', '-n', 'node2', 'web1'), /--cleanup takes no -n/);
    usage(() => failoverArgs('--cleanup', 'web1'), /unknown option --cleanup/);
  });

  it('accepts the migration hvparams (whole numbers only)', () => {
    assert.deepEqual(parseHvparams(['migration_bandwidth=100,migration_downtime=50']), { migration_bandwidth: '100', migration_downtime: '50' });
    usage(() => parseHvparams(['migration_bandwidth=fast']), /migration_bandwidth="fast" is not valid: it must be a whole number from 0 to 999999999 \(MiB\/s/);
    usage(() => parseHvparams(['migration_downtime=-1']), /migration_downtime="-1" is not valid: it must be a whole number from 0 to 999999999 \(ms/);
  });

  it('the master turns InstanceMigrateOp into a locked instance-migrate op with a summary', () => {
    const live = prepareJob(req({ target: 'node2' }));
    assert.deepEqual(live.op, { type: 'instance-migrate', name: 'web1', target: 'node2', cleanup: false, failover: false });
    assert.equal(live.summary, 'migrate instance web1 to node2');
    assert.deepEqual(live.locks, ['instance:web1']);
    assert.equal(prepareJob(req({})).summary, 'migrate instance web1');
    assert.equal(prepareJob(req({ failover: true })).summary, 'failover instance web1');
    assert.equal(prepareJob(req({ failover: true, target: 'node3' })).summary, 'failover instance web1 to node3');
    const cleanup = prepareJob(req({ cleanup: true, target: 'node2' }));
    assert.equal(cleanup.summary, 'clean up migration of web1');
    assert.equal((cleanup.op as { target: string }).target, '', 'cleanup ignores a target');
  });

  it('the master checks again what any client could send', () => {
    usage(() => prepareJob(req({ name: 'a b' })), /instance name "a b" is not valid/);
    usage(() => prepareJob(req({ target: '-x' })), /node name "-x" is not valid/);
    usage(() => prepareJob(req({ cleanup: true, failover: true })), /cannot be combined with failover/);
  });
});
