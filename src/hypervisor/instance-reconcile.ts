/**
 * Reconciliation of one instance: every intent left open (by a crash of the
 * node daemon, a command that timed out, a guest that did not answer) is
 * settled against QEMU's own lists, and every operation still running is
 * given its outcome in the journal. The rules per device are in
 * device-operations.ts (settleDevice) and resource-intents.ts; here they are
 * run in order: devices with a record of their own, then vCPUs and DIMMs,
 * then resize operations, then operations whose intent is gone.
 */
import { allDevices, idOf, isPlaced } from './device-kinds';
import type { DeviceOperations } from './device-operations';
import type { OperationRunner } from './operation-runner';
import type { OperationJournal } from './operations';
import type { Monitor } from './qmp-client';
import { currentMemoryMiB, currentVcpus, type ResizeRequest, type ResourceState } from './resize';
import { hasResourceIntents, settleResourceIntents } from './resource-intents';
import type { RuntimeData } from './runtime-file';

export interface ReconcileReport {
  completed: string[];
  rolledBack: string[];
  /** Removals the guest has still not acknowledged. */
  pending: string[];
}

export interface ReconcileHost {
  readonly deviceOps: DeviceOperations;
  readonly runner: OperationRunner;
  data(): RuntimeData;
  journal(): OperationJournal;
  save(): void;
  monitor(): Promise<Monitor>;
  cpuUnplugTimeoutMs(): number;
}


/** Runs inside the instance's queue, with QEMU running. */
export async function reconcileInstance(host: ReconcileHost): Promise<ReconcileReport> {
  const report: ReconcileReport = { completed: [], rolledBack: [], pending: [] };
  for (const [kind, rec] of allDevices(host.data()).filter(([k, r]) => r.state && isPlaced(k, r))) {
    const id = idOf(kind, rec);
    const outcome = await host.deviceOps.settleDevice(kind, rec, 'reconcile');
    (outcome === 'completed' ? report.completed : outcome === 'pending' ? report.pending : report.rolledBack).push(id);
  }
  const r = host.data().resources;
  if (r && hasResourceIntents(r)) {
    const done = await settleResourceIntents(await host.monitor(), r, host.cpuUnplugTimeoutMs());
    report.completed.push(...done.completed);
    report.rolledBack.push(...done.rolledBack);
    report.pending.push(...done.pending);
    host.save();
  }
  if (r && settleResizeOperations(host.journal(), host.runner, r)) host.save();
  await host.deviceOps.settleOrphanOperations((id) => host.runner.inFlightNow(id));
  return report;
}

/**
 * Resize operations still running whose vCPU/DIMM intents are settled:
 * succeeded when the instance has what was asked, failed otherwise; both
 * with the values the instance has now. Returns whether any was settled.
 */
export function settleResizeOperations(journal: OperationJournal, runner: OperationRunner, r: ResourceState): boolean {
  if (hasResourceIntents(r)) return false;
  const now = { vcpus: currentVcpus(r), memoryMiB: currentMemoryMiB(r), notes: ['settled by reconciliation after an interruption'] };
  let settled = false;
  for (const op of journal.records.filter((o) => o.kind === 'resources' && o.state === 'running')) {
    if (runner.inFlightNow(op.id)) continue;
    const asked = (op.request ?? {}) as ResizeRequest;
    const reached = (asked.vcpus === undefined || asked.vcpus === now.vcpus) && (asked.memoryMiB === undefined || asked.memoryMiB === now.memoryMiB);
    if (reached) runner.settle(op, 'succeeded', 'reconcile', { result: now });
    else runner.settle(op, 'failed', 'reconcile', { result: now, error: { code: 'ABORTED', message: `the resize was interrupted; the instance has ${now.vcpus} vCPUs and ${now.memoryMiB} MiB now` } });
    settled = true;
  }
  return settled;
}
