/**
 * Which node RPCs change an instance and are audited (audit-log.ts), what
 * each record says, and the AuditLog RPC that reads them back
 * (docs/audit.md). NodeService's call wrapper calls auditCall once a change
 * has its outcome, before the RPC answers.
 */
import { identityOfFacts } from '../common/cert-identity';
import { peerFacts } from '../common/cert-roles';
import type { AuditLogReply } from '../generated/gnt/node/v1/AuditLogReply';
import type { AuditLogRequest__Output } from '../generated/gnt/node/v1/AuditLogRequest';
import { AuditLog, type AuditOutcome, type AuditRecord } from './audit-log';
import { invalidArgument } from './status';

type Subject = Pick<AuditRecord, 'instance' | 'action' | 'deviceKind' | 'deviceUuid' | 'operationId' | 'requestedBy'>;

interface AnyReq {
  instance?: string;
  name?: string;
  spec?: { name?: string } | null;
  deviceType?: string;
  action?: string;
  nic?: { uuid?: string } | null;
  disk?: { uuid?: string } | null;
  operationId?: string;
  requestedBy?: string;
  runtimeJson?: string;
}

const base = (r: AnyReq, instance: string, action: string): Subject => ({
  instance, action, deviceKind: '', deviceUuid: '', operationId: r.operationId ?? '', requestedBy: r.requestedBy ?? '',
});

function receivedName(r: AnyReq): string {
  try {
    const rt = JSON.parse(r.runtimeJson ?? '') as { name?: unknown };
    return typeof rt.name === 'string' ? rt.name : '';
  } catch {
    return '';
  }
}

/** The audited methods and their subject (instance, action, device). */
const SUBJECTS: Readonly<Record<string, (r: AnyReq) => Subject>> = {
  HotplugDevice: (r) => ({
    ...base(r, r.instance ?? '', `hotplug-${(r.action ?? '').toLowerCase()}`),
    deviceKind: (r.deviceType ?? '').toLowerCase(),
    deviceUuid: r.nic?.uuid ?? r.disk?.uuid ?? '',
  }),
  InstanceResize: (r) => ({ ...base(r, r.instance ?? '', 'resize'), deviceKind: 'resources' }),
  InstanceStart: (r) => base(r, r.spec?.name ?? '', 'start'),
  InstanceStop: (r) => base(r, r.name ?? '', 'stop'),
  InstanceRemove: (r) => base(r, r.name ?? '', 'remove'),
  InstanceReceive: (r) => base(r, receivedName(r), 'migrate-receive'),
  MigrationStart: (r) => base(r, r.instance ?? '', 'migrate-start'),
  MigrationFinish: (r) => base(r, r.name ?? '', 'migrate-finish'),
  MigrationAbort: (r) => base(r, r.name ?? '', 'migrate-abort'),
  InstanceRelease: (r) => base(r, r.name ?? '', 'release'),
};

/** Status names after which the change may or may not have happened. */
const AMBIGUOUS = new Set(['UNKNOWN', 'INTERNAL', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'CANCELLED']);

interface AuthCall {
  getAuthContext(): { sslPeerCertificate?: object } | null;
}

function callerOf(call: AuthCall): string {
  try {
    const peer = call.getAuthContext()?.sslPeerCertificate as Parameters<typeof peerFacts>[0] | undefined;
    return peer ? identityOfFacts(peerFacts(peer)) : '';
  } catch {
    return '';
  }
}

/**
 * Records the outcome of `method` when it is audited; `error` is the status
 * (name and message) it failed with. Never throws.
 */
export function auditCall(log: AuditLog | undefined, method: string, call: AuthCall, request: unknown, reply: unknown, error?: { name: string; message: string }): void {
  const subject = SUBJECTS[method];
  if (!log || !subject) return;
  try {
    let outcome: AuditOutcome = 'ok';
    let message = '';
    if (error) {
      outcome = AMBIGUOUS.has(error.name) ? 'unknown' : 'failed';
      message = `${error.name}: ${error.message}`;
    } else if ((reply as { removalPending?: boolean } | null)?.removalPending) outcome = 'pending';
    log.append({ ...subject(request as AnyReq), caller: callerOf(call), outcome, message });
  } catch (err) {
    process.stderr.write(`gnt-noded: AUDIT RECORD NOT WRITTEN for ${method}: ${(err as Error).message}\n`);
  }
}

/** The AuditLog RPC. */
export function auditLogReply(log: AuditLog | undefined, req: AuditLogRequest__Output): AuditLogReply {
  if (req.limit < 0) throw invalidArgument(`limit must not be negative, not ${req.limit}`);
  if (req.since && Number.isNaN(Date.parse(req.since))) throw invalidArgument(`since "${req.since.slice(0, 40)}" is not an ISO 8601 time`);
  if (!log) return { records: [], skipped: 0 };
  const since = req.since ? new Date(req.since).toISOString() : '';
  const { records, skipped } = log.read({ instance: req.instance, since, limit: req.limit });
  return { records, skipped };
}
