/**
 * The disk copy of a live migration between nodes that do not share storage
 * (jobs/migrate.ts; docs/migration.md), and the cluster's migration TLS
 * setting. Whether two nodes share storage is decided by their storage ids
 * (NodeInfo.storage_id): the same id is the same directory.
 *
 *   1. MigrationStart(disk_copy, disks_only) on the source: one mirror job
 *      per file disk into the target's NBD export;
 *   2. MigrationStatus until every job is READY, logging bytes copied per disk;
 *   3. MigrationStart(disk_copy) again: the RAM stream starts (migrate.ts polls it);
 *   4. after the stream completed: MigrationDiskCopyEnd on the source.
 */
import type { ConfigStore, InstanceConfig, NodeRow } from '../config/config-store';
import type { MigrationStartRequest } from '../../generated/gnt/node/v1/MigrationStartRequest';
import type { MigrationStatus__Output } from '../../generated/gnt/node/v1/MigrationStatus';
import type { NodeInfoReply__Output } from '../../generated/gnt/node/v1/NodeInfoReply';
import { JobError, type JobContext } from './queue';
import { nodeOf, type MigrateDeps } from './migrate-common';

/** The cluster setting (gnt-cluster modify --migration-tls=on|off); absent: on. */
export const MIGRATION_TLS_KEY = 'migration_tls';

export function migrationTlsEnabled(config: ConfigStore): boolean {
  return config.getClusterValue(MIGRATION_TLS_KEY) !== 'off';
}

/** gnt-cluster modify --migration-tls=on|off: a cluster setting, read by every later migration. */
export function clusterModify(config: ConfigStore, migrationTls: '' | 'on' | 'off', ctx: JobContext): void {
  if (!migrationTls) return;
  const before = migrationTlsEnabled(config) ? 'on' : 'off';
  config.setClusterValue(MIGRATION_TLS_KEY, migrationTls);
  ctx.log(`migration TLS: ${before} -> ${migrationTls}${migrationTls === 'off' ? ' (live migrations send the stream and the disk copy as plain TCP from now on)' : ''}`);
}

/** How long a disk copy may make no progress before the job gives up (and aborts). */
const COPY_STALL_MS = 60_000;
const MiB = 1024 * 1024;

/**
 * Whether the migration copies disks: the nodes report different storage
 * ids. A node that reports none (an older daemon) is taken to share storage,
 * as before storage ids existed.
 */
export function needsDiskCopy(src: NodeInfoReply__Output, dst: NodeInfoReply__Output): boolean {
  return !!src.storageId && !!dst.storageId && src.storageId !== dst.storageId;
}

/** The size of every file disk (the ones copied; blockdev and rbd are shared) to create on the target, from the configuration. */
export function diskSizes(inst: InstanceConfig): Array<{ uuid: string; sizeBytes: number }> {
  return inst.disks.filter((d) => !d.template && d.size_bytes > 0).map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes }));
}

const mib = (bytes: string | number): string => (Number(bytes) / MiB).toFixed(1);

/** One line of disk copy progress, e.g. "disk copy: 1a2b3c4d running 12.0/16.0 MiB, 5e6f... ready 24.0/24.0 MiB". */
export function formatDiskCopy(st: MigrationStatus__Output): string {
  const parts = st.diskCopies.map((d) => `${d.uuid.slice(0, 8)} ${d.status} ${mib(d.copiedBytes)}/${mib(d.totalBytes)} MiB${d.error ? ` (${d.error})` : ''}`);
  return `disk copy: ${parts.join(', ') || 'starting'}`;
}

/** The first failed disk copy, in words; undefined while all are fine. */
export function diskCopyProblem(st: MigrationStatus__Output): string | undefined {
  const bad = st.diskCopies.find((d) => d.error || d.status === 'concluded' || d.status === 'aborting' || d.status === 'gone');
  return bad ? `the copy of disk ${bad.uuid} stopped (${bad.status}${bad.error ? `: ${bad.error}` : ''})` : undefined;
}

/** Steps 1 and 2: starts the mirrors and waits until every one is READY. */
export async function copyDisks(deps: MigrateDeps, inst: InstanceConfig, start: MigrationStartRequest, nbd: string, ctx: JobContext): Promise<void> {
  const source = nodeOf(inst.node);
  const pollMs = deps.pollMs ?? 200;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = deps.now ?? Date.now;
  ctx.log(`copying the disks of ${inst.name} from ${source.name} to the NBD export at ${nbd} (MigrationStart, disk copy)`);
  await deps.rpc.migrationStart(source, { ...start, diskCopy: { nbdAddress: nbd, disksOnly: true } });
  let lastLog = -Infinity;
  let moved = { bytes: -1, at: now() };
  for (;;) {
    if (ctx.signal.aborted) throw new JobError('canceled by request (gnt-job cancel)', 'CANCELLED');
    const st = await deps.rpc.migrationStatus(source, inst.name);
    if (!st.qemuAlive) throw new JobError(`the QEMU of ${inst.name} on ${source.name} is gone`, 'UNAVAILABLE');
    const problem = diskCopyProblem(st);
    if (problem) throw new JobError(problem, 'ABORTED');
    if (st.diskCopyReady) {
      ctx.log(formatDiskCopy(st));
      ctx.log(`every disk of ${inst.name} is copied and mirrored: starting the migration stream`);
      return;
    }
    if (now() - lastLog >= 1000) {
      ctx.log(formatDiskCopy(st));
      lastLog = now();
    }
    const bytes = st.diskCopies.reduce((n, d) => n + Number(d.copiedBytes), 0);
    if (bytes !== moved.bytes) moved = { bytes, at: now() };
    else if (now() - moved.at >= COPY_STALL_MS) throw new JobError(`the disk copy has made no progress for ${COPY_STALL_MS / 1000} s`, 'DEADLINE_EXCEEDED');
    await sleep(pollMs);
  }
}

/** Step 4: the stream completed; the target's disks are made consistent. */
export async function endDiskCopy(deps: MigrateDeps, name: string, source: NodeRow, ctx: JobContext): Promise<void> {
  const st = await deps.rpc.migrationDiskCopyEnd(nodeOf(source), name);
  ctx.log(`disk copy ended on ${source.name}: the disks on the target are consistent${st.diskCopyEnded ? '' : ' (not confirmed)'}`);
}
