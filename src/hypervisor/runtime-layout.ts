/**
 * The runtime file an instance spec gives: the fixed command, every NIC and
 * disk on a PCI slot, the vCPU/memory record. Used for a new instance and
 * for a stopped one whose spec changed (then devices already recorded keep
 * their slots, and the operation journal is kept). Pure: checks everything
 * (uuids, MACs, requested slots) and touches nothing; disk paths are the
 * caller's to check, with the node's HostPathPolicy (boot-files.ts).
 */
import { diskId } from './disk';
import type { DeviceKindName } from './device-kinds';
import type { DiskRequest, NicRequest } from './device-operations';
import { InvalidArgumentError } from './errors';
import { nicId, normalizeMac } from './nic';
import { DEFAULT_RESERVED_SLOTS, PciSlotMap } from './pci-slots';
import { buildFixedCommand, type InstanceSpec } from './qemu-command';
import { initialResources } from './resize';
import { assertPmemSize, pmemId, pmemRoomProblem } from './pmem';
import type { DiskRecord, HvParams, NicRecord, PmemRecord, RuntimeData, ScsiControllerRecord, ScsiDiskRecord } from './runtime-file';
import { SCSI_CONTROLLER_ID, scsiDiskId } from './scsi-disk';
import { chooseScsiAddress, type ScsiAddress } from './scsi-luns';
import { unplugTimeoutsFromHvparams } from './unplug-timeouts';

export interface SpecDevices {
  nics?: NicRequest[];
  disks?: DiskRequest[];
  hvparams?: HvParams;
}

const hvString = (hv: HvParams, key: string): string | undefined => (typeof hv[key] === 'string' ? (hv[key] as string) : undefined);

type Wanted = Array<[DeviceKindName, NicRequest | DiskRequest]>;

function checkUuids(instance: string, wanted: Wanted): void {
  const uuids = new Set<string>();
  for (const [kind, d] of wanted) {
    if (!d.uuid) throw new InvalidArgumentError(`a ${kind} of ${instance} has no uuid`);
    if (uuids.has(d.uuid)) throw new InvalidArgumentError(`uuid ${d.uuid} is given to two devices`);
    uuids.add(d.uuid);
  }
}

/** Kept (or requested) slots first, so that a new device can never take a kept one's slot; then the first free ones. */
function placeDevices(slots: PciSlotMap, wanted: Wanted, oldSlot: (uuid: string) => number | null): Map<string, number> {
  const chosen = new Map<string, number>();
  for (const [kind, d] of wanted) {
    const keep = d.slot ?? oldSlot(d.uuid);
    if (keep === null) continue;
    chosen.set(d.uuid, slots.claim(keep));
    slots.addRecorded(keep, `${kind} ${d.uuid}`);
  }
  for (const [kind, d] of wanted) {
    if (chosen.has(d.uuid)) continue;
    const s = slots.firstFree();
    chosen.set(d.uuid, s);
    slots.addRecorded(s, `${kind} ${d.uuid}`);
  }
  return chosen;
}

function diskRecord(d: DiskRequest, slot: number): DiskRecord {
  const disk: DiskRecord = { uuid: d.uuid, path: d.path, pci: slot };
  if (d.created) disk.created = true;
  diskId(disk, slot);
  return disk;
}

function pmemRecord(d: DiskRequest, slot: number): PmemRecord {
  assertPmemSize(d.sizeMiB ?? 0);
  const rec: PmemRecord = { uuid: d.uuid, path: d.path, sizeMiB: d.sizeMiB as number, pci: slot };
  if (d.created) rec.created = true;
  pmemId(rec, slot);
  return rec;
}

/** SCSI disks keep their recorded address; new ones get the first free (scsi-luns.ts). */
function scsiRecords(name: string, disks: DiskRequest[], old: RuntimeData | undefined): ScsiDiskRecord[] {
  const before = new Map((old?.scsi_disks ?? []).map((d) => [d.uuid, d]));
  const out: ScsiDiskRecord[] = [];
  const place = (d: DiskRequest, at: ScsiAddress): void => {
    const rec: ScsiDiskRecord = { uuid: d.uuid, path: d.path, target: at.target, lun: at.lun };
    if (d.created) rec.created = true;
    scsiDiskId(rec);
    out.push(rec);
  };
  for (const d of disks) {
    const was = before.get(d.uuid);
    if (was) place(d, was);
  }
  for (const d of disks) if (!before.has(d.uuid)) place(d, chooseScsiAddress(name, out));
  return disks.map((d) => out.find((r) => r.uuid === d.uuid) as ScsiDiskRecord);
}

function nicRecord(n: NicRequest, slot: number): NicRecord {
  const nic: NicRecord = { uuid: n.uuid, mac: normalizeMac(n.mac), pci: slot };
  if (n.link) nic.link = n.link;
  nicId(nic, slot);
  return nic;
}

/** The runtime data for `spec`; `old`, the instance's current data, keeps slots and the journal. */
export function layoutRuntime(spec: InstanceSpec, devices: SpecDevices, old?: RuntimeData): RuntimeData {
  const name = spec.name;
  if (old && old.instance !== name) throw new InvalidArgumentError(`spec names instance ${name}, not ${old.instance}`);
  const kvmCmd = buildFixedCommand(spec);
  const hvparams = { ...(devices.hvparams ?? {}) };
  unplugTimeoutsFromHvparams(hvparams, name);
  const allDisks = devices.disks ?? [];
  const scsiDisks = allDisks.filter((d) => d.bus === 'scsi');
  const pmems = allDisks.filter((d) => d.type === 'pmem' && d.bus !== 'scsi');
  const blkDisks = allDisks.filter((d) => !d.bus && !d.type);
  if (allDisks.some((d) => d.bus === 'scsi' && d.type === 'pmem')) throw new InvalidArgumentError(`a pmem device of ${name} cannot be on the SCSI bus`);
  const wanted: Wanted = [
    ...blkDisks.map((d): [DeviceKindName, DiskRequest] => ['disk', d]),
    ...pmems.map((d): [DeviceKindName, DiskRequest] => ['pmem', d]),
    ...scsiDisks.map((d): [DeviceKindName, DiskRequest] => ['scsi-disk', d]),
    ...(devices.nics ?? []).map((n): [DeviceKindName, NicRequest] => ['nic', n]),
  ];
  checkUuids(name, wanted);
  const pciWanted = wanted.filter(([kind]) => kind !== 'scsi-disk');
  const recorded = new Map<string, number | null>([...(old?.nics ?? []), ...(old?.block_devices ?? []), ...(old?.pmem_devices ?? [])].filter((r) => r.uuid).map((r) => [r.uuid, r.pci]));
  const slots = new PciSlotMap(name, DEFAULT_RESERVED_SLOTS);
  // The controller keeps its slot when it has SCSI disks again, before anything else is placed.
  const keepCtrl = scsiDisks.length && old?.scsi_controller ? old.scsi_controller.pci : undefined;
  if (keepCtrl !== undefined) slots.addRecorded(slots.claim(keepCtrl), SCSI_CONTROLLER_ID);
  const chosen = placeDevices(slots, pciWanted, (uuid) => recorded.get(uuid) ?? null);
  let controller: ScsiControllerRecord | undefined;
  if (scsiDisks.length) {
    controller = { id: SCSI_CONTROLLER_ID, pci: keepCtrl ?? slots.firstFree() };
    if (keepCtrl === undefined) slots.addRecorded(controller.pci, SCSI_CONTROLLER_ID);
  }
  const oldVmemSlot = old?.resources?.virtioMem?.pci;
  const resources = initialResources(spec, hvString(hvparams, 'memory_hotplug'), () => {
    const slot = oldVmemSlot !== undefined && !slots.holderOf(oldVmemSlot) ? oldVmemSlot : slots.firstFree();
    slots.addRecorded(slot, 'virtio-mem');
    return slot;
  });
  const data: RuntimeData = {
    version: 2,
    instance: name,
    kvm_cmd: kvmCmd,
    nics: (devices.nics ?? []).map((n) => nicRecord(n, chosen.get(n.uuid) as number)),
    hvparams,
    block_devices: blkDisks.map((d) => diskRecord(d, chosen.get(d.uuid) as number)),
    ...(scsiDisks.length ? { scsi_disks: scsiRecords(name, scsiDisks, old), scsi_controller: controller } : {}),
    ...(pmems.length ? { pmem_devices: pmems.map((d) => pmemRecord(d, chosen.get(d.uuid) as number)) } : {}),
    resources,
    ...(old?.operations ? { operations: old.operations } : {}),
  };
  const pmemMiB = (data.pmem_devices ?? []).reduce((n, p) => n + p.sizeMiB, 0);
  const roomProblem = pmemMiB ? pmemRoomProblem(name, resources, { ...data, pmem_devices: [] }, pmemMiB) : undefined;
  if (roomProblem) throw new InvalidArgumentError(roomProblem);
  return data;
}
