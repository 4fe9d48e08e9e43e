/**
 * The instance-migrate job: live migration (here), failover (failover.ts)
 * and --cleanup (migrate-cleanup.ts). See docs/migration.md.
 *
 * Live migration, with the source node A and the target node B:
 *   1. checks, before anything is touched: the guest runs on A with no
 *      migration recorded, B has no copy, the same QEMU major.minor on both,
 *      enough free memory on B; whether A and B share storage (storage ids)
 *      and whether the stream uses TLS (cluster setting migration_tls);
 *   2. A.InstanceExport, B.InstanceReceive(incoming) -> the migration URI,
 *      A.MigrationStart (bandwidth/downtime from hvparams), then
 *      A.MigrationStatus every 200 ms until completed, failed or cancelled;
 *      without shared storage the disks are copied first and the copy is
 *      ended after the stream (migrate-disk-copy.ts);
 *   3. completed: B.MigrationFinish, the configuration's primary -> B,
 *      A.InstanceRelease.
 * A failure in step 2 aborts on both nodes (best effort) and leaves the
 * configuration unchanged: the guest keeps running on A. A failure in step 3
 * is not undone (the guest may run on B already): the job says to run
 * `gnt-instance migrate --cleanup`.
 */
import type { InstanceConfig, NodeRow } from '../config/config-store';
import type { MigrationStatus__Output } from '../../generated/gnt/node/v1/MigrationStatus';
import { JobError, type JobContext } from './queue';
import type { MigrateOp } from './ops';
import { failover } from './failover';
import { cleanupMigration } from './migrate-cleanup';
import {
  checkFreeMemory, checkNoCopyOnTarget, checkRunsOnSource, checkSameQemu, cleanupHint, currentMemoryMib, errCode, errText,
  hvparamInt, nodeOf, resolveTarget, statusOrAbsent, type MigrateDeps,
} from './migrate-common';

import { copyDisks, diskCopyProblem, diskSizes, endDiskCopy, migrationTlsEnabled, needsDiskCopy } from './migrate-disk-copy';

export type { MigrateDeps } from './migrate-common';

/** Runs one instance-migrate job. */
export function runMigrate(deps: MigrateDeps, op: MigrateOp, ctx: JobContext): Promise<void> {
  if (op.cleanup) return cleanupMigration(deps, op.name, ctx);
  if (op.failover) return failover(deps, op, ctx);
  return liveMigrate(deps, op, ctx);
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
/** How long QEMU may report no migration at all after MigrationStart before the job gives up. */
const NO_MIGRATION_MS = 5000;
/** How long an active migration may transfer nothing before the job gives up (and aborts). */
const STALL_MS = 60_000;
const MiB = 1024 * 1024;

/** A failed step of the transfer, named for the job's error. */
class StepError extends Error {
  constructor(readonly step: string, readonly reason: unknown) {
    super(`${step}: ${errText(reason)}`);
    this.name = 'StepError';
  }
  get code(): string {
    return errCode(this.reason);
  }
}

async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StepError(name, err);
  }
}

/** What the transfer has set up so far, i.e. what an abort has to undo. */
interface Touched {
  target: boolean;
  source: boolean;
}

async function liveMigrate(deps: MigrateDeps, op: MigrateOp, ctx: JobContext): Promise<void> {
  const inst = deps.config.getInstance(op.name);
  const source = inst.node;
  const target = resolveTarget(deps.config, inst, op.target);
  ctx.log(`live migration of ${inst.name} from node ${source.name} to node ${target.name}`);
  const how = await checkLiveRequirements(deps, inst, target, ctx);
  const touched: Touched = { target: false, source: false };
  // gnt-job cancel is honoured until the switch-over: everything before it can be undone.
  ctx.allowCancel(true);
  try {
    await transfer(deps, inst, target, how, touched, ctx);
    ctx.allowCancel(false);
    throwIfCanceled(ctx);
  } catch (err) {
    ctx.allowCancel(false);
    const undo = await undoTransfer(deps, inst.name, source, target, touched, ctx);
    const e = err instanceof StepError ? err : new StepError('migration', err);
    throw new JobError(`live migration of ${inst.name} to ${target.name} failed at ${e.message}; ${undo}`, e.code);
  }
  await switchOver(deps, inst, target, ctx);
}

/** Step 1: everything that can refuse the migration, before anything is touched. */
/** How the migration goes: disks copied or shared, stream over TLS or plain. */
interface Transport {
  copy: boolean;
  tls: boolean;
}

async function checkLiveRequirements(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, ctx: JobContext): Promise<Transport> {
  const source = nodeOf(inst.node);
  const dest = nodeOf(target);
  let answers;
  try {
    answers = await Promise.all([
      statusOrAbsent(deps.rpc, source, inst.name),
      // Only for the current memory: without it the configuration's is used.
      deps.rpc.instanceInfo(source, inst.name).catch(() => undefined),
      deps.rpc.nodeInfo(source),
      deps.rpc.nodeInfo(dest), statusOrAbsent(deps.rpc, dest, inst.name),
    ]);
  } catch (err) {
    throw new JobError(`live migration of ${inst.name} refused, nothing was changed: ${errText(err)}`, errCode(err));
  }
  const [srcStatus, srcRuntime, srcInfo, dstInfo, dstStatus] = answers;
  checkRunsOnSource(inst.name, source.name, srcStatus);
  checkNoCopyOnTarget(inst.name, dest.name, dstStatus);
  const version = checkSameQemu(source.name, srcInfo.qemuVersion, dest.name, dstInfo.qemuVersion);
  const memory = currentMemoryMib(inst, srcRuntime);
  const free = Number(dstInfo.memoryFreeMib);
  checkFreeMemory(inst.name, memory, dest.name, free);
  hvparamInt(inst, 'migration_bandwidth', 'MiB/s');
  hvparamInt(inst, 'migration_downtime', 'ms');
  ctx.log(`checks passed: ${inst.name} runs on ${source.name}; QEMU ${version} on both nodes; ${memory} MiB needed, ${free} MiB free on ${dest.name}`);
  const how = { copy: needsDiskCopy(srcInfo, dstInfo), tls: migrationTlsEnabled(deps.config) };
  if (how.copy) {
    const total = diskSizes(inst).reduce((n, d) => n + d.sizeBytes, 0);
    ctx.log(`storage: ${source.name} and ${dest.name} do not share storage (different storage ids): the file disks (${(total / MiB).toFixed(0)} MiB in all) are copied over NBD while the guest runs`);
  } else ctx.log(`storage: ${source.name} and ${dest.name} share storage (the same storage id): no disk is copied`);
  ctx.log(how.tls
    ? 'TLS: on (the stream and any disk copy use the node certificates of the cluster CA)'
    : 'TLS: off (cluster setting migration_tls=off): the stream and any disk copy are plain TCP');
  return how;
}

/** Step 2: carry the runtime file, start the target paused, stream the state, wait for the end. */
async function transfer(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, how: Transport, touched: Touched, ctx: JobContext): Promise<void> {
  const source = nodeOf(inst.node);
  const dest = nodeOf(target);
  ctx.log(`exporting the runtime file of ${inst.name} from ${source.name} (InstanceExport)`);
  const exported = await step(`InstanceExport on ${source.name}`, () => deps.rpc.instanceExport(source, inst.name));
  ctx.log(`starting a paused QEMU for ${inst.name} on ${dest.name}, waiting for the stream (InstanceReceive)`);
  touched.target = true;
  const received = await step(`InstanceReceive on ${dest.name}`, () =>
    deps.rpc.instanceReceive(dest, {
      runtimeJson: exported.runtimeJson, sourceNode: source.name, incoming: true, migrationTls: how.tls,
      ...(how.copy ? { copyDisks: true, diskSizes: diskSizes(inst) } : {}),
    }),
  );
  ctx.log(`${dest.name} waits for the migration stream at ${received.migrationUri}${how.tls ? ` (TLS, certificate checked for ${received.tlsHostname})` : ''}` +
    `${how.copy ? `; its disk copies are exported at ${received.nbdAddress}` : ''}`);
  throwIfCanceled(ctx);
  const bandwidth = hvparamInt(inst, 'migration_bandwidth', 'MiB/s');
  const downtime = hvparamInt(inst, 'migration_downtime', 'ms');
  ctx.log(`starting the migration on ${source.name} (MigrationStart; bandwidth ${bandwidth ? `${bandwidth} MiB/s` : "QEMU's default"}, ` +
    `downtime limit ${downtime ? `${downtime} ms` : "QEMU's default"})`);
  touched.source = true;
  const start = {
    instance: inst.name, targetUri: received.migrationUri, targetNode: dest.name, maxBandwidthMib: bandwidth, downtimeLimitMs: downtime,
    migrationTls: how.tls, tlsHostname: received.tlsHostname,
  };
  if (how.copy) await step(`the disk copy to ${dest.name}`, () => copyDisks(deps, inst, start, received.nbdAddress, ctx));
  const copy = how.copy ? { diskCopy: { nbdAddress: received.nbdAddress, disksOnly: false } } : {};
  await step(`MigrationStart on ${source.name}`, () => deps.rpc.migrationStart(source, { ...start, ...copy }));
  crashPointAfterMigrationStart(ctx);
  const final = await step(`MigrationStatus on ${source.name}`, () => pollMigration(deps, inst.name, inst.node, ctx));
  if (final.state !== 'completed') throw new StepError('the migration', new JobError(`QEMU reports "${final.state}": ${final.error || 'no reason given'}`));
  if (how.copy) await step(`MigrationDiskCopyEnd on ${source.name}`, () => endDiskCopy(deps, inst.name, inst.node, ctx));
}

/** A `gnt-job cancel` of the running job: stop here, the caller undoes what was done. */
function throwIfCanceled(ctx: JobContext): void {
  if (ctx.signal.aborted) throw new JobError('canceled by request (gnt-job cancel)', 'CANCELLED');
}

/**
 * Fault-injection point for tests: with GNT_MASTERD_CRASH_POINT=after-migration-start
 * the master kills itself right after MigrationStart returned, leaving a
 * migration no master watches (repaired by `gnt-instance migrate --cleanup`).
 */
function crashPointAfterMigrationStart(ctx: JobContext): void {
  if (process.env.GNT_MASTERD_CRASH_POINT !== 'after-migration-start') return;
  ctx.log('fault injection: GNT_MASTERD_CRASH_POINT=after-migration-start, killing the master while the migration runs');
  ctx.commit(() => undefined); // the job's lines so far are committed before the kill
  process.kill(process.pid, 'SIGKILL');
}

/** Polls the source until QEMU's migration ends; returns its last status. */
export async function pollMigration(deps: MigrateDeps, name: string, source: NodeRow, ctx: JobContext): Promise<MigrationStatus__Output> {
  const pollMs = deps.pollMs ?? 200;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = deps.now ?? Date.now;
  const progress = new ProgressLog((m) => ctx.log(m), now);
  let idleMs = 0;
  let moved = { bytes: -1, at: now() };
  for (;;) {
    throwIfCanceled(ctx);
    const st = await deps.rpc.migrationStatus(nodeOf(source), name);
    progress.update(st);
    if (TERMINAL.has(st.state)) return st;
    const copyProblem = diskCopyProblem(st);
    if (copyProblem) throw new JobError(copyProblem, 'ABORTED');
    if (!st.qemuAlive) throw new JobError(`the QEMU of ${name} on ${source.name} is gone`, 'UNAVAILABLE');
    idleMs = st.state === '' || st.state === 'none' ? idleMs + pollMs : 0;
    if (idleMs >= NO_MIGRATION_MS) throw new JobError(`QEMU on ${source.name} has reported no migration for ${NO_MIGRATION_MS / 1000} s`, 'INTERNAL');
    if (Number(st.transferredBytes) !== moved.bytes) moved = { bytes: Number(st.transferredBytes), at: now() };
    else if (now() - moved.at >= STALL_MS)
      throw new JobError(`the migration has transferred nothing for ${STALL_MS / 1000} s (QEMU state ${st.state})`, 'DEADLINE_EXCEEDED');
    await sleep(pollMs);
  }
}

/** Logs migration progress at most once a second, and on every state change. */
export class ProgressLog {
  private lastAt = -Infinity;
  private lastState: string | undefined;

  constructor(private readonly log: (message: string) => void, private readonly now: () => number = Date.now) {}

  update(st: MigrationStatus__Output): void {
    const t = this.now();
    if (st.state === this.lastState && t - this.lastAt < 1000) return;
    this.lastState = st.state;
    this.lastAt = t;
    this.log(formatProgress(st));
  }
}

const mib = (bytes: string): string => (Number(bytes) / MiB).toFixed(1);

/** One progress line, e.g. "migration active: 42% transferred (96.0 MiB, 130.5 MiB remaining), 31.5 MiB/s". */
export function formatProgress(st: MigrationStatus__Output): string {
  if (st.state === 'completed') {
    const downtime = Number(st.downtimeMs) >= 0 ? `${st.downtimeMs} ms` : 'unknown';
    return `migration completed in ${(Number(st.totalTimeMs) / 1000).toFixed(1)} s, downtime ${downtime}, ${mib(st.transferredBytes)} MiB transferred`;
  }
  if (st.state === 'failed' || st.state === 'cancelled') return `migration ${st.state}${st.error ? `: ${st.error}` : ''}`;
  const done = Number(st.transferredBytes);
  const left = Number(st.remainingBytes);
  const pct = done + left > 0 ? Math.floor((100 * done) / (done + left)) : 0;
  return `migration ${st.state || 'starting'}: ${pct}% transferred (${mib(st.transferredBytes)} MiB, ${mib(st.remainingBytes)} MiB remaining), ` +
    `${mib(st.throughputBps)} MiB/s`;
}

/** Best-effort abort on both nodes after a failed transfer; returns what to tell the operator. */
async function undoTransfer(deps: MigrateDeps, name: string, source: NodeRow, target: NodeRow, touched: Touched, ctx: JobContext): Promise<string> {
  const abort = async (node: NodeRow, did: boolean, role: string): Promise<boolean> => {
    if (!did) {
      ctx.log(`undo: nothing was set up on ${role} ${node.name}; no abort needed`);
      return true;
    }
    try {
      const st = await deps.rpc.migrationAbort(nodeOf(node), name);
      ctx.log(`undo: MigrationAbort on ${role} ${node.name} done (${st.qemuAlive ? `QEMU ${st.runState}` : 'no QEMU left'})`);
      return true;
    } catch (err) {
      ctx.log(`undo: MigrationAbort on ${role} ${node.name} failed (ignored): ${errText(err)}`);
      return false;
    }
  };
  const targetOk = await abort(target, touched.target, 'target');
  const sourceOk = await abort(source, touched.source, 'source');
  const left = targetOk ? '' : ` (the abort on ${target.name} failed: a paused copy may be left there; ${cleanupHint(name)})`;
  return sourceOk
    ? `the migration was aborted; ${name} keeps running on ${source.name} and the configuration is unchanged${left}`
    : `the abort on ${source.name} failed too; the configuration is unchanged (primary ${source.name}), but the guest may be paused: ${cleanupHint(name)}`;
}

/** Step 3: resume on the target, point the configuration at it, release the source. */
async function switchOver(deps: MigrateDeps, inst: InstanceConfig, target: NodeRow, ctx: JobContext): Promise<void> {
  const source = inst.node;
  const name = inst.name;
  ctx.log(`resuming ${name} on ${target.name} (MigrationFinish)`);
  try {
    await deps.rpc.migrationFinish(nodeOf(target), name);
  } catch (err) {
    throw new JobError(
      `the migration of ${name} to ${target.name} completed, but resuming it there failed: ${errText(err)}; nothing was undone, ` +
        `since the guest may already run on ${target.name}; the configuration still names ${source.name}: ${cleanupHint(name)}`,
      errCode(err),
    );
  }
  try {
    deps.config.setPrimaryNode(name, target.name);
  } catch (err) {
    throw new JobError(`${name} runs on ${target.name} now, but the configuration could not be updated: ${errText(err)}; ${cleanupHint(name)}`, errCode(err));
  }
  ctx.log(`instance ${name} now runs on node ${target.name} (configuration updated)`);
  ctx.log(`releasing the paused copy on ${source.name} (InstanceRelease)`);
  try {
    await deps.rpc.instanceRelease(nodeOf(source), name);
  } catch (err) {
    throw new JobError(
      `${name} runs on ${target.name} and the configuration says so, but releasing the copy on ${source.name} failed: ${errText(err)}; ` +
        `its paused QEMU and runtime file are left on ${source.name}: ${cleanupHint(name)}`,
      errCode(err),
    );
  }
  ctx.log(`released ${name} on ${source.name}`);
}
