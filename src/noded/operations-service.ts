/**
 * OperationStatus and OperationLog (proto/node.proto): the node's side of
 * operation ids. The records live in each instance's runtime file
 * (src/hypervisor/operations.ts); here they become proto messages.
 */
import type { NicRecord } from '../hypervisor/runtime-file';
import { assertOperationId, changedSince, reachesBack, type OperationRecord } from '../hypervisor/operations';
import type { HotplugDeviceReply } from '../generated/gnt/node/v1/HotplugDeviceReply';
import type { OperationLogReply } from '../generated/gnt/node/v1/OperationLogReply';
import type { OperationLogRequest__Output } from '../generated/gnt/node/v1/OperationLogRequest';
import type { OperationRecord as OperationRecordProto } from '../generated/gnt/node/v1/OperationRecord';
import type { OperationRef__Output } from '../generated/gnt/node/v1/OperationRef';
import type { InstanceResizeReply } from '../generated/gnt/node/v1/InstanceResizeReply';
import type { InstanceRegistry } from './instance-registry';
import { anyDiskToProto, type AnyDiskRecord } from './disk-kinds';
import { diskToProto, int64, nicToProto } from './spec';
import { invalidArgument } from './status';

export function nicReply(rec: NicRecord): HotplugDeviceReply {
  const out = nicToProto(rec);
  return { pci: out.pci, deviceId: out.deviceId, nic: out };
}

export function diskReply(rec: AnyDiskRecord): HotplugDeviceReply {
  const out = anyDiskToProto(rec, diskToProto);
  return { pci: out.pci, deviceId: out.deviceId, disk: out };
}

const STATES = {
  running: 'OPERATION_RUNNING',
  removal_pending: 'OPERATION_REMOVAL_PENDING',
  succeeded: 'OPERATION_SUCCEEDED',
  failed: 'OPERATION_FAILED',
} as const;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The hotplug reply a record holds: a device record, or a removal's {record, pending}. */
function hotplugOf(rec: OperationRecord): HotplugDeviceReply | undefined {
  if (rec.kind !== 'nic' && rec.kind !== 'disk') return undefined;
  const r = rec.result;
  if (!isObject(r)) return undefined;
  const removal = isObject(r.record) ? r : undefined;
  const device = (removal ? removal.record : r) as Record<string, unknown>;
  if (typeof device.uuid !== 'string') return undefined;
  const base =
    rec.kind === 'nic'
      ? typeof device.mac === 'string' ? nicReply(device as unknown as NicRecord) : { nic: { uuid: device.uuid } }
      : typeof device.path === 'string' ? diskReply(device as unknown as AnyDiskRecord) : { disk: { uuid: device.uuid } };
  const applied = Array.isArray(r.applied) ? r.applied.filter((a): a is string => typeof a === 'string') : [];
  return { ...base, removalPending: removal?.pending === true, applied };
}

function resizeOf(rec: OperationRecord): InstanceResizeReply | undefined {
  const r = rec.result;
  if (rec.kind !== 'resources' || !isObject(r)) return undefined;
  const notes = Array.isArray(r.notes) ? r.notes.filter((n): n is string => typeof n === 'string') : [];
  return {
    vcpus: typeof r.vcpus === 'number' ? r.vcpus : 0,
    memoryMib: String(typeof r.memoryMiB === 'number' ? r.memoryMiB : 0),
    pluggedMib: String(typeof r.pluggedMiB === 'number' ? r.pluggedMiB : -1),
    notes,
  };
}

export function recordToProto(instance: string, rec: OperationRecord): OperationRecordProto {
  const hotplug = hotplugOf(rec);
  const resize = resizeOf(rec);
  return {
    instance,
    operationId: rec.id,
    state: STATES[rec.state],
    revision: String(rec.revision),
    kind: rec.kind,
    action: rec.action,
    deviceUuid: rec.uuid,
    settledBy: rec.settledBy ?? '',
    errorCode: rec.error?.code ?? '',
    errorMessage: rec.error?.message ?? '',
    ...(hotplug ? { hotplug } : {}),
    ...(resize ? { resize } : {}),
    startedAt: rec.startedAt,
    finishedAt: rec.finishedAt ?? '',
  };
}

/**
 * One operation's outcome. An id the instance never recorded: UNKNOWN, or
 * with fence, recorded as failed so that a late copy is refused. An
 * instance this node does not know: UNKNOWN (it may have been removed, or
 * never created here).
 */
export async function operationStatus(registry: InstanceRegistry, ref: OperationRef__Output): Promise<OperationRecordProto> {
  const id = assertOperationId(ref.operationId);
  if (!id) throw invalidArgument('OperationStatus needs an operation_id');
  const inst = registry.find(ref.instance);
  const unknown: OperationRecordProto = { instance: ref.instance, operationId: id, state: 'OPERATION_UNKNOWN' };
  if (!inst) return unknown;
  if (inst.operationInFlight(id)) return { ...unknown, state: 'OPERATION_RUNNING' };
  const rec = inst.operationRecord(id) ?? (ref.fence ? await inst.fenceOperation(id) : undefined);
  return rec ? recordToProto(inst.name, rec) : unknown;
}

/** The records changed after each cursor (and, with all_instances, of every other instance from 0). */
export function operationLog(registry: InstanceRegistry, req: OperationLogRequest__Output): OperationLogReply {
  const cursors = new Map<string, number>();
  for (const c of req.cursors) {
    const after = int64(c.afterRevision, `after_revision of ${c.instance}`);
    cursors.set(c.instance, after);
  }
  const reply: OperationLogReply = { records: [], truncated: [], heads: [] };
  for (const inst of registry.all()) {
    const after = cursors.get(inst.name) ?? (req.allInstances ? 0 : undefined);
    if (after === undefined) continue;
    const journal = inst.operations;
    reply.heads!.push({ instance: inst.name, epoch: journal.epoch ?? '', revision: String(journal.revision) });
    if (!reachesBack(journal, after)) reply.truncated!.push(inst.name);
    for (const rec of changedSince(journal, after)) reply.records!.push(recordToProto(inst.name, rec));
  }
  return reply;
}
