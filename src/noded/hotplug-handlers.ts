/**
 * HotplugDevice per device kind: each kind's handler turns the kind-specific
 * part of the request (proto/node.proto, `oneof device`) into the
 * hypervisor layer's call and its record back into the reply. A new kind is
 * one more entry in HOTPLUG_HANDLERS.
 */
import type { KvmInstance, OperationOptions } from '../hypervisor/kvm-instance';
import type { Disk__Output } from '../generated/gnt/node/v1/Disk';
import type { HotplugDeviceReply } from '../generated/gnt/node/v1/HotplugDeviceReply';
import type { HotplugDeviceRequest__Output } from '../generated/gnt/node/v1/HotplugDeviceRequest';
import type { Nic__Output } from '../generated/gnt/node/v1/Nic';
import { crashPoint } from './fault-injection';
import type { Logger } from './instance-registry';
import { diskFlavour, pmemMiB, requestedBacking } from './disk-kinds';
import { diskReply, nicReply } from './operations-service';
import { checkNicMac, int64, nicEnums, nicRequestOf } from './spec';
import type { NicChangeRequest } from '../hypervisor/kvm-instance';
import { invalidArgument } from './status';
import { assertDeviceUuid, type Storage } from './storage';

export type HotplugKind = 'nic' | 'disk';

export interface HotplugContext {
  storage: Storage;
  log: Logger;
}

type Handler = (inst: KvmInstance, req: HotplugDeviceRequest__Output, opts: OperationOptions, ctx: HotplugContext) => Promise<HotplugDeviceReply>;

const KIND_OF_TYPE: Record<string, HotplugKind> = { NIC: 'nic', DISK: 'disk' };
const LABEL: Record<HotplugKind, string> = { nic: 'NIC', disk: 'disk' };

/** The kind-specific part of a request, checked against its device_type. */
export function hotplugKindOf(req: HotplugDeviceRequest__Output): HotplugKind {
  const kind = KIND_OF_TYPE[req.deviceType];
  if (!kind) throw invalidArgument(`device_type must be NIC or DISK, not ${req.deviceType}`);
  const given = req.device ?? (req.nic ? 'nic' : req.disk ? 'disk' : undefined);
  if (!given) throw invalidArgument(`a ${LABEL[kind]} hotplug needs the ${kind} field`);
  if (given !== kind) throw invalidArgument(`device_type ${req.deviceType} does not match the device given (${given})`);
  return kind;
}

function nicChangeOf(nic: Nic__Output, uuid: string): NicChangeRequest {
  const what = `modify of NIC ${uuid}`;
  const { link_state, model } = nicEnums(nic, what);
  if (nic.queues > 1) throw invalidArgument(`${what}: the number of queues cannot change on a NIC (remove it and add one with queues=${nic.queues})`);
  if (nic.rateMbit < 0) throw invalidArgument(`${what}: rate_mbit must not be negative`);
  const change: NicChangeRequest = { rate_mbit: nic.rateMbit };
  if (nic.mac) change.mac = checkNicMac(nic.mac);
  if (nic.link) change.link = nic.link;
  if (nic.linkState) change.link_state = link_state;
  if (nic.model) change.model = model;
  return change;
}

async function hotplugNic(inst: KvmInstance, req: HotplugDeviceRequest__Output, opts: OperationOptions): Promise<HotplugDeviceReply> {
  const nic = req.nic as Nic__Output;
  const uuid = assertDeviceUuid(nic.uuid, 'the NIC');
  switch (req.action) {
    case 'ADD': {
      const mac = checkNicMac(nic.mac);
      return nicReply(await inst.hotAddNic(nicRequestOf(nic, mac, `new NIC ${uuid}`), opts));
    }
    case 'MODIFY': {
      // The Nic message gives the NIC's state after the change: mac, link,
      // link_state and model "" keep the current value; rate_mbit is the
      // limit after it (0: none), queues cannot change on a running NIC.
      const r = await inst.hotModifyNic(uuid, nicChangeOf(nic, uuid), opts);
      return { ...nicReply(r.record), applied: r.applied };
    }
    case 'REMOVE': {
      const r = await inst.hotRemoveNic(uuid, opts);
      return { ...nicReply(r.record), removalPending: r.pending };
    }
    default:
      throw invalidArgument(`NIC hotplug action must be ADD, REMOVE or MODIFY, not ${req.action}`);
  }
}

async function hotplugDisk(inst: KvmInstance, req: HotplugDeviceRequest__Output, opts: OperationOptions, ctx: HotplugContext): Promise<HotplugDeviceReply> {
  const disk = req.disk as Disk__Output;
  const uuid = assertDeviceUuid(disk.uuid, 'the disk');
  switch (req.action) {
    case 'ADD': {
      const wanted = requestedBacking(disk, ctx.storage.nodeName);
      const path = wanted.path || ctx.storage.defaultDiskPath(inst.name, uuid);
      const sizeBytes = wanted.create ? int64(disk.sizeBytes, `disk ${uuid} size_bytes`) : 0;
      // Created in the instance's queue once the intent is recorded: a
      // crash right after leaves an intent whose rollback deletes the file.
      const prepare = (): (() => void) | void => {
        if (!wanted.create) return;
        const created = ctx.storage.createDisks(inst.name, [{ path, sizeBytes }]);
        crashPoint('after-disk-file-created', ctx.log);
        return () => ctx.storage.removeFiles(created);
      };
      const req = { uuid, path, ...wanted.backing, ...(wanted.create ? { created: true } : {}) };
      const flavour = diskFlavour(disk);
      if (flavour === 'scsi') return diskReply(await inst.hotAddScsiDisk(req, prepare, opts));
      if (flavour === 'pmem') return diskReply(await inst.hotAddPmem({ ...req, sizeMiB: pmemMiB(uuid, sizeBytes) }, prepare, opts));
      return diskReply(await inst.hotAddDisk(req, prepare, opts));
    }
    case 'REMOVE': {
      // The file the node created goes with the record (device-operations.ts finishRemoval).
      const r = await inst.hotRemoveDisk(uuid, opts);
      return { ...diskReply(r.record), removalPending: r.pending };
    }
    default:
      throw invalidArgument(`disk hotplug action must be ADD or REMOVE, not ${req.action}`);
  }
}

export const HOTPLUG_HANDLERS: Readonly<Record<HotplugKind, Handler>> = { nic: hotplugNic, disk: hotplugDisk };
