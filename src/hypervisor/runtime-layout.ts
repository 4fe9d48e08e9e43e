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
import { nicExtras, type DiskRequest, type NicRequest } from './device-operations';
import { InvalidArgumentError } from './errors';
import { nicId, normalizeMac, validateNicParams } from './nic';
import { PciTreeMap, type PciPlacement } from './pci-slots';
import { machineOf, pciTopology, placementProblem, withTopologyDefaults, type PciTopology } from './pci-topology';
import { buildFixedCommand, type InstanceSpec } from './qemu-command';
import { initialResources } from './resize';
import type { DiskRecord, HvParams, NicRecord, RuntimeData } from './runtime-file';
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
  const disk: DiskRecord = { uuid: d.uuid, path: d.path, ...placeFields(p) };
  if (d.created) disk.created = true;
  diskId(disk, p.slot);
  return disk;
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
  const wanted: Wanted = [
    ...(devices.disks ?? []).map((d): [DeviceKindName, DiskRequest] => ['disk', d]),
    ...(devices.nics ?? []).map((n): [DeviceKindName, NicRequest] => ['nic', n]),
  ];
  // The tree's sizes are fixed here, in the runtime file, so that restarts and migration targets build the same tree.
  const hvparams = withTopologyDefaults(devices.hvparams ?? {}, machineOf(kvmCmd), wanted.length, spec.maxMemoryMiB || spec.memoryMiB);
  unplugTimeoutsFromHvparams(hvparams, name);
  checkUuids(name, wanted);
  const recorded = new Map<string, PciPlacement | null>(
    [...(old?.nics ?? []), ...(old?.block_devices ?? [])].filter((r) => r.uuid).map((r) => [r.uuid, r.pci === null ? null : r.bus === undefined ? { slot: r.pci } : { bus: r.bus, slot: r.pci }]),
  );
  const topology = pciTopology({ kvm_cmd: kvmCmd, hvparams });
  const tree = new PciTreeMap(name, topology);
  const chosen = placeDevices(tree, topology, wanted, (uuid) => recorded.get(uuid) ?? null);
  // virtio-mem always sits on the root bus (on q35 an integrated endpoint of pcie.0: fixed, the guest cannot eject it).
  const oldVmemSlot = old?.resources?.virtioMem?.pci;
  const resources = initialResources(spec, hvString(hvparams, 'memory_hotplug'), () => {
    const slot = oldVmemSlot !== undefined && !tree.holderOf({ slot: oldVmemSlot }) && !placementProblem(topology, undefined, oldVmemSlot) ? oldVmemSlot : tree.firstFreeOnRoot();
    tree.addRecorded({ slot }, 'virtio-mem');
    return slot;
  });
  return {
    version: 2,
    instance: name,
    kvm_cmd: kvmCmd,
    nics: (devices.nics ?? []).map((n) => nicRecord(n, chosen.get(n.uuid) as PciPlacement, spec.maxVcpus ?? spec.vcpus)),
    hvparams,
    block_devices: (devices.disks ?? []).map((d) => diskRecord(d, chosen.get(d.uuid) as PciPlacement)),
    resources,
    ...(old?.operations ? { operations: old.operations } : {}),
  };
}
