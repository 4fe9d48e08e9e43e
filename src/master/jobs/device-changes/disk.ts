/**
 * Disk changes of a modify job (`--disk add:size=SIZE`, `--disk N:remove`):
 * planned against a copy of the instance's disks; HotplugDevice with the
 * Disk message (the node makes the file of a new disk).
 */
import { randomUUID } from 'node:crypto';
import type { ConfigStore, InstanceConfig } from '../../config/config-store';
import { formatSize } from '../../validate';
import type { PlanContext, PlannedChange } from './change-kind';
import { hotplugKind, outOfRange } from './hotplug';
import { diskFlavourOf, type DiskFlavourValues } from '../../../common/disk-flavour';
import { excerpt } from '../../../common/excerpt';
import { ConfigError } from '../../config/config-store';
import { describeBacking, diskBackingProto } from '../disk-backing';

/** bus/type of an API request, by the rule the CLI applies (src/common/disk-flavour.ts). */
function checkedFlavour(bus: string | undefined, type: string | undefined, template: string | undefined, adopt: string | undefined): DiskFlavourValues {
  const r = diskFlavourOf(bus, type, excerpt, template, adopt);
  if (typeof r === 'string') throw new ConfigError(`--disk add: ${r}`, 'INVALID_ARGUMENT');
  return r;
}

export type DiskChange =
  | { kind: 'disk'; action: 'add'; uuid: string; sizeBytes: number; diskBus?: string; diskType?: string; template?: string; adopt?: string }
  | { kind: 'disk'; action: 'remove'; uuid: string; sizeBytes: number };

type DiskStep = PlannedChange<DiskChange>;
interface DiskView {
  uuid: string;
  sizeBytes: number;
}

function planAdd(sizeBytes: number, disks: DiskView[], flavour: DiskFlavourValues): DiskStep {
  const uuid = randomUUID();
  disks.push({ uuid, sizeBytes });
  const label = flavour.diskType === 'pmem' ? 'pmem device' : flavour.diskBus === 'scsi' ? 'SCSI disk' : 'disk';
  const size = flavour.adopt ? describeBacking(flavour.template, flavour.adopt) : `${formatSize(sizeBytes)}${flavour.template ? `, ${flavour.template}` : ''}`;
  return { kind: 'disk', what: `new ${label} ${uuid} (${size})`, change: { kind: 'disk', action: 'add', uuid, sizeBytes, ...flavour } };
}

function planRemove(index: number, disks: DiskView[]): DiskStep {
  const cur = disks[index];
  disks.splice(index, 1);
  return { kind: 'disk', what: `disk ${index} (${cur.uuid})`, change: { kind: 'disk', action: 'remove', uuid: cur.uuid, sizeBytes: cur.sizeBytes } };
}

function plan(ctx: PlanContext): DiskStep[] {
  const disks: DiskView[] = ctx.inst.disks.map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes }));
  return ctx.op.disks.map((c) => {
    if (c.action === 'ADD') return planAdd(c.sizeBytes, disks, checkedFlavour(c.diskBus, c.diskType, c.template, c.adopt));
    if (c.index >= disks.length) throw outOfRange(ctx.inst, 'disk', c.index, disks.length);
    return planRemove(c.index, disks);
  });
}

function commit(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'add') return config.appendDisk(inst.uuid, c.uuid, c.sizeBytes, c);
  return config.removeDevice('disks', c.uuid);
}

function commitSettled(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'remove') return config.removeDevice('disks', c.uuid);
  if (!config.hasDevice('disks', c.uuid)) config.appendDisk(inst.uuid, c.uuid, c.sizeBytes, c);
}

const describe = (c: DiskChange): string =>
  c.action === 'add' ? `hot-add of new disk ${c.uuid} (${c.adopt ? describeBacking(c.template ?? '', c.adopt) : formatSize(c.sizeBytes)})` : `hot-remove of disk ${c.uuid} (${formatSize(c.sizeBytes)})`;

export const diskChanges = hotplugKind<DiskChange>({
  deviceType: 'DISK',
  table: 'disks',
  plan,
  device: (c) => ({
    disk: {
      uuid: c.uuid, sizeBytes: c.action === 'add' ? c.sizeBytes : 0, path: '', pci: -1,
      ...(c.action === 'add' ? { diskBus: c.diskBus ?? '', diskType: c.diskType ?? '', ...diskBackingProto(c.template ?? '', c.adopt ?? '') } : {}),
    },
  }),
  commit,
  commitSettled,
  describe,
});
