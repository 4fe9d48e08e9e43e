/**
 * gnt-instance failover: the guest stops on the source node A and boots on
 * the target B (no live state is carried; the guest reboots).
 *
 * A answers: its runtime file is carried (InstanceExport), the guest is
 * stopped on A, B boots it from that file (InstanceReceive, incoming=false),
 * so every device keeps its PCI slot; then the primary becomes B and A's copy
 * is released. If B fails after A was stopped, the guest is started on A
 * again. An instance that was not running is stopped again on B: only its
 * runtime file (and the PCI layout in it) moves.
 *
 * A cannot be reached: B starts the guest from the configuration
 * (InstanceStart), where device slots may differ, and the primary becomes B.
 */
import { setCursor } from '../config/oplog-cursors';
import { settleRemovalsAbsentFrom } from './operations';
import type { InstanceConfig, NodeRow } from '../config/config-store';
import type { InstanceExportReply__Output } from '../../generated/gnt/node/v1/InstanceExportReply';
import { NodeRpcError } from '../node-rpc';
import { JobError, type JobContext } from './queue';
import type { MigrateOp } from './ops';
import { instanceSpec } from './spec';
import {
  checkFreeMemory, checkNoCopyOnTarget, cleanupHint, currentMemoryMib, errCode, errText, nodeOf, resolveTarget, statusOrAbsent,
  unreachable, type MigrateDeps,
} from './migrate-common';

/** What the source node said. */
type SourceView =
  | { kind: 'answers'; exported: InstanceExportReply__Output; memoryMib: number }
  | { kind: 'gone'; why: string };

export async function failover(deps: MigrateDeps, op: MigrateOp, ctx: JobContext): Promise<void> {
  const inst = deps.config.getInstance(op.name);
  const target = resolveTarget(deps.config, inst, op.target);
  ctx.log(`failover of ${inst.name} from node ${inst.node.name} to node ${target.name}: the guest stops on ${inst.node.name} and boots on ${target.name}`);
  const view = await askSource(deps, inst);
  if (view.kind === 'gone') return startFromConfig(deps, inst, target, view.why, ctx);
  await checkTarget(deps, inst, target, view.memoryMib, ctx);
  const wasRunning = view.exported.running;
  if (wasRunning) await stopOnSource(deps, inst, ctx);
  else ctx.log(`${inst.name} is not running on ${inst.node.name}: only its runtime file moves to ${target.name}`);
  await receiveOnTarget(deps, inst, target, view.exported.runtimeJson, wasRunning, ctx);
  if (!wasRunning) await stopAgainOnTarget(deps, inst, target, ctx);
  commitPrimary(deps, inst, target, ctx);
  await releaseSource(deps, inst, target, ctx);
}

/** InstanceExport (and the current memory) from the source; "gone" when the node cannot be reached or has no copy. */
async function askSource(deps: MigrateDeps, inst: InstanceConfig): Promise<SourceView> {
  const source = nodeOf(inst.node);
  const [exported, status, runtime] = await Promise.allSettled([
    deps.rpc.instanceExport(source, inst.name), statusOrAbsent(deps.rpc, source, inst.name), deps.rpc.instanceInfo(source, inst.name),
  ]);
  if (exported.status === 'rejected') {
    const err = exported.reason;
    if (unreachable(err)) return { kind: 'gone', why: errText(err) };
    if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return { kind: 'gone', why: `node ${source.name} has no runtime file for ${inst.name}` };
    throw new JobError(`failover of ${inst.name} refused, nothing was changed: ${errText(err)}`, errCode(err));
  }
  if (status.status === 'fulfilled' && status.value.role)
    throw new JobError(`node ${source.name} has a migration of ${inst.name} recorded (role ${status.value.role}): ${cleanupHint(inst.name)} first`, 'FAILED_PRECONDITION');
  return { kind: 'answers', exported: exported.value, memoryMib: currentMemoryMib(inst, runtime.status === 'fulfilled' ? runtime.value : undefined) };
}

/** B must have no copy and enough free memory. */
async function checkTarget(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, memoryMib: number, ctx: JobContext): Promise<void> {
  let answers;
  try {
    answers = await Promise.all([statusOrAbsent(deps.rpc, nodeOf(target), inst.name), deps.rpc.nodeInfo(nodeOf(target))]);
  } catch (err) {
    throw new JobError(`failover of ${inst.name} refused, nothing was changed: ${errText(err)}`, errCode(err));
  }
  const [status, info] = answers;
  checkNoCopyOnTarget(inst.name, target.name, status);
  checkFreeMemory(inst.name, memoryMib, target.name, Number(info.memoryFreeMib));
  ctx.log(`checks passed: ${memoryMib} MiB needed, ${info.memoryFreeMib} MiB free on ${target.name}`);
}

async function stopOnSource(deps: MigrateDeps, inst: InstanceConfig, ctx: JobContext): Promise<void> {
  ctx.log(`stopping ${inst.name} on ${inst.node.name} (InstanceStop)`);
  try {
    await deps.rpc.instanceStop(nodeOf(inst.node), inst.name);
  } catch (err) {
    throw new JobError(`failover of ${inst.name} failed: stopping it on ${inst.node.name} failed: ${errText(err)}; the configuration is unchanged`, errCode(err));
  }
}

/** InstanceReceive(incoming=false) on B; on failure the guest is started again on A if it ran there. */
async function receiveOnTarget(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, runtimeJson: string, wasRunning: boolean, ctx: JobContext): Promise<void> {
  ctx.log(`booting ${inst.name} on ${target.name} from the runtime file of ${inst.node.name}, same PCI layout (InstanceReceive)`);
  try {
    await deps.rpc.instanceReceive(nodeOf(target), { runtimeJson, sourceNode: inst.node.name, incoming: false });
  } catch (err) {
    const back = wasRunning ? await restartOnSource(deps, inst, ctx) : `${inst.name} stays stopped on ${inst.node.name}`;
    throw new JobError(`failover of ${inst.name} to ${target.name} failed at InstanceReceive on ${target.name}: ${errText(err)}; ${back}; the configuration is unchanged`, errCode(err));
  }
}

async function restartOnSource(deps: MigrateDeps, inst: InstanceConfig, ctx: JobContext): Promise<string> {
  ctx.log(`starting ${inst.name} again on ${inst.node.name} (InstanceStart)`);
  try {
    await deps.rpc.instanceStart(nodeOf(inst.node), instanceSpec(inst));
    ctx.log(`${inst.name} runs on ${inst.node.name} again`);
    return `${inst.name} was started again on ${inst.node.name}`;
  } catch (err) {
    ctx.log(`starting ${inst.name} again on ${inst.node.name} failed: ${errText(err)}`);
    return `starting it again on ${inst.node.name} failed too (${errText(err)}): ${inst.name} runs nowhere now; start it with gnt-instance start ${inst.name}`;
  }
}

async function stopAgainOnTarget(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, ctx: JobContext): Promise<void> {
  ctx.log(`${inst.name} was not running: stopping it on ${target.name} again (its runtime file stays there for the next start)`);
  try {
    await deps.rpc.instanceStop(nodeOf(target), inst.name);
  } catch (err) {
    ctx.log(`stopping ${inst.name} on ${target.name} failed (it keeps running there): ${errText(err)}`);
  }
}

function commitPrimary(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, ctx: JobContext): void {
  try {
    deps.config.setPrimaryNode(inst.name, target.name);
  } catch (err) {
    throw new JobError(`${inst.name} is on ${target.name} now, but the configuration could not be updated: ${errText(err)}; ${cleanupHint(inst.name)}`, errCode(err));
  }
  ctx.log(`instance ${inst.name} now runs on node ${target.name} (configuration updated)`);
}

async function releaseSource(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, ctx: JobContext): Promise<void> {
  ctx.log(`releasing the stopped copy on ${inst.node.name} (InstanceRelease)`);
  try {
    await deps.rpc.instanceRelease(nodeOf(inst.node), inst.name);
  } catch (err) {
    throw new JobError(
      `${inst.name} is on ${target.name} and the configuration says so, but releasing the copy on ${inst.node.name} failed: ${errText(err)}; ` +
        `its runtime file is left on ${inst.node.name}: ${cleanupHint(inst.name)}`,
      errCode(err),
    );
  }
  ctx.log(`released ${inst.name} on ${inst.node.name}`);
}

/** The source cannot be asked: boot from the configuration on B. */
async function startFromConfig(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, why: string, ctx: JobContext): Promise<void> {
  ctx.log(`${why}: starting ${inst.name} on ${target.name} from the configuration (InstanceStart); PCI slots may differ from the ones it had on ${inst.node.name}`);
  ctx.log(`warning: make sure ${inst.name} really is down on ${inst.node.name}: a node that only lost its daemon or network may still run it; ` +
    `when ${inst.node.name} is back, ${cleanupHint(inst.name)} to release its copy`);
  let free: number;
  try {
    free = Number((await deps.rpc.nodeInfo(nodeOf(target))).memoryFreeMib);
  } catch (err) {
    throw new JobError(`failover of ${inst.name} refused, nothing was changed: ${errText(err)}`, errCode(err));
  }
  checkFreeMemory(inst.name, inst.memory_mib, target.name, free);
  let rt;
  try {
    rt = await deps.rpc.instanceStart(nodeOf(target), instanceSpec(inst));
  } catch (err) {
    throw new JobError(`failover of ${inst.name} failed: starting it on ${target.name} failed: ${errText(err)}; the configuration is unchanged`, errCode(err));
  }
  commitPrimary(deps, inst, target, ctx);
  deps.config.setAdminState(inst.name, 'up');
  // A runtime file made from the configuration starts a new operation journal on the target.
  setCursor(deps.config.db, inst.uuid, target.uuid, 0);
  settleRemovalsAbsentFrom(deps.config, inst.uuid, new Set([...rt.nics.map((n) => n.uuid), ...rt.disks.map((d) => d.uuid)])).forEach((l) => ctx.log(l));
}
