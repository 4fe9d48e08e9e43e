/**
 * The runtime file an instance spec gives: the fixed command, every NIC and
 * disk on a PCI slot, the vCPU/memory record. Used for a new instance and
 * for a stopped one whose spec changed (then devices already recorded keep
 * their slots, and the operation journal is kept). Pure: checks everything
 * (uuids, MACs, requested slots) and touches nothing; disk paths are the
 * caller's to check, with the node's HostPathPolicy (boot-files.ts).
 */
import { backingFields } from './disk-template';
import { diskId } from './disk';
import type { DeviceKindName } from './device-kinds';
import { nicExtras, type DiskRequest, type NicRequest } from './device-operations';
import { InvalidArgumentError } from './errors';
import { nicId, normalizeMac, validateNicParams } from './nic';
import { PciTreeMap, type PciPlacement } from './pci-slots';
import { machineOf, pciTopology, placementProblem, withTopologyDefaults, type PciTopology } from './pci-topology';
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

/**
 * Kept (or requested) places first, so that a new device can never take a
 * kept one's place; then the first free ones (bus 0, then the bridges; or
 * the root ports). A kept place the new tree no longer has (fewer bridges
 * or ports) is given up: the device is placed anew. A requested one must
 * exist.
 */
function placeDevices(tree: PciTreeMap, topology: PciTopology, wanted: Wanted, oldPlace: (uuid: string) => PciPlacement | null): Map<string, PciPlacement> {
  const chosen = new Map<string, PciPlacement>();
  for (const [kind, d] of wanted) {
    const requested = d.slot !== undefined ? (d.bus === undefined ? { slot: d.slot } : { bus: d.bus, slot: d.slot }) : null;
    const old = requested ? null : oldPlace(d.uuid);
    if (old && (placementProblem(topology, old.bus, old.slot) || tree.holderOf(old))) continue;
    const keep = requested ?? old;
    if (keep === null) continue;
    chosen.set(d.uuid, tree.claim(keep));
    tree.addRecorded(keep, `${kind} ${d.uuid}`);
  }
  for (const [kind, d] of wanted) {
    if (chosen.has(d.uuid)) continue;
    const p = tree.firstFree();
    chosen.set(d.uuid, p);
    tree.addRecorded(p, `${kind} ${d.uuid}`);
  }
  return chosen;
}

const placeFields = (p: PciPlacement): { pci: number; bus?: string } => (p.bus === undefined ? { pci: p.slot } : { pci: p.slot, bus: p.bus });

function diskRecord(d: DiskRequest, p: PciPlacement): DiskRecord {
  const disk: DiskRecord = { uuid: d.uuid, path: d.path, ...placeFields(p), ...backingFields(d) };
  if (d.created) disk.created = true;
  diskId(disk, p.slot);
  return disk;
}

function pmemRecord(d: DiskRequest, p: PciPlacement): PmemRecord {
  assertPmemSize(d.sizeMiB ?? 0);
  const rec: PmemRecord = { uuid: d.uuid, path: d.path, sizeMiB: d.sizeMiB as number, ...placeFields(p) };
  if (d.created) rec.created = true;
  pmemId(rec, p.slot);
  return rec;
}

/** SCSI disks keep their recorded address; new ones get the first free (scsi-luns.ts). */
function scsiRecords(name: string, disks: DiskRequest[], old: RuntimeData | undefined): ScsiDiskRecord[] {
  const before = new Map((old?.scsi_disks ?? []).map((d) => [d.uuid, d]));
  const out: ScsiDiskRecord[] = [];
  const place = (d: DiskRequest, at: ScsiAddress): void => {
    const rec: ScsiDiskRecord = { uuid: d.uuid, path: d.path, target: at.target, lun: at.lun, ...backingFields(d) };
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

/**
 * The SCSI controller's place at start: the recorded one while the tree still
 * has it and it is free, else a free slot of the root bus, where it is fixed
 * like the virtio-mem device (on q35 an integrated endpoint of pcie.0, which
 * the guest cannot eject, and no root port is used); only when the root bus
 * is full, the first free place of the tree. (A controller hot-added with the
 * first SCSI disk takes a hot-pluggable place from the slot owner instead.)
 */
function placeController(tree: PciTreeMap, topology: PciTopology, old: ScsiControllerRecord | undefined): ScsiControllerRecord {
  const was: PciPlacement | undefined = old ? (old.bus === undefined ? { slot: old.pci } : { bus: old.bus, slot: old.pci }) : undefined;
  const onRoot = (): PciPlacement | undefined => {
    try {
      return { slot: tree.firstFreeOnRoot() };
    } catch {
      return undefined;
    }
  };
  const place = was && !placementProblem(topology, was.bus, was.slot) && !tree.holderOf(was) ? was : onRoot() ?? tree.firstFree();
  tree.addRecorded(place, SCSI_CONTROLLER_ID);
  return { id: SCSI_CONTROLLER_ID, ...placeFields(place) };
}

function nicRecord(n: NicRequest, p: PciPlacement, maxVcpus: number): NicRecord {
  const nic: NicRecord = { uuid: n.uuid, mac: normalizeMac(n.mac), ...placeFields(p), ...nicExtras(n) };
  if (n.link) nic.link = n.link;
  validateNicParams(nic, maxVcpus);
  nicId(nic, p.slot);
  return nic;
}

/** The runtime data for `spec`; `old`, the instance's current data, keeps slots and the journal. */
export function layoutRuntime(spec: InstanceSpec, devices: SpecDevices, old?: RuntimeData): RuntimeData {
  const name = spec.name;
  if (old && old.instance !== name) throw new InvalidArgumentError(`spec names instance ${name}, not ${old.instance}`);
  const kvmCmd = buildFixedCommand(spec);
  const allDisks = devices.disks ?? [];
  const scsiDisks = allDisks.filter((d) => d.diskBus === 'scsi');
  const pmems = allDisks.filter((d) => d.diskType === 'pmem' && d.diskBus !== 'scsi');
  const blkDisks = allDisks.filter((d) => !d.diskBus && !d.diskType);
  const templated = pmems.find((d) => d.template !== undefined);
  if (templated) throw new InvalidArgumentError(`pmem device ${templated.uuid} of ${name} is a file the node makes; it cannot be a ${templated.template} disk`);
  if (allDisks.some((d) => d.diskBus === 'scsi' && d.diskType === 'pmem')) throw new InvalidArgumentError(`a pmem device of ${name} cannot be on the SCSI bus`);
  const wanted: Wanted = [
    ...blkDisks.map((d): [DeviceKindName, DiskRequest] => ['disk', d]),
    ...pmems.map((d): [DeviceKindName, DiskRequest] => ['pmem', d]),
    ...scsiDisks.map((d): [DeviceKindName, DiskRequest] => ['scsi-disk', d]),
    ...(devices.nics ?? []).map((n): [DeviceKindName, NicRequest] => ['nic', n]),
  ];
  // The tree's sizes are fixed here, in the runtime file, so that restarts and migration targets build the same tree.
  // Root ports (q35) for every PCI device: SCSI disks share their controller's.
  const pciDevices = wanted.length - scsiDisks.length + (scsiDisks.length ? 1 : 0);
  const hvparams = withTopologyDefaults(devices.hvparams ?? {}, machineOf(kvmCmd), pciDevices, spec.maxMemoryMiB || spec.memoryMiB);
  unplugTimeoutsFromHvparams(hvparams, name);
  checkUuids(name, wanted);
  const pciWanted = wanted.filter(([kind]) => kind !== 'scsi-disk');
  const recorded = new Map<string, PciPlacement | null>(
    [...(old?.nics ?? []), ...(old?.block_devices ?? []), ...(old?.pmem_devices ?? [])]
      .filter((r) => r.uuid)
      .map((r) => [r.uuid, r.pci === null ? null : r.bus === undefined ? { slot: r.pci } : { bus: r.bus, slot: r.pci }]),
  );
  const topology = pciTopology({ kvm_cmd: kvmCmd, hvparams });
  const tree = new PciTreeMap(name, topology);
  // The controller keeps its place when it has SCSI disks again, before anything new is placed.
  const oldCtrl = scsiDisks.length ? old?.scsi_controller : undefined;
  const keptCtrl = oldCtrl && !placementProblem(topology, oldCtrl.bus, oldCtrl.pci) ? placeController(tree, topology, oldCtrl) : undefined;
  const chosen = placeDevices(tree, topology, pciWanted, (uuid) => recorded.get(uuid) ?? null);
  const controller = scsiDisks.length ? keptCtrl ?? placeController(tree, topology, undefined) : undefined;
  // virtio-mem always sits on the root bus (on q35 an integrated endpoint of pcie.0: fixed, the guest cannot eject it).
  const oldVmemSlot = old?.resources?.virtioMem?.pci;
  const resources = initialResources(spec, hvString(hvparams, 'memory_hotplug'), () => {
    const slot = oldVmemSlot !== undefined && !tree.holderOf({ slot: oldVmemSlot }) && !placementProblem(topology, undefined, oldVmemSlot) ? oldVmemSlot : tree.firstFreeOnRoot();
    tree.addRecorded({ slot }, 'virtio-mem');
    return slot;
  });
  const data: RuntimeData = {
    version: 2,
    instance: name,
    kvm_cmd: kvmCmd,
    nics: (devices.nics ?? []).map((n) => nicRecord(n, chosen.get(n.uuid) as PciPlacement, spec.maxVcpus ?? spec.vcpus)),
    hvparams,
    block_devices: blkDisks.map((d) => diskRecord(d, chosen.get(d.uuid) as PciPlacement)),
    ...(scsiDisks.length ? { scsi_disks: scsiRecords(name, scsiDisks, old), scsi_controller: controller } : {}),
    ...(pmems.length ? { pmem_devices: pmems.map((d) => pmemRecord(d, chosen.get(d.uuid) as PciPlacement)) } : {}),
    resources,
    ...(old?.operations ? { operations: old.operations } : {}),
  };
  const pmemMiB = (data.pmem_devices ?? []).reduce((n, p) => n + p.sizeMiB, 0);
  const roomProblem = pmemMiB ? pmemRoomProblem(name, resources, { ...data, pmem_devices: [] }, pmemMiB) : undefined;
  if (roomProblem) throw new InvalidArgumentError(roomProblem);
  return data;
}
