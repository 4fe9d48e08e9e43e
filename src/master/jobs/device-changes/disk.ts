/**
 * Disk changes of a modify job (`--disk add:size=SIZE`, `--disk N:remove`):
 * planned against a copy of the instance's disks; HotplugDevice with the
 * Disk message (the node makes the file of a new disk).
 */
import type { DiskChangeOp } from '../ops';
import { randomUUID } from 'node:crypto';
import type { ConfigStore, InstanceConfig } from '../../config/config-store';
import { formatSize } from '../../validate';
import type { PlanContext, PlannedChange } from './change-kind';
import { hotplugKind, outOfRange } from './hotplug';
import { diskFlavourOf, type DiskFlavourValues } from '../../../common/disk-flavour';
import { excerpt } from '../../../common/excerpt';
import { ConfigError, diskIoLimits } from '../../config/config-store';
import { describeIoLimits, ioLimitsProblem, normalizeIoLimits, type DiskIoLimits } from '../../../common/io-limits';
import { CLI_IO_KEY } from '../../cli/io-limits';
import { ioLimitsProto, ioLimitsProtoIfAny } from '../../io-limits-proto';
import { describeBacking, diskBackingProto } from '../disk-backing';

/** bus/type of an API request, by the rule the CLI applies (src/common/disk-flavour.ts). */
function checkedFlavour(bus: string | undefined, type: string | undefined, template: string | undefined, adopt: string | undefined): DiskFlavourValues {
  const r = diskFlavourOf(bus, type, excerpt, template, adopt);
  if (typeof r === 'string') throw new ConfigError(`--disk add: ${r}`, 'INVALID_ARGUMENT');
  return r;
}

export type DiskChange =
  | { kind: 'disk'; action: 'add'; uuid: string; sizeBytes: number; diskBus?: string; diskType?: string; template?: string; adopt?: string; ioLimits?: DiskIoLimits }
  | { kind: 'disk'; action: 'remove'; uuid: string; sizeBytes: number }
  /** sizeBytes: the size before; growToBytes: the new total; ioLimits: all limits after the change (absent: unchanged). */
  | { kind: 'disk'; action: 'modify'; uuid: string; sizeBytes: number; growToBytes?: number; ioLimits?: DiskIoLimits };

type DiskStep = PlannedChange<DiskChange>;
interface DiskView {
  uuid: string;
  sizeBytes: number;
  ioLimits?: DiskIoLimits;
  pmem?: boolean;
}

function planAdd(sizeBytes: number, disks: DiskView[], flavour: DiskFlavourValues, ioLimits: DiskIoLimits | undefined): DiskStep {
  const uuid = randomUUID();
  const limits = normalizeIoLimits(ioLimits);
  if (limits && flavour.diskType === 'pmem') throw new ConfigError('--disk add: a pmem device takes no I/O limits', 'INVALID_ARGUMENT');
  disks.push({ uuid, sizeBytes, ioLimits: limits });
  const label = flavour.diskType === 'pmem' ? 'pmem device' : flavour.diskBus === 'scsi' ? 'SCSI disk' : 'disk';
  const withLimits = limits ? `, I/O limits ${describeIoLimits(limits)}` : '';
  const size = flavour.adopt ? describeBacking(flavour.template, flavour.adopt) : `${formatSize(sizeBytes)}${flavour.template ? `, ${flavour.template}` : ''}`;
  return { kind: 'disk', what: `new ${label} ${uuid} (${size}${withLimits})`, change: { kind: 'disk', action: 'add', uuid, sizeBytes, ...flavour, ...(limits ? { ioLimits: limits } : {}) } };
}

/** A grow (growToBytes) and/or new limits (the given keys over the current ones), checked whole against the configuration. */
function planModify(index: number, c: ModifyDiskOp, disks: DiskView[]): DiskStep {
  const cur = disks[index];
  const what = `disk ${index} (${cur.uuid})`;
  if (cur.pmem) throw new ConfigError(`${what} is a pmem device: it cannot be grown or given I/O limits`, 'INVALID_ARGUMENT');
  const change: Extract<DiskChange, { action: 'modify' }> = { kind: 'disk', action: 'modify', uuid: cur.uuid, sizeBytes: cur.sizeBytes };
  const parts: string[] = [];
  if (c.growToBytes !== undefined) {
    if (c.growToBytes <= cur.sizeBytes)
      throw new ConfigError(
        `${what}: the asked size ${formatSize(c.growToBytes)} (${c.growToBytes} bytes) is not larger than its current size ${formatSize(cur.sizeBytes)} (${cur.sizeBytes} bytes); a disk can only grow`,
        'INVALID_ARGUMENT',
      );
    change.growToBytes = c.growToBytes;
    parts.push(`size ${formatSize(cur.sizeBytes)} -> ${formatSize(c.growToBytes)}`);
  }
  if (c.ioLimits && Object.keys(c.ioLimits).length) {
    const merged = { ...(cur.ioLimits ?? {}), ...c.ioLimits };
    const problem = ioLimitsProblem(merged, (k) => CLI_IO_KEY[k]);
    if (problem) throw new ConfigError(`${what}: ${problem}`, 'INVALID_ARGUMENT');
    change.ioLimits = normalizeIoLimits(merged) ?? {};
    parts.push(`I/O limits ${describeIoLimits(change.ioLimits)}`);
  }
  disks[index] = { ...cur, sizeBytes: change.growToBytes ?? cur.sizeBytes, ioLimits: change.ioLimits ?? cur.ioLimits };
  return { kind: 'disk', what: `${what} to ${parts.join(', ')}`, change };
}

type ModifyDiskOp = DiskChangeOp;

function planRemove(index: number, disks: DiskView[]): DiskStep {
  const cur = disks[index];
  disks.splice(index, 1);
  return { kind: 'disk', what: `disk ${index} (${cur.uuid})`, change: { kind: 'disk', action: 'remove', uuid: cur.uuid, sizeBytes: cur.sizeBytes } };
}

function plan(ctx: PlanContext): DiskStep[] {
  const disks: DiskView[] = ctx.inst.disks.map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes, ioLimits: diskIoLimits(d), pmem: d.disk_type === 'pmem' }));
  return ctx.op.disks.map((c) => {
    if (c.action === 'ADD') return planAdd(c.sizeBytes, disks, checkedFlavour(c.diskBus, c.diskType, c.template, c.adopt), c.ioLimits);
    if (c.index >= disks.length) throw outOfRange(ctx.inst, 'disk', c.index, disks.length);
    if (c.action === 'MODIFY') return planModify(c.index, c, disks);
    return planRemove(c.index, disks);
  });
}

/** A modify's new size and limits; repeatable (same values again change nothing). */
function commitModify(config: ConfigStore, c: Extract<DiskChange, { action: 'modify' }>): void {
  if (!config.hasDevice('disks', c.uuid)) return;
  config.db.transaction(() => {
    if (c.growToBytes) config.setDiskSize(c.uuid, c.growToBytes);
    if (c.ioLimits) config.setDiskIoLimits(c.uuid, c.ioLimits);
  })();
}

function commit(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'add') return config.appendDisk(inst.uuid, c.uuid, c.sizeBytes, c);
  if (c.action === 'modify') return commitModify(config, c);
  return config.removeDevice('disks', c.uuid);
}

function commitSettled(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'remove') return config.removeDevice('disks', c.uuid);
  if (c.action === 'modify') return commitModify(config, c);
  if (!config.hasDevice('disks', c.uuid)) config.appendDisk(inst.uuid, c.uuid, c.sizeBytes, c);
}

function describe(c: DiskChange): string {
  if (c.action === 'add') return `hot-add of new disk ${c.uuid} (${c.adopt ? describeBacking(c.template ?? '', c.adopt) : formatSize(c.sizeBytes)})`;
  if (c.action === 'remove') return `hot-remove of disk ${c.uuid} (${formatSize(c.sizeBytes)})`;
  const parts = [c.growToBytes ? `grow to ${formatSize(c.growToBytes)}` : '', c.ioLimits ? `I/O limits ${describeIoLimits(c.ioLimits)}` : ''].filter(Boolean);
  return `modify of disk ${c.uuid} (${parts.join(', ')})`;
}

/** The Disk message: an add's size, bus, type and limits; a modify's new size (0: none) and limits after it (absent: unchanged). */
function diskMessage(c: DiskChange): Record<string, unknown> {
  if (c.action === 'add') return { uuid: c.uuid, sizeBytes: c.sizeBytes, path: '', pci: -1, diskBus: c.diskBus ?? '', diskType: c.diskType ?? '', ...diskBackingProto(c.template ?? '', c.adopt ?? ''), ...ioLimitsProtoIfAny(c.ioLimits) };
  if (c.action === 'modify') return { uuid: c.uuid, sizeBytes: c.growToBytes ?? 0, path: '', pci: -1, ...(c.ioLimits ? { ioLimits: ioLimitsProto(c.ioLimits) } : {}) };
  return { uuid: c.uuid, sizeBytes: 0, path: '', pci: -1 };
}

export const diskChanges = hotplugKind<DiskChange>({
  deviceType: 'DISK',
  table: 'disks',
  plan,
  device: (c) => ({ disk: diskMessage(c) }),
  commit,
  commitSettled,
  describe,
});
