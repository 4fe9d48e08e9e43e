import * as assert from 'node:assert/strict';
import { decideCleanup, describeAnswer, type CleanupPlan, type NodeAnswer } from '../../src/master/jobs/cleanup-plan';

type Copy = Partial<Extract<NodeAnswer, { reachable: true }>>;

/** A reachable node's answer; by default it has no copy. */
const at = (node: string, c: Copy = {}): NodeAnswer => ({
  node, reachable: true, known: false, role: '', peerNode: '', qemuAlive: false, runState: '', state: '', ...c,
});
const running = (node: string, c: Copy = {}): NodeAnswer => at(node, { known: true, qemuAlive: true, runState: 'running', state: 'none', ...c });
const sourceCompleted = (node: string, peer: string): NodeAnswer =>
  at(node, { known: true, role: 'source', peerNode: peer, qemuAlive: true, runState: 'postmigrate', state: 'completed' });
const targetPaused = (node: string, peer: string, state = 'completed'): NodeAnswer =>
  at(node, { known: true, role: 'target', peerNode: peer, qemuAlive: true, runState: 'paused', state });

const decide = (answers: NodeAnswer[], primary = 'node1'): CleanupPlan => decideCleanup({ instance: 'web1', primary, answers });
/** The actions as "kind@node" strings, in order. */
const steps = (p: CleanupPlan): string[] => p.actions.map((a) => `${a.kind}@${a.node}`);

describe('decideCleanup (gnt-instance migrate --cleanup)', () => {
  it('refuses when a node cannot be asked, naming it, and plans nothing', () => {
    const p = decide([running('node1'), { node: 'node2', reachable: false, error: 'cannot reach node node2 (127.0.0.1:1): connect ECONNREFUSED' }]);
    assert.equal(p.decision, 'unreachable');
    assert.deepEqual(p.actions, []);
    assert.equal(p.error?.code, 'UNAVAILABLE');
    assert.match(p.error!.message, /cannot decide safely where web1 runs: node node2 cannot be asked/);
  });

  it('a completed migration with a disk copy not yet ended: end the copy on the source, then finish on the target', () => {
    const src = { ...sourceCompleted('node1', 'node2'), diskCopy: { ended: false, broken: false } } as NodeAnswer;
    const p = decide([src, targetPaused('node2', 'node1')]);
    assert.equal(p.decision, 'finish-forward');
    assert.deepEqual(steps(p), ['end-copy@node1', 'finish@node2', 'set-primary@node2', 'release@node1']);
  });

  it('a completed migration whose disk copy failed is rolled back, never finished forward', () => {
    const src = { ...sourceCompleted('node1', 'node2'), diskCopy: { ended: false, broken: true } } as NodeAnswer;
    const p = decide([src, targetPaused('node2', 'node1')]);
    assert.equal(p.decision, 'roll-back');
    assert.equal(p.authoritative, 'node1');
    assert.deepEqual(steps(p), ['abort@node2', 'abort@node1', 'set-primary@node1']);
  });

  it('refuses when the guest runs on two nodes, and changes nothing', () => {
    const p = decide([running('node1'), running('node2', { role: 'target', peerNode: 'node1' })]);
    assert.equal(p.decision, 'conflict');
    assert.deepEqual(p.actions, []);
    assert.equal(p.error?.message, 'instance web1 runs on both node1 and node2: stop one by hand; nothing was changed');
  });

  it('a node whose QEMU runs the guest is authoritative; the other copies are aborted (target) or released', () => {
    const p = decide([targetPaused('node1', 'node2', 'failed'), running('node2'), at('node3', { known: true })]);
    assert.equal(p.decision, 'running');
    assert.equal(p.authoritative, 'node2');
    assert.deepEqual(steps(p), ['abort@node1', 'set-primary@node2', 'release@node3']);
    assert.equal(p.error, undefined);
  });

  it('a source still migrating (master killed) is authoritative: abort the target, then cancel on the source', () => {
    const p = decide([
      running('node1', { role: 'source', peerNode: 'node2', state: 'active' }),
      targetPaused('node2', 'node1', 'active'),
    ]);
    assert.equal(p.decision, 'running');
    assert.equal(p.authoritative, 'node1');
    assert.deepEqual(steps(p), ['abort@node2', 'abort@node1', 'set-primary@node1']);
    assert.ok(p.actions.every((a) => a.onError === 'stop'));
  });

  it('nothing to repair: the guest runs on the primary only, no migration recorded', () => {
    const p = decide([running('node1'), at('node2')]);
    assert.equal(p.decision, 'running');
    assert.deepEqual(steps(p), ['set-primary@node1']);
    assert.match(p.reasons[0], /nothing to repair/);
    assert.match(p.actions[0].why, /already names it/);
  });

  it('a target that was resumed but kept its mark: primary follows it, the mark is cleared best effort', () => {
    const p = decide([sourceCompleted('node1', 'node2'), running('node2', { role: 'target', peerNode: 'node1', state: 'completed' })]);
    assert.equal(p.authoritative, 'node2');
    assert.deepEqual(steps(p), ['finish@node2', 'set-primary@node2', 'release@node1']);
    assert.equal(p.actions[0].onError, 'ignore');
  });

  it('source completed and a paused target: finish forward, primary = target, release the source', () => {
    const p = decide([sourceCompleted('node1', 'node2'), targetPaused('node2', 'node1'), at('node3')]);
    assert.equal(p.decision, 'finish-forward');
    assert.equal(p.authoritative, 'node2');
    assert.deepEqual(steps(p), ['finish@node2', 'set-primary@node2', 'release@node1']);
    assert.equal(p.actions[0].onError, 'stop');
    assert.match(p.reasons[0], /migration from node1 completed and node2 holds the paused guest/);
  });

  it('finish forward also when the target has not reported its own completion yet', () => {
    const p = decide([sourceCompleted('node1', 'node2'), targetPaused('node2', 'node1', 'active')]);
    assert.equal(p.decision, 'finish-forward');
    assert.deepEqual(steps(p), ['finish@node2', 'set-primary@node2', 'release@node1']);
  });

  it('finish forward picks the source\'s peer among several targets and aborts the others', () => {
    const p = decide([sourceCompleted('node1', 'node3'), targetPaused('node2', 'node1', 'failed'), targetPaused('node3', 'node1')]);
    assert.equal(p.authoritative, 'node3');
    assert.deepEqual(steps(p), ['finish@node3', 'set-primary@node3', 'release@node1', 'abort@node2']);
  });

  it('source paused mid-migration (not completed): roll back, targets first, then the source', () => {
    const p = decide([
      at('node1', { known: true, role: 'source', peerNode: 'node2', qemuAlive: true, runState: 'paused', state: 'failed' }),
      targetPaused('node2', 'node1', 'failed'),
    ]);
    assert.equal(p.decision, 'roll-back');
    assert.equal(p.authoritative, 'node1');
    assert.deepEqual(steps(p), ['abort@node2', 'abort@node1', 'set-primary@node1']);
  });

  it('a completed source whose target copy is gone: roll back (the target never ran the guest)', () => {
    const p = decide([sourceCompleted('node1', 'node2'), at('node2')]);
    assert.equal(p.decision, 'roll-back');
    assert.deepEqual(steps(p), ['abort@node1', 'set-primary@node1']);
  });

  it('never resumes a completed source when the guest may have run elsewhere since', () => {
    // Finished on node2 (mark cleared, primary moved), then node2's QEMU died before node1 was released.
    const p = decide([sourceCompleted('node1', 'node2'), at('node2', { known: true })], 'node2');
    assert.equal(p.decision, 'unsafe');
    assert.deepEqual(p.actions, []);
    assert.match(p.error!.message, /could corrupt its disks/);
  });

  it('a paused copy without a migration mark counts as a source: roll back to it (resume)', () => {
    const p = decide([at('node1', { known: true, qemuAlive: true, runState: 'paused', state: 'none' }), at('node2', { known: true, role: 'target', peerNode: 'node1' })]);
    assert.equal(p.decision, 'roll-back');
    assert.deepEqual(steps(p), ['abort@node2', 'abort@node1', 'set-primary@node1']);
  });

  it('only a target whose incoming migration completed (source QEMU gone): finish there, release the dead source', () => {
    const p = decide([at('node1', { known: true, role: 'source', peerNode: 'node2' }), targetPaused('node2', 'node1')]);
    assert.equal(p.decision, 'finish-target');
    assert.equal(p.authoritative, 'node2');
    assert.deepEqual(steps(p), ['finish@node2', 'set-primary@node2', 'release@node1']);
  });

  it('runs nowhere: incoming copies dropped, marks cleared, config unchanged, job fails saying to start it', () => {
    const p = decide([at('node1', { known: true, role: 'source', peerNode: 'node2' }), targetPaused('node2', 'node1', 'active'), at('node3')]);
    assert.equal(p.decision, 'nowhere');
    assert.equal(p.authoritative, '');
    assert.deepEqual(steps(p), ['abort@node1', 'abort@node2']);
    assert.ok(!p.actions.some((a) => a.kind === 'set-primary' || a.kind === 'release'));
    assert.equal(p.error?.code, 'FAILED_PRECONDITION');
    assert.match(p.error!.message, /^instance web1 runs on no node; start it with gnt-instance start web1/);
  });

  it('runs nowhere when no node has any copy', () => {
    const p = decide([at('node1'), at('node2')]);
    assert.equal(p.decision, 'nowhere');
    assert.deepEqual(p.actions, []);
  });

  it('never plans a release or abort of the node whose guest runs', () => {
    const cases: NodeAnswer[][] = [
      [running('node1', { role: 'source', state: 'active' }), targetPaused('node2', 'node1', 'active')],
      [sourceCompleted('node1', 'node2'), running('node2', { role: 'target' })],
      [running('node1'), at('node2', { known: true })],
    ];
    for (const answers of cases) {
      const p = decide(answers);
      const runner = p.authoritative;
      assert.ok(!p.actions.some((a) => a.node === runner && a.kind === 'release'), JSON.stringify(p));
    }
  });

  it('describes each answer for the job log', () => {
    assert.equal(describeAnswer('web1', at('node3')), 'node3: has no copy of web1');
    assert.equal(
      describeAnswer('web1', targetPaused('node2', 'node1')),
      'node2: runtime file present, QEMU alive (paused), migration target of node1, QEMU migration state completed',
    );
    assert.equal(describeAnswer('web1', { node: 'n', reachable: false, error: 'boom' }), 'n: cannot be asked: boom');
  });
});
