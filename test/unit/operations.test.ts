import { strict as assert } from 'node:assert';
import {
  MAX_SETTLED,
  beginOperation,
  changedSince,
  emptyJournal,
  journalFrom,
  openOperationsOf,
  reachesBack,
  recordNodeChange,
  settleOperation,
} from '../../src/hypervisor/operations';

describe('operation journal', () => {
  it('gives every change to a reported state the next revision, and lists what changed after one', () => {
    const j = emptyJournal();
    const a = beginOperation(j, 'a', 'nic', 'add', 'n1');
    const b = beginOperation(j, 'b', 'nic', 'remove', 'n2');
    assert.equal(a.revision, 0);
    settleOperation(j, b, 'removal_pending', 'request', { result: { pending: true } });
    settleOperation(j, a, 'succeeded', 'request', { result: { uuid: 'n1' } });
    settleOperation(j, b, 'succeeded', 'guest');
    assert.deepEqual([a.revision, b.revision, j.revision], [2, 3, 3]);
    assert.deepEqual(changedSince(j, 1).map((r) => r.id), ['a', 'b']);
    assert.deepEqual(changedSince(j, 3), []);
    assert.equal(b.finishedAt !== undefined, true);
  });

  it('refuses a second record of one id', () => {
    const j = emptyJournal();
    beginOperation(j, 'x', 'disk', 'add', 'd1');
    assert.throws(() => beginOperation(j, 'x', 'disk', 'add', 'd1'), /already recorded/);
  });

  it('records the node\'s own changes without an id, settled', () => {
    const j = emptyJournal();
    const r = recordNodeChange(j, 'nic', 'remove', 'n3', 'guest');
    assert.deepEqual([r.id, r.state, r.settledBy, r.revision], ['', 'succeeded', 'guest', 1]);
    assert.equal(recordNodeChange(j, 'nic', 'remove', 'n4', 'guest').revision, 2, 'several records without id');
  });

  it('lists the open operations of a device', () => {
    const j = emptyJournal();
    const a = beginOperation(j, 'a', 'nic', 'remove', 'n1');
    beginOperation(j, 'b', 'nic', 'add', 'n2');
    settleOperation(j, a, 'removal_pending', 'request');
    assert.deepEqual(openOperationsOf(j, 'n1').map((r) => r.id), ['a']);
  });

  it('prunes the oldest settled records past the limit, never open ones, and says when a cursor is too old', () => {
    const j = emptyJournal();
    const open = beginOperation(j, 'open', 'nic', 'remove', 'n0');
    settleOperation(j, open, 'removal_pending', 'request');
    for (let i = 0; i < MAX_SETTLED + 10; i++) settleOperation(j, beginOperation(j, `op${i}`, 'nic', 'add', `n${i}`), 'succeeded', 'request');
    assert.equal(j.records.filter((r) => r.state === 'succeeded').length, MAX_SETTLED);
    assert.ok(j.records.includes(open));
    assert.equal(reachesBack(j, 0), false);
    assert.equal(reachesBack(j, j.revision - 5), true);
    assert.equal(reachesBack(j, j.revision), true);
  });

  it('parses what it wrote and refuses malformed journals', () => {
    const j = emptyJournal();
    settleOperation(j, beginOperation(j, 'a', 'resources', 'resize', ''), 'failed', 'reconcile', { error: { code: 'ABORTED', message: 'x' } });
    const back = journalFrom(JSON.parse(JSON.stringify(j)), (m) => new Error(m));
    assert.deepEqual(back, j);
    assert.throws(() => journalFrom({ revision: 1, records: [{ id: 'a' }] }, (m) => new Error(m)), /malformed/);
    assert.throws(() => journalFrom([], (m) => new Error(m)), /not a valid operation journal/);
  });
});
