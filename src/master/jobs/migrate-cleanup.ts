/**
 * gnt-instance migrate --cleanup: asks every node of the cluster about the
 * instance, decides where it really runs (jobs/cleanup-plan.ts, pure), logs
 * why, and carries the plan out: finish or roll back the interrupted
 * migration, point the configuration at the authoritative node, and drop
 * every other copy.
 */
import type { InstanceConfig, NodeRow } from '../config/config-store';
import { NodeRpcError } from '../node-rpc';
import { JobError, type JobContext } from './queue';
import { decideCleanup, describeAnswer, type CleanupAction, type CleanupPlan, type NodeAnswer } from './cleanup-plan';
import { cleanupHint, errCode, errText, nodeOf, type MigrateDeps } from './migrate-common';
import { diskCopyProblem } from './migrate-disk-copy';

export async function cleanupMigration(deps: MigrateDeps, name: string, ctx: JobContext): Promise<void> {
  const inst = deps.config.getInstance(name);
  const nodes = deps.config.listNodes();
  ctx.log(`cleanup of ${name}: asking all ${nodes.length} node(s) where it runs (MigrationStatus); the configuration names ${inst.node.name}`);
  const answers = await Promise.all(nodes.map((n) => askNode(deps, n, name)));
  answers.forEach((a) => ctx.log(describeAnswer(name, a)));
  const plan = decideCleanup({ instance: name, primary: inst.node.name, answers });
  plan.reasons.forEach((r) => ctx.log(`decision (${plan.decision}): ${r}`));
  const failed = await carryOut(deps, inst, plan, nodes, ctx);
  if (plan.error) throw new JobError(plan.error.message, plan.error.code);
  if (failed.length)
    throw new JobError(
      `${name} runs on ${plan.authoritative} and the configuration says so, but ${failed.map((f) => f.text).join('; ')}; ${cleanupHint(name)} again`,
      failed[0].code,
    );
  ctx.log(`cleanup done: ${name} runs on ${plan.authoritative} and the configuration says so`);
}

/** One node's MigrationStatus; NOT_FOUND is "no copy", any other error "cannot be asked". */
async function askNode(deps: MigrateDeps, node: NodeRow, name: string): Promise<NodeAnswer> {
  try {
    const st = await deps.rpc.migrationStatus(nodeOf(node), name);
    return {
      node: node.name, reachable: true, known: st.known, role: st.role, peerNode: st.peerNode, qemuAlive: st.qemuAlive,
      runState: st.runState, state: st.state,
      ...(st.diskCopy ? { diskCopy: { ended: st.diskCopyEnded, broken: !!diskCopyProblem(st) } } : {}),
    };
  } catch (err) {
    if (err instanceof NodeRpcError && err.code === 'NOT_FOUND')
      return { node: node.name, reachable: true, known: false, role: '', peerNode: '', qemuAlive: false, runState: '', state: '' };
    return { node: node.name, reachable: false, error: errText(err) };
  }
}

interface Failure {
  text: string;
  code: string;
}

/** Runs the actions in order; returns the failures of "continue" actions (a "stop" failure throws). */
async function carryOut(deps: MigrateDeps, inst: InstanceConfig, plan: CleanupPlan, nodes: NodeRow[], ctx: JobContext): Promise<Failure[]> {
  const failed: Failure[] = [];
  const done: string[] = [];
  for (const action of plan.actions) {
    const what = describeAction(inst.name, action);
    ctx.log(`${what}: ${action.why}`);
    try {
      const result = await perform(deps, inst.name, action, nodes);
      ctx.log(`${what}: done${result ? ` (${result})` : ''}`);
      done.push(what);
    } catch (err) {
      ctx.log(`${what} failed${action.onError === 'ignore' ? ' (ignored)' : ''}: ${errText(err)}`);
      if (action.onError === 'ignore') continue;
      if (action.onError === 'continue') {
        failed.push({ text: `${what} failed (${errText(err)})`, code: errCode(err) });
        continue;
      }
      throw new JobError(
        `cleanup of ${inst.name} stopped: ${what} failed: ${errText(err)}; done before it: ${done.length ? done.join(', ') : 'nothing'}; ` +
          `nothing after it was done; ${cleanupHint(inst.name)} again once ${action.node} works`,
        errCode(err),
      );
    }
  }
  return failed;
}

function describeAction(name: string, a: CleanupAction): string {
  switch (a.kind) {
    case 'finish':
      return `MigrationFinish of ${name} on ${a.node}`;
    case 'abort':
      return `MigrationAbort of ${name} on ${a.node}`;
    case 'release':
      return `InstanceRelease of ${name} on ${a.node}`;
    case 'end-copy':
      return `MigrationDiskCopyEnd of ${name} on ${a.node}`;
    case 'set-primary':
      return `configuration: primary node of ${name} -> ${a.node}`;
  }
}

async function perform(deps: MigrateDeps, name: string, a: CleanupAction, nodes: NodeRow[]): Promise<string> {
  if (a.kind === 'set-primary') {
    deps.config.setPrimaryNode(name, a.node);
    return '';
  }
  const row = nodes.find((n) => n.name === a.node);
  if (!row) throw new JobError(`node ${a.node} is not in the configuration any more`, 'NOT_FOUND');
  const node = nodeOf(row);
  switch (a.kind) {
    case 'finish': {
      const rt = await deps.rpc.migrationFinish(node, name);
      return rt.running ? `running, pid ${rt.pid}` : 'not running';
    }
    case 'abort': {
      const st = await deps.rpc.migrationAbort(node, name);
      return st.qemuAlive ? `QEMU ${st.runState || 'alive'}` : 'no QEMU left';
    }
    case 'release':
      await deps.rpc.instanceRelease(node, name);
      return '';
    case 'end-copy': {
      const st = await deps.rpc.migrationDiskCopyEnd(node, name);
      return st.diskCopyEnded ? 'the target\'s disks are consistent' : '';
    }
  }
}
