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
import { DEFAULT_RESERVED_SLOTS, PciSlotMap } from './pci-slots';
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

function nicRecord(n: NicRequest, slot: number, maxVcpus: number): NicRecord {
  const nic: NicRecord = { uuid: n.uuid, mac: normalizeMac(n.mac), pci: slot, ...nicExtras(n) };
  if (n.link) nic.link = n.link;
  validateNicParams(nic, maxVcpus);
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
  const wanted: Wanted = [
    ...(devices.disks ?? []).map((d): [DeviceKindName, DiskRequest] => ['disk', d]),
    ...(devices.nics ?? []).map((n): [DeviceKindName, NicRequest] => ['nic', n]),
  ];
  checkUuids(name, wanted);
  const recorded = new Map<string, number | null>([...(old?.nics ?? []), ...(old?.block_devices ?? [])].filter((r) => r.uuid).map((r) => [r.uuid, r.pci]));
  const slots = new PciSlotMap(name, DEFAULT_RESERVED_SLOTS);
  const chosen = placeDevices(slots, wanted, (uuid) => recorded.get(uuid) ?? null);
  const oldVmemSlot = old?.resources?.virtioMem?.pci;
  const resources = initialResources(spec, hvString(hvparams, 'memory_hotplug'), () => {
    const slot = oldVmemSlot !== undefined && !slots.holderOf(oldVmemSlot) ? oldVmemSlot : slots.firstFree();
    slots.addRecorded(slot, 'virtio-mem');
    return slot;
  });
  return {
    version: 2,
    instance: name,
    kvm_cmd: kvmCmd,
    nics: (devices.nics ?? []).map((n) => nicRecord(n, chosen.get(n.uuid) as number, spec.maxVcpus ?? spec.vcpus)),
    hvparams,
    block_devices: (devices.disks ?? []).map((d) => diskRecord(d, chosen.get(d.uuid) as number)),
    resources,
    ...(old?.operations ? { operations: old.operations } : {}),
  };
}
