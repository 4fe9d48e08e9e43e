/**
 * The I/O limit keys of --disk (gnt-instance add and modify):
 * iops_max, iops_rd_max, iops_wr_max (operations per second) and bps_max,
 * bps_rd_max, bps_wr_max (bytes per second: a whole number, or a size with
 * a unit, e.g. 10M = 10 MiB/s); 0 removes a limit. A total and its
 * read/write split cannot both be set (QEMU's rule, src/common/io-limits.ts).
 */
import type { DiskIoLimits as ProtoLimits } from '../../generated/gnt/master/v1/DiskIoLimits';
import { IO_LIMIT_KEYS, ioLimitsProblem, type DiskIoLimits, type IoLimitKey } from '../../common/io-limits';
import { excerpt } from '../../common/excerpt';
import { parseSize, UsageError } from '../validate';

/** CLI key of each limit. */
export const CLI_IO_KEY: Record<IoLimitKey, string> = {
  iops: 'iops_max', iops_rd: 'iops_rd_max', iops_wr: 'iops_wr_max', bps: 'bps_max', bps_rd: 'bps_rd_max', bps_wr: 'bps_wr_max',
};
export const CLI_IO_KEYS = IO_LIMIT_KEYS.map((k) => CLI_IO_KEY[k]);

const PROTO_KEY = { iops: 'iops', iops_rd: 'iopsRd', iops_wr: 'iopsWr', bps: 'bps', bps_rd: 'bpsRd', bps_wr: 'bpsWr' } as const;

function limitValue(k: IoLimitKey, v: string, what: string): number {
  const key = CLI_IO_KEY[k];
  if (/^\d{1,16}$/.test(v)) return Number(v);
  if (k.startsWith('bps') && /^\d/.test(v)) return parseSize(v, `${what}: ${key}`);
  throw new UsageError(`${what}: ${key} must be a whole number${k.startsWith('bps') ? ' of bytes per second or a size such as 10M' : ' of operations per second'} (0: no limit), not ${excerpt(v)}`);
}

/** The limits among `kv` (only the keys given), checked for form and exclusivity. */
export function parseIoLimits(kv: Record<string, string>, what: string): DiskIoLimits {
  const out: DiskIoLimits = {};
  for (const k of IO_LIMIT_KEYS) {
    const v = kv[CLI_IO_KEY[k]];
    if (v !== undefined) out[k] = limitValue(k, v, what);
  }
  const problem = ioLimitsProblem(out, (k) => CLI_IO_KEY[k]);
  if (problem) throw new UsageError(`${what}: ${problem}`);
  return out;
}

/** For an add: every field, 0 where no limit; undefined when none is given. */
export function ioLimitsSpec(l: DiskIoLimits): ProtoLimits | undefined {
  if (!Object.keys(l).length) return undefined;
  const out: ProtoLimits = {};
  for (const k of IO_LIMIT_KEYS) out[PROTO_KEY[k]] = l[k] ?? 0;
  return out;
}

/** For a modify: -1 keeps a field that is not given. */
export function ioLimitsChange(l: DiskIoLimits): ProtoLimits {
  const out: ProtoLimits = {};
  for (const k of IO_LIMIT_KEYS) out[PROTO_KEY[k]] = l[k] ?? -1;
  return out;
}

/** A proto DiskIoLimits (master API) as plain numbers; `keepNegative`: -1 stays (a modify), else it reads as 0. */
export function ioLimitsOfApi(l: { iops?: unknown; iopsRd?: unknown; iopsWr?: unknown; bps?: unknown; bpsRd?: unknown; bpsWr?: unknown } | null | undefined): Partial<Record<IoLimitKey, number>> | undefined {
  if (!l) return undefined;
  const out: Partial<Record<IoLimitKey, number>> = {};
  for (const k of IO_LIMIT_KEYS) out[k] = Number(l[PROTO_KEY[k]] ?? 0);
  return out;
}
