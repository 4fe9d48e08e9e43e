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
import type { DiskChangeRequest, NicChangeRequest } from '../hypervisor/kvm-instance';
import { ioLimitsOfProto } from './disk-io-limits-proto';
import { invalidArgument } from './status';
import { assertDeviceUuid, type Storage } from './storage';
import type { RbdPool } from './rbd-pool';
import type { RbdImage } from '../hypervisor/disk-template';

export type HotplugKind = 'nic' | 'disk';

export interface HotplugContext {
  storage: Storage;
  /** The node's RBD pool (--rbd-*), if configured. */
  rbdPool?: RbdPool;
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

/** An RBD disk's reply carries the image's size (rbd info): an adopted image's size is known only there. */
async function withImageSize(reply: HotplugDeviceReply, img: RbdImage | undefined, pool: RbdPool | undefined): Promise<HotplugDeviceReply> {
  if (!img || !pool || !reply.disk) return reply;
  const info = await pool.info(img).catch(() => undefined);
  return info ? { ...reply, disk: { ...reply.disk, sizeBytes: String(info.sizeBytes) } } : reply;
}

async function hotplugDisk(inst: KvmInstance, req: HotplugDeviceRequest__Output, opts: OperationOptions, ctx: HotplugContext): Promise<HotplugDeviceReply> {
  const disk = req.disk as Disk__Output;
  const uuid = assertDeviceUuid(disk.uuid, 'the disk');
  switch (req.action) {
    case 'ADD': {
      const pool = ctx.rbdPool;
      const wanted = requestedBacking(disk, ctx.storage.nodeName, pool ? { imageFor: (u) => pool.imageFor(inst.name, u) } : undefined);
      const path = wanted.path || ctx.storage.defaultDiskPath(inst.name, uuid);
      const sizeBytes = wanted.create ? int64(disk.sizeBytes, `disk ${uuid} size_bytes`) : 0;
      // Created in the instance's queue once the intent is recorded: a
      // crash right after leaves an intent whose rollback deletes the file
      // (or the RBD image).
      const img = wanted.backing.rbd;
      const prepare = async (): Promise<(() => void | Promise<void>) | void> => {
        if (!wanted.create) return;
        if (img && pool) {
          await pool.create(img, sizeBytes);
          crashPoint('after-disk-file-created', ctx.log);
          return async () => void (await pool.remove(img));
        }
        const created = ctx.storage.createDisks(inst.name, [{ path, sizeBytes }]);
        crashPoint('after-disk-file-created', ctx.log);
        return () => ctx.storage.removeFiles(created);
      };
      const ioLimits = ioLimitsOfProto(disk.ioLimits, `new disk ${uuid}`);
      const req = { uuid, path, ...wanted.backing, ...(wanted.create ? { created: true } : {}), ...(ioLimits ? { io_limits: ioLimits } : {}) };
      const flavour = diskFlavour(disk);
      if (flavour === 'pmem' && ioLimits) throw invalidArgument(`pmem device ${uuid}: I/O limits apply to block disks only`);
      if (flavour === 'scsi') return withImageSize(diskReply(await inst.hotAddScsiDisk(req, prepare, opts)), img, pool);
      if (flavour === 'pmem') return diskReply(await inst.hotAddPmem({ ...req, sizeMiB: pmemMiB(uuid, sizeBytes) }, prepare, opts));
      return withImageSize(diskReply(await inst.hotAddDisk(req, prepare, opts)), img, pool);
    }
    case 'MODIFY': {
      // size_bytes > 0: the new total size; io_limits present: the limits after the change.
      const sizeBytes = int64(disk.sizeBytes, `disk ${uuid} size_bytes`);
      const change: DiskChangeRequest = {};
      if (sizeBytes > 0) change.sizeBytes = sizeBytes;
      if (disk.ioLimits) change.ioLimits = ioLimitsOfProto(disk.ioLimits, `modify of disk ${uuid}`) ?? null;
      if (change.sizeBytes === undefined && change.ioLimits === undefined) throw invalidArgument(`modify of disk ${uuid}: give a new size_bytes (a grow) and/or io_limits`);
      const r = await inst.hotModifyDisk(uuid, change, opts);
      return { ...diskReply(r.record), applied: r.applied };
    }
    case 'REMOVE': {
      // The file the node created goes with the record (device-operations.ts finishRemoval).
      const r = await inst.hotRemoveDisk(uuid, opts);
      return { ...diskReply(r.record), removalPending: r.pending };
    }
    default:
      throw invalidArgument(`disk hotplug action must be ADD, REMOVE or MODIFY, not ${req.action}`);
  }
}

export const HOTPLUG_HANDLERS: Readonly<Record<HotplugKind, Handler>> = { nic: hotplugNic, disk: hotplugDisk };
