/**
 * `gnt-instance migrate --cleanup`: the decision, as a pure function of what
 * every node of the cluster says about the instance (MigrationStatus). No
 * I/O here: jobs/migrate.ts asks the nodes, logs the plan and carries it out.
 *
 * Rules, in order:
 *   1. A node whose QEMU runs the guest (qemu alive, run state "running") is
 *      authoritative. Two such nodes: refuse and change nothing.
 *   2. A source copy whose migration "completed" and a live target copy:
 *      finish forward (MigrationFinish on the target), primary = target.
 *      With a disk copy not yet ended, MigrationDiskCopyEnd on the source
 *      comes first; a disk copy that failed (a mirror job with an error) is
 *      never finished forward: the target's disks are not complete, and the
 *      source is rolled back instead (rule 3).
 *   3. A live source copy (role "source", or no role), not completed or with
 *      no target left to finish on: roll back (MigrationAbort on every
 *      target copy, then on the source: cancel, resume), primary = source.
 *      A completed source is not resumed when another node has a copy
 *      without a migration mark or is the configured primary: the guest may
 *      have run there, and resuming the old state would corrupt the disks.
 *   4. Only a live target copy whose incoming migration completed: finish
 *      there.
 *   5. Otherwise the instance runs nowhere: target copies are aborted,
 *      migration marks cleared, the job fails and says to start it.
 * Once the authoritative node A is known, every other node with a copy gets
 * MigrationAbort if it is a migration target, else InstanceRelease (never a
 * copy whose guest runs: rule 1 guarantees that), and the primary becomes A.
 */

/** One node's MigrationStatus of the instance, or why it could not be asked. */
export type NodeAnswer =
  | { node: string; reachable: false; error: string }
  | {
      node: string;
      reachable: true;
      /** The node has a runtime file for the instance (NOT_FOUND from the node: false). */
      known: boolean;
      /** "source", "target" or "" (no migration recorded). */
      role: string;
      peerNode: string;
      qemuAlive: boolean;
      /** QEMU's run state: running, paused, postmigrate, inmigrate, ... */
      runState: string;
      /** QEMU's migration state: none, active, completed, failed, ... */
      state: string;
      /** The migration copies disks (MigrationStatus.disk_copy): ended consistently, or failed. */
      diskCopy?: { ended: boolean; broken: boolean };
    };

export type ReachableAnswer = Extract<NodeAnswer, { reachable: true }>;

/**
 * What to do when an action fails: `stop` fails the job at once (later
 * actions depend on it); `continue` goes on and fails the job at the end;
 * `ignore` only logs (tidying that changes no outcome).
 */
export type OnError = 'stop' | 'continue' | 'ignore';

export type CleanupAction =
  | { kind: 'finish' | 'abort' | 'release' | 'end-copy'; node: string; why: string; onError: OnError }
  | { kind: 'set-primary'; node: string; why: string; onError: 'stop' };

export type CleanupDecision = 'unreachable' | 'conflict' | 'unsafe' | 'running' | 'finish-forward' | 'roll-back' | 'finish-target' | 'nowhere';

export interface CleanupPlan {
  decision: CleanupDecision;
  /** The node the instance runs on once the plan is carried out; '' when none. */
  authoritative: string;
  /** Why, in words, for the job log. */
  reasons: string[];
  /** In order. */
  actions: CleanupAction[];
  /** The job fails with this after the actions (nothing could be decided, or the guest runs nowhere). */
  error?: { message: string; code: 'FAILED_PRECONDITION' | 'UNAVAILABLE' };
}

export interface CleanupInput {
  instance: string;
  /** The configured primary node. */
  primary: string;
  /** One answer per node of the cluster. */
  answers: NodeAnswer[];
}

const hasCopy = (a: ReachableAnswer): boolean => a.known || a.qemuAlive;
const runsGuest = (a: ReachableAnswer): boolean => a.qemuAlive && a.runState === 'running';
const isLiveSource = (a: ReachableAnswer): boolean => a.qemuAlive && (a.role === 'source' || a.role === '');

/** The copy to prefer among several: the configured primary, else the peer named, else the first. */
function pick(copies: ReachableAnswer[], ...preferred: string[]): ReachableAnswer | undefined {
  for (const p of preferred) {
    const c = copies.find((x) => x.node === p);
    if (c) return c;
  }
  return copies[0];
}

/** One node's answer in words, e.g. "node2: QEMU alive (paused), migration target of node1, QEMU migration state completed". */
export function describeAnswer(instance: string, a: NodeAnswer): string {
  if (!a.reachable) return `${a.node}: cannot be asked: ${a.error}`;
  if (!hasCopy(a)) return `${a.node}: has no copy of ${instance}`;
  const qemu = a.qemuAlive ? `QEMU alive (${a.runState || 'run state unknown'})` : 'no QEMU running';
  const role = a.role ? `migration ${a.role}${a.peerNode ? ` ${a.role === 'source' ? 'to' : 'of'} ${a.peerNode}` : ''}` : 'no migration recorded';
  const state = a.qemuAlive && a.state ? `, QEMU migration state ${a.state}` : '';
  return `${a.node}: runtime file ${a.known ? 'present' : 'missing'}, ${qemu}, ${role}${state}`;
}

/** Every other copy: targets are aborted, the rest released. */
function othersActions(copies: ReachableAnswer[], keep: ReadonlySet<string>, authoritative: string): CleanupAction[] {
  return copies
    .filter((c) => !keep.has(c.node))
    .map((c): CleanupAction =>
      c.role === 'target'
        ? { kind: 'abort', node: c.node, why: `stale incoming copy (the instance runs on ${authoritative})`, onError: 'continue' }
        : { kind: 'release', node: c.node, why: `leftover copy (the instance runs on ${authoritative})`, onError: 'continue' },
    );
}

function setPrimary(node: string, primary: string): CleanupAction {
  return { kind: 'set-primary', node, why: node === primary ? 'the configuration already names it' : `was ${primary}`, onError: 'stop' };
}

function settle(
  input: CleanupInput, decision: CleanupDecision, authoritative: string, reason: string,
  establish: CleanupAction[], copies: ReachableAnswer[],
): CleanupPlan {
  // end-copy only prepares the finish: its node is released like any other leftover copy.
  const handled = new Set([authoritative, ...establish.filter((a) => a.kind !== 'end-copy').map((a) => a.node)]);
  return {
    decision,
    authoritative,
    reasons: [reason],
    actions: [...establish, setPrimary(authoritative, input.primary), ...othersActions(copies, handled, authoritative)],
  };
}

/** Rule 1: exactly one node runs the guest. */
function planRunning(input: CleanupInput, a: ReachableAnswer, copies: ReachableAnswer[]): CleanupPlan {
  const targets = copies.filter((c) => c.node !== a.node && c.role === 'target');
  const establish: CleanupAction[] = targets.map((t) => ({ kind: 'abort', node: t.node, why: `incoming copy not needed: the guest runs on ${a.node}`, onError: 'stop' }));
  if (a.role === 'source')
    establish.push({ kind: 'abort', node: a.node, why: 'cancel the migration if it still runs and clear the migration mark', onError: 'stop' });
  if (a.role === 'target')
    establish.push({ kind: 'finish', node: a.node, why: 'clear the migration mark of the resumed guest', onError: 'ignore' });
  const reason = `${input.instance} runs on ${a.node} (its QEMU runs the guest): ${a.node} is authoritative` +
    (copies.length === 1 && !a.role ? '; no other copy and no migration recorded: nothing to repair' : '');
  return settle(input, 'running', a.node, reason, establish, copies);
}

/** Rules 2 and 4: the target has the whole state; resume it there. */
function planFinish(input: CleanupInput, decision: 'finish-forward' | 'finish-target', t: ReachableAnswer, source: string, copies: ReachableAnswer[], endCopy = false): CleanupPlan {
  const reason =
    decision === 'finish-forward'
      ? `the migration from ${source} completed and ${t.node} holds the paused guest: finishing forward (resume on ${t.node}, release ${source})`
      : `no live source copy; ${t.node} received the whole migration (state completed): finishing there`;
  const establish: CleanupAction[] = [
    ...(endCopy ? [{ kind: 'end-copy' as const, node: source, why: 'end the disk copy, so that the disks on the target are complete', onError: 'stop' as const }] : []),
    { kind: 'finish', node: t.node, why: 'resume the guest there', onError: 'stop' },
  ];
  return settle(input, decision, t.node, reason, establish, copies);
}

/** Rule 3: resume on the source, drop every incoming copy. */
function planRollBack(input: CleanupInput, s: ReachableAnswer, copies: ReachableAnswer[]): CleanupPlan {
  const targets = copies.filter((c) => c.node !== s.node && c.role === 'target');
  const establish: CleanupAction[] = [
    ...targets.map((t): CleanupAction => ({ kind: 'abort', node: t.node, why: 'drop the incoming copy (it never ran the guest)', onError: 'stop' })),
    { kind: 'abort', node: s.node, why: 'cancel the migration, resume the guest, clear the mark', onError: 'stop' },
  ];
  const state = s.state ? ` (migration state ${s.state})` : '';
  const reason = `no node runs the guest and no migration can be finished; ${s.node} has the source copy with a live QEMU${state}: rolling back to ${s.node}`;
  return settle(input, 'roll-back', s.node, reason, establish, copies);
}

/** Rule 5: nothing to resume anywhere. */
function planNowhere(input: CleanupInput, copies: ReachableAnswer[]): CleanupPlan {
  const actions = copies.flatMap((c): CleanupAction[] =>
    c.role === 'target'
      ? [{ kind: 'abort', node: c.node, why: 'drop the incoming copy (it never ran the guest)', onError: 'continue' }]
      : c.role === 'source'
        ? [{ kind: 'abort', node: c.node, why: 'clear the migration mark (no QEMU to resume)', onError: 'ignore' }]
        : [],
  );
  const message = `instance ${input.instance} runs on no node; start it with gnt-instance start ${input.instance}` +
    ` (the configuration keeps ${input.primary} as its primary node)`;
  return {
    decision: 'nowhere', authoritative: '', actions,
    reasons: [`no node runs the guest, no live source copy to roll back to and no completed target copy to finish on`],
    error: { message, code: 'FAILED_PRECONDITION' },
  };
}

function refuse(decision: 'unreachable' | 'conflict' | 'unsafe', reason: string, code: 'FAILED_PRECONDITION' | 'UNAVAILABLE' = 'FAILED_PRECONDITION'): CleanupPlan {
  return { decision, authoritative: '', reasons: [reason], actions: [], error: { message: reason, code } };
}

/**
 * A completed source may be resumed only if the guest cannot have run
 * elsewhere: no other copy without a migration mark (MigrationFinish clears
 * it) and the configuration still names the source.
 */
function unsafeRollBack(input: CleanupInput, s: ReachableAnswer, copies: ReachableAnswer[]): string | undefined {
  if (s.state !== 'completed') return undefined;
  const finished = copies.find((c) => c.node !== s.node && c.role !== 'target');
  if (!finished && input.primary === s.node) return undefined;
  const where = finished ? finished.node : input.primary;
  return `the migration of ${input.instance} from ${s.node} completed, and ${where} ${finished ? 'has a copy without a migration mark' : 'is the configured primary'}:` +
    ` the guest may have run on ${where} since, so resuming the old state on ${s.node} could corrupt its disks.` +
    ` Nothing was changed; check ${where} by hand, then start the instance there (gnt-instance start ${input.instance}) and release ${s.node}`;
}

/** The plan for `gnt-instance migrate --cleanup` (see the file comment). */
export function decideCleanup(input: CleanupInput): CleanupPlan {
  const unreachable = input.answers.filter((a): a is Extract<NodeAnswer, { reachable: false }> => !a.reachable);
  if (unreachable.length)
    return refuse('unreachable',
      `cannot decide safely where ${input.instance} runs: ${unreachable.map((a) => `node ${a.node} cannot be asked (${a.error})`).join('; ')};` +
        ' nothing was changed; bring the node daemon back and run the cleanup again', 'UNAVAILABLE');
  const copies = input.answers.filter((a): a is ReachableAnswer => a.reachable && hasCopy(a));
  const running = copies.filter(runsGuest);
  if (running.length > 1)
    return refuse('conflict', `instance ${input.instance} runs on both ${running.map((r) => r.node).join(' and ')}: stop one by hand; nothing was changed`);
  if (running.length === 1) return planRunning(input, running[0], copies);
  // A source whose disk copy failed is not finished forward: the target's disks are incomplete.
  const source = copies.find((c) => c.role === 'source' && c.qemuAlive && c.state === 'completed' && !(c.diskCopy?.broken && !c.diskCopy.ended));
  const targets = copies.filter((c) => c.role === 'target' && c.qemuAlive);
  const forward = source && pick(targets, source.peerNode);
  if (source && forward) return planFinish(input, 'finish-forward', forward, source.node, copies, !!source.diskCopy && !source.diskCopy.ended);
  const back =
    pick(copies.filter((c) => isLiveSource(c) && c.role === 'source'), input.primary) ??
    pick(copies.filter((c) => isLiveSource(c) && c.role === ''), input.primary);
  if (back) {
    const unsafe = unsafeRollBack(input, back, copies);
    return unsafe ? refuse('unsafe', unsafe) : planRollBack(input, back, copies);
  }
  const done = targets.find((t) => t.state === 'completed');
  if (done) return planFinish(input, 'finish-target', done, '', copies);
  return planNowhere(input, copies);
}
