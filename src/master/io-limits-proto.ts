/** A disk's I/O limits as the proto DiskIoLimits (node and master API have the same fields); 0: no limit. */
import { IO_LIMIT_KEYS, type DiskIoLimits } from '../common/io-limits';

export interface ProtoIoLimits {
  iops: number;
  iopsRd: number;
  iopsWr: number;
  bps: number;
  bpsRd: number;
  bpsWr: number;
}

const PROTO_KEY = { iops: 'iops', iops_rd: 'iopsRd', iops_wr: 'iopsWr', bps: 'bps', bps_rd: 'bpsRd', bps_wr: 'bpsWr' } as const;

/** Every field (0 where none). */
export function ioLimitsProto(l: DiskIoLimits | undefined): ProtoIoLimits {
  const out = { iops: 0, iopsRd: 0, iopsWr: 0, bps: 0, bpsRd: 0, bpsWr: 0 };
  for (const k of IO_LIMIT_KEYS) out[PROTO_KEY[k]] = l?.[k] ?? 0;
  return out;
}

/** Only when some limit is set (a spec or an add without limits carries none). */
export const ioLimitsProtoIfAny = (l: DiskIoLimits | undefined): { ioLimits?: ProtoIoLimits } =>
  l && IO_LIMIT_KEYS.some((k) => (l[k] ?? 0) > 0) ? { ioLimits: ioLimitsProto(l) } : {};
