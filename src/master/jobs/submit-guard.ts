/**
 * Submission-time refusals that depend on the other jobs: while a migration
 * of an instance is queued or running, no modify (hotplug) of it and no
 * second migration is accepted. The node refuses hotplug during a migration
 * too; refusing at submission gives the operator the job to wait for.
 */
import { ConfigError } from '../config/config-store';
import type { JobStore } from './job-store';
import type { MigrateOp, Op } from './ops';

export interface ActiveMigration {
  jobId: number;
  status: string;
  op: MigrateOp;
}

/** Queued or running instance-migrate jobs of `instance`, oldest first. */
export function activeMigrations(jobs: JobStore, instance: string): ActiveMigration[] {
  return jobs
    .withStatus('queued', 'running')
    .filter((j) => j.op_type === 'instance-migrate')
    .map((j) => ({ jobId: j.id, status: j.status, op: JSON.parse(j.op_json) as MigrateOp }))
    .filter((m) => m.op.name === instance);
}

/** Throws FAILED_PRECONDITION when `op` may not be submitted now (see the file comment). */
export function checkMigrationConflict(jobs: JobStore, op: Op): void {
  if (op.type !== 'instance-modify' && op.type !== 'instance-migrate' && op.type !== 'instance-grow-disk') return;
  const active = activeMigrations(jobs, op.name);
  if (op.type !== 'instance-migrate') {
    const m = active.find((a) => !a.op.cleanup);
    if (m) throw new ConfigError(`instance ${op.name}: migration in progress (job ${m.jobId}); retry when it has finished`, 'FAILED_PRECONDITION');
    return;
  }
  const m = active[0];
  if (m)
    throw new ConfigError(
      `instance ${op.name}: another migration job is ${m.status} (job ${m.jobId}); wait for it (gnt-job watch ${m.jobId}) and retry`,
      'FAILED_PRECONDITION',
    );
}
