/** proto DiskIoLimits <-> the hypervisor's DiskIoLimits (only the limits that are set). */
import type { DiskIoLimits as ProtoLimits, DiskIoLimits__Output } from '../generated/gnt/node/v1/DiskIoLimits';
import { IO_LIMIT_KEYS, ioLimitsProblem, normalizeIoLimits, type DiskIoLimits } from '../hypervisor/disk-io-limits';
import { invalidArgument } from './status';

const PROTO_KEY = { iops: 'iops', iops_rd: 'iopsRd', iops_wr: 'iopsWr', bps: 'bps', bps_rd: 'bpsRd', bps_wr: 'bpsWr' } as const;

/** The limits of a Disk message (null/absent or all 0: undefined), checked; `what` names the disk in errors. */
export function ioLimitsOfProto(l: DiskIoLimits__Output | null | undefined, what: string): DiskIoLimits | undefined {
  if (!l) return undefined;
  const out: DiskIoLimits = {};
  for (const k of IO_LIMIT_KEYS) {
    const raw = l[PROTO_KEY[k]];
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${what}: io_limits ${k} must be a non-negative integer, not ${String(raw)}`);
    if (n > 0) out[k] = n;
  }
  const problem = ioLimitsProblem(out);
  if (problem) throw invalidArgument(`${what}: ${problem}`);
  return normalizeIoLimits(out);
}

export function ioLimitsToProto(l: DiskIoLimits | undefined): ProtoLimits | undefined {
  const n = normalizeIoLimits(l);
  if (!n) return undefined;
  const out: ProtoLimits = {};
  for (const k of IO_LIMIT_KEYS) out[PROTO_KEY[k]] = String(n[k] ?? 0);
  return out;
}
