/**
 * Per-disk I/O limits, the rules master and node share: QEMU's throttle
 * fields (iops, iops_rd, iops_wr, bps, bps_rd, bps_wr; 0 or absent: no
 * limit), a total exclusive with its read/write split, as QEMU has it.
 */
export const IO_LIMIT_KEYS = ['iops', 'iops_rd', 'iops_wr', 'bps', 'bps_rd', 'bps_wr'] as const;
export type IoLimitKey = (typeof IO_LIMIT_KEYS)[number];

/** Only the limits that are set (> 0); an empty object or absent: none. */
export type DiskIoLimits = Partial<Record<IoLimitKey, number>>;

/** The largest value QEMU takes (THROTTLE_VALUE_MAX, 1e15). */
export const IO_LIMIT_MAX = 1_000_000_000_000_000;

const EXCLUSIVE: Array<[IoLimitKey, IoLimitKey[]]> = [
  ['iops', ['iops_rd', 'iops_wr']],
  ['bps', ['bps_rd', 'bps_wr']],
];

/**
 * Why a set of limits cannot be (a negative, fractional or too large value,
 * a total together with its read/write split), or undefined. `names` maps a
 * key to how the caller's user wrote it (iops -> iops_max on the CLI).
 */
export function ioLimitsProblem(limits: DiskIoLimits, names: (k: IoLimitKey) => string = (k) => k): string | undefined {
  for (const k of IO_LIMIT_KEYS) {
    const v = limits[k];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0 || v > IO_LIMIT_MAX) return `${names(k)} must be a whole number from 0 to ${IO_LIMIT_MAX}, not ${v}`;
  }
  for (const [total, split] of EXCLUSIVE) {
    const given = split.filter((k) => (limits[k] ?? 0) > 0);
    if ((limits[total] ?? 0) > 0 && given.length)
      return `${names(total)} and ${given.map(names).join('/')} cannot both be set (QEMU takes either a total or a read/write split); set ${names(total)}=0 to use the split`;
  }
  return undefined;
}

/** Drops the zeros: the canonical form (undefined when no limit is set). */
export function normalizeIoLimits(limits: DiskIoLimits | undefined): DiskIoLimits | undefined {
  if (!limits) return undefined;
  const out: DiskIoLimits = {};
  for (const k of IO_LIMIT_KEYS) if ((limits[k] ?? 0) > 0) out[k] = limits[k];
  return Object.keys(out).length ? out : undefined;
}

export const sameIoLimits = (a: DiskIoLimits | undefined, b: DiskIoLimits | undefined): boolean =>
  IO_LIMIT_KEYS.every((k) => (a?.[k] ?? 0) === (b?.[k] ?? 0));

/** "iops=50, bps=1048576" or "none". */
export const describeIoLimits = (l: DiskIoLimits | undefined): string =>
  IO_LIMIT_KEYS.filter((k) => (l?.[k] ?? 0) > 0).map((k) => `${k}=${l?.[k]}`).join(', ') || 'none';
