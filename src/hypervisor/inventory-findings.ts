/**
 * What verify reports: one Finding per difference between the runtime file,
 * QEMU and the host, and the Repair that --fix applies for it
 * (inventory-repair.ts for QEMU and the host, the caller for the runtime
 * record); the constructors the comparisons share, and how a finding names
 * a NIC or disk record.
 */
import { DEVICE_KINDS, idOf, isPlaced, type DeviceKindName as RecordKind, type DeviceRecord } from './device-kinds';

export type FindingCode =
  | 'record-without-device'
  | 'device-without-record'
  | 'attach-unconfirmed'
  | 'attach-failed'
  | 'removal-pending'
  | 'removal-unfinished'
  | 'wrong-slot'
  | 'wrong-type'
  | 'mac-differs'
  | 'no-slot'
  | 'no-backend'
  | 'unused-backend'
  | 'vcpu-count'
  | 'memory-size'
  | 'tap-missing'
  | 'tap-not-recorded'
  | 'tap-wrong-bridge'
  | 'bridge-missing'
  | 'rate-differs'
  | 'disk-size'
  | 'grow-unfinished'
  | 'stray-tap'
  | 'orphan-file'
  | 'not-verified';

export type DeviceKind = 'nic' | 'disk' | 'cpu' | 'dimm' | 'other';

/** What --fix does about a finding. */
export type Repair =
  | { kind: 'remove-device'; id: string; device: DeviceKind }
  | { kind: 'complete-attach'; record: RecordKind; uuid: string }
  | { kind: 'drop-record'; record: RecordKind | 'cpu' | 'dimm'; key: string }
  | { kind: 'release-netdev'; id: string }
  | { kind: 'release-block-node'; id: string }
  | { kind: 'release-fdset'; id: number }
  | { kind: 'release-memory-backend'; id: string }
  | { kind: 'record-tap'; uuid: string; tap: string }
  | { kind: 'connect-tap'; tap: string; link: string }
  | { kind: 'set-rate'; tap: string; mbit: number }
  | { kind: 'delete-tap'; name: string }
  | { kind: 'delete-file'; path: string };

export interface Finding {
  /** What it is about: "NIC <uuid> (<id>)", "tap gnttap3", "file /srv/...". */
  device: string;
  /** The NIC's or disk's uuid when the finding is about a runtime record. */
  uuid?: string;
  /** What differs, for people. */
  problem: string;
  code: FindingCode;
  /** A legitimate state: reported, not counted as a difference. */
  note?: boolean;
  repair?: Repair;
}

/** A difference, with the repair that fixes it when there is one. */
export function finding(device: string, code: FindingCode, problem: string, repair?: Repair): Finding {
  return repair ? { device, problem, code, repair } : { device, problem, code };
}

/** A legitimate state: reported, not counted as a difference, never repaired. */
export function note(device: string, code: FindingCode, problem: string): Finding {
  return { device, problem, code, note: true };
}

/** A drop of the runtime record of a NIC, disk, vCPU or DIMM. */
export const dropRecord = (record: RecordKind | 'cpu' | 'dimm', key: string): Repair => ({ kind: 'drop-record', record, key });

export type AnyRecord = DeviceRecord;

/** A record's device id; undefined when it has no slot or uuid yet (an old runtime file). */
export const idOfRecord = (kind: RecordKind, rec: AnyRecord): string | undefined =>
  isPlaced(DEVICE_KINDS[kind], rec) && rec.uuid ? idOf(DEVICE_KINDS[kind], rec) : undefined;

/** How a finding names a device record: "NIC <uuid> (<device id>)", "SCSI disk <uuid> (scsi-...)". */
export function describeRecord(kind: RecordKind, rec: AnyRecord): string {
  const id = idOfRecord(kind, rec);
  return `${DEVICE_KINDS[kind].label} ${rec.uuid || '(no uuid)'}${id === undefined ? '' : ` (${id})`}`;
}

/** A finding about a runtime record carries its uuid (when it has one). */
export const aboutRecord =
  (uuid: string) =>
  (f: Finding): Finding =>
    uuid ? { ...f, uuid } : f;

/** What a repair does, for the report. */
export function describeRepair(r: Repair): string {
  switch (r.kind) {
    case 'remove-device':
      return `device_del ${r.id}, waited until QEMU dropped it, released its backends`;
    case 'complete-attach':
      return 'the hot-add completed: "attaching" cleared in the runtime file';
    case 'drop-record':
      return 'record dropped from the runtime file';
    case 'release-netdev':
      return `netdev_del ${r.id}`;
    case 'release-block-node':
      return `blockdev-del ${r.id}`;
    case 'release-fdset':
      return `remove-fd fdset-id=${r.id}`;
    case 'release-memory-backend':
      return `object-del ${r.id}`;
    case 'record-tap':
      return `tap ${r.tap} recorded in the runtime file`;
    case 'connect-tap':
      return `tap ${r.tap} enslaved to bridge ${r.link}`;
    case 'set-rate':
      return r.mbit ? `tbf limit of ${r.mbit} Mbit/s set on tap ${r.tap}` : `limit removed from tap ${r.tap}`;
    case 'delete-tap':
      return `tap ${r.name} deleted`;
    case 'delete-file':
      return `${r.path} deleted`;
  }
}
