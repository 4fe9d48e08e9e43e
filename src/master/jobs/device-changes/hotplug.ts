/**
 * What the device kinds (NIC, disk) share: a HotplugDevice request with the
 * kind's own message, hotplug support asked with HotplugSupported, a device
 * table in the configuration (removal pending marks), and the job's words
 * for hot-add, hot-modify and hot-remove. nic.ts and disk.ts give the rest
 * to hotplugKind().
 */
import { ConfigError, type ConfigStore, type DeviceTable, type InstanceConfig } from '../../config/config-store';
import type { HotplugDeviceReply__Output } from '../../../generated/gnt/node/v1/HotplugDeviceReply';
import type { HotplugDeviceRequest } from '../../../generated/gnt/node/v1/HotplugDeviceRequest';
import type { ChangeKind, GuestWaitTarget, LiveResult, PlanContext, PlannedChange } from './change-kind';

/** The change record of a device kind: which device, and what happens to it. */
export interface DeviceChangeRecord {
  kind: string;
  action: 'add' | 'modify' | 'remove';
  uuid: string;
}

/** The types of a device kind (see KindTypes). */
export interface DeviceTypes<C extends DeviceChangeRecord> {
  change: C;
  step: PlannedChange<C>;
  request: HotplugDeviceRequest;
  reply: HotplugDeviceReply__Output;
}

/** The kind's own part of the HotplugDevice request. */
export type DevicePart = Pick<HotplugDeviceRequest, 'nic'> | Pick<HotplugDeviceRequest, 'disk'>;

/** What a device kind module gives hotplugKind(). */
export interface DeviceKindSpec<C extends DeviceChangeRecord> {
  deviceType: 'NIC' | 'DISK';
  table: DeviceTable;
  plan(ctx: PlanContext): PlannedChange<C>[];
  device(c: C): DevicePart;
  commit(config: ConfigStore, inst: InstanceConfig, c: C): void;
  commitSettled(config: ConfigStore, inst: InstanceConfig, c: C): void;
  describe(c: C): string;
}

const ACTION = { add: 'ADD', modify: 'MODIFY', remove: 'REMOVE' } as const;
const CONFIG_VERB = { add: 'added to', modify: 'modified in', remove: 'removed from' } as const;
const DONE_VERB = { add: 'added', modify: 'modified', remove: 'removed' } as const;

/** A bad index of a modify command: "NIC index 3 is out of range: instance web1 has 2 NICs (0 to 1)". */
export function outOfRange(inst: InstanceConfig, kind: string, i: number, n: number): ConfigError {
  return new ConfigError(
    `${kind} index ${i} is out of range: instance ${inst.name} has ${n} ${kind}${n === 1 ? '' : 's'}${n ? ` (0 to ${n - 1})` : ''}`,
    'INVALID_ARGUMENT',
  );
}

/**
 * Fault-injection point for tests (test/integration/master-crash.test.ts):
 * with GNT_MASTERD_CRASH_POINT=after-node-hotplug the master kills itself
 * right after the node confirmed HotplugDevice and before the operation is
 * settled, the window the convergence loop (convergence.ts) repairs after
 * the restart. Does nothing unless the variable is set.
 */
function crashPoint(log: (line: string) => void, flush: () => void): void {
  if (process.env.GNT_MASTERD_CRASH_POINT !== 'after-node-hotplug') return;
  log(`fault injection: GNT_MASTERD_CRASH_POINT=after-node-hotplug, killing the master before the configuration commit`);
  flush(); // the job's lines so far are committed: they are what the test reads after the kill
  process.kill(process.pid, 'SIGKILL');
}

/** What the guest agent must list after a hot-add: the NIC's MAC, the disk's PCI address (root bus) or SCSI address. */
export function guestWaitOf(c: DeviceChangeRecord, reply: HotplugDeviceReply__Output | undefined): GuestWaitTarget[] | string {
  if (c.action !== 'add') return [];
  if (!reply) return 'the node\'s reply was lost, so the device\'s address is not known';
  if (reply.nic?.mac) return [{ kind: 'nic', mac: reply.nic.mac }];
  const scsi = reply.disk?.scsiAddress;
  if (scsi) {
    const [, target, lun] = scsi.split(':');
    return [{ kind: 'disk', scsi: `0:${target}:${lun}` }];
  }
  const bus = reply.disk?.pciBus || '';
  if (reply.disk && reply.pci >= 0 && (!bus || /^(pci|pcie)\.0$/.test(bus)))
    return [{ kind: 'disk', pci: `0000:00:${reply.pci.toString(16).padStart(2, '0')}.0` }];
  if (reply.disk) return `the disk sits behind ${bus}, whose bus number only the guest's firmware knows`;
  return [];
}

/** Where the node put the device: a PCI slot (of a bridge or root port when not on the root bus) or a SCSI address. */
function placeOf(reply: HotplugDeviceReply__Output): string {
  const scsi = reply.disk?.scsiAddress;
  if (scsi) return `SCSI address ${scsi}`;
  const bus = reply.nic?.pciBus || reply.disk?.pciBus || '';
  return /^(pci|pcie)\.0$/.test(bus) || !bus ? `PCI slot ${reply.pci}` : `PCI slot ${reply.pci} of ${bus}`;
}

function liveLine(s: PlannedChange<DeviceChangeRecord>, state: string, reply: HotplugDeviceReply__Output | undefined, confirmed: boolean): LiveResult {
  if (state === 'removal_pending')
    return {
      line: `${s.what}: removal pending: the guest has not released the device yet; the removal completes when it does, with no command (gnt-instance info shows it)`,
      notes: [],
    };
  const at = reply ? ` at ${placeOf(reply)}${reply.deviceId ? ` (${reply.deviceId})` : ''}` : '';
  const how = reply?.applied?.length ? `; applied: ${reply.applied.join(', ')}` : '';
  return { line: `${s.what}: hot-${DONE_VERB[s.change.action]}${at}${how}${confirmed ? ' (outcome confirmed by the node)' : ''}`, notes: [] };
}

/** The ChangeKind of a device kind that the node changes with HotplugDevice. */
export function hotplugKind<C extends DeviceChangeRecord>(spec: DeviceKindSpec<C>): ChangeKind<DeviceTypes<C>> {
  return {
    plan: (ctx) => spec.plan(ctx),
    async liveSupported({ rpc, node, inst, log }) {
      const r = await rpc.hotplugSupported(node, inst.name, spec.deviceType);
      if (!r.supported) log(`hotplug of ${spec.deviceType} not possible${r.reason ? `: ${r.reason}` : ''}; the change is made in the configuration only`);
      return r.supported;
    },
    commit: (config, inst, s) => spec.commit(config, inst, s.change),
    configOnlyText(s) {
      const m = `${s.what}: ${CONFIG_VERB[s.change.action]} the configuration`;
      return { log: m, done: m };
    },
    liveStart: (s, _inst, node) => `hot-${s.change.action} of ${s.what} on node ${node.name}`,
    request: (s, inst, operationId) => ({
      instance: inst.name, deviceType: spec.deviceType, action: ACTION[s.change.action], operationId, ...spec.device(s.change),
    }),
    async send({ rpc, node, request, log, flush }) {
      const reply = await rpc.hotplugDevice(node, request);
      crashPoint(log, flush);
      return reply;
    },
    fromReply: (r) => ({ state: r.removalPending ? 'removal_pending' : 'succeeded', settledBy: 'request' }),
    replyOfRecord: (rec) => rec?.hotplug ?? undefined,
    failedMessage: (s, final, { done }) =>
      `hot-${s.change.action} of ${s.what} failed: ${final.error}; the configuration of this change is unchanged` +
      (done.length ? ` (already done: ${done.join('; ')})` : ''),
    succeeded: (s, final, reply, confirmed) => liveLine(s, final.state, reply, confirmed),
    guestWait: (s, reply) => guestWaitOf(s.change, reply),
    describe: (c) => spec.describe(c),
    commitSettled: (config, inst, c) => spec.commitSettled(config, inst, c),
    markRemovalPending: (config, c, opId) => config.setRemovalPending(spec.table, c.uuid, opId),
    settleFailed(config, _inst, c, opId) {
      const pendingMark = config.db.prepare(`SELECT 1 FROM ${spec.table} WHERE uuid = ? AND removal_pending = ?`).get(c.uuid, opId);
      if (pendingMark) config.setRemovalPending(spec.table, c.uuid, '');
      return undefined;
    },
  };
}
