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

export type DiskChange =
  | { kind: 'disk'; action: 'add'; uuid: string; sizeBytes: number }
  | { kind: 'disk'; action: 'remove'; uuid: string; sizeBytes: number };

type DiskStep = PlannedChange<DiskChange>;
interface DiskView {
  uuid: string;
  sizeBytes: number;
}

function planAdd(sizeBytes: number, disks: DiskView[]): DiskStep {
  const uuid = randomUUID();
  disks.push({ uuid, sizeBytes });
  return { kind: 'disk', what: `new disk ${uuid} (${formatSize(sizeBytes)})`, change: { kind: 'disk', action: 'add', uuid, sizeBytes } };
}

function planRemove(index: number, disks: DiskView[]): DiskStep {
  const cur = disks[index];
  disks.splice(index, 1);
  return { kind: 'disk', what: `disk ${index} (${cur.uuid})`, change: { kind: 'disk', action: 'remove', uuid: cur.uuid, sizeBytes: cur.sizeBytes } };
}

function plan(ctx: PlanContext): DiskStep[] {
  const disks: DiskView[] = ctx.inst.disks.map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes }));
  return ctx.op.disks.map((c) => {
    if (c.action === 'ADD') return planAdd(c.sizeBytes, disks);
    if (c.index >= disks.length) throw outOfRange(ctx.inst, 'disk', c.index, disks.length);
    return planRemove(c.index, disks);
  });
}

function commit(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'add') return config.appendDisk(inst.uuid, c.uuid, c.sizeBytes);
  return config.removeDevice('disks', c.uuid);
}

function commitSettled(config: ConfigStore, inst: InstanceConfig, c: DiskChange): void {
  if (c.action === 'remove') return config.removeDevice('disks', c.uuid);
  if (!config.hasDevice('disks', c.uuid)) config.appendDisk(inst.uuid, c.uuid, c.sizeBytes);
}

const describe = (c: DiskChange): string =>
  c.action === 'add' ? `hot-add of new disk ${c.uuid} (${formatSize(c.sizeBytes)})` : `hot-remove of disk ${c.uuid} (${formatSize(c.sizeBytes)})`;

export const diskChanges = hotplugKind<DiskChange>({
  deviceType: 'DISK',
  table: 'disks',
  plan,
  device: (c) => ({ disk: { uuid: c.uuid, sizeBytes: c.action === 'add' ? c.sizeBytes : 0, path: '', pci: -1 } }),
  commit,
  commitSettled,
  describe,
});
