/**
 * Conversions between the proto messages (src/generated) and the hypervisor
 * layer: InstanceSpec -> machine spec and device requests, runtime file ->
 * InstanceRuntime.
 */
import * as fs from 'node:fs';
import { checkHvparams } from '../common/hvparams';
import { normalizeMacWith } from '../common/mac';
import type { DiskRequest, NicRequest } from '../hypervisor/kvm-instance';
import type { GuestState } from '../hypervisor/guest-console';
import type { InstanceSpec as MachineSpec } from '../hypervisor/qemu-command';
import type { DiskRecord, HvParams, NicRecord, RuntimeData } from '../hypervisor/runtime-file';
import { deviceId } from '../hypervisor/device-id';
import { devNumbers } from '../hypervisor/disk-size';
import { pciTopology } from '../hypervisor/pci-topology';
import { currentMemoryMiB, currentVcpus, type ResourceState } from '../hypervisor/resize';
import type { Resources } from '../generated/gnt/node/v1/Resources';
import type { HostPathPolicy } from '../hypervisor/host-paths';
import type { RbdImage } from '../hypervisor/disk-template';
import { assertInstanceName } from '../hypervisor/instance-paths';
import type { Disk } from '../generated/gnt/node/v1/Disk';
import type { GuestView } from '../generated/gnt/node/v1/GuestView';
import type { InstanceRuntime } from '../generated/gnt/node/v1/InstanceRuntime';
import type { InstanceSpec__Output } from '../generated/gnt/node/v1/InstanceSpec';
import type { Nic } from '../generated/gnt/node/v1/Nic';
import { invalidArgument } from './status';
import { assertDeviceUuid, type NewDisk, type Storage } from './storage';
import { excerpt } from '../common/excerpt';
import { NIC_MODEL_NAMES, type NicModelName } from '../common/nic-params';
import { anyDiskToProto, backingToProto, diskFlavour, pmemMiB, requestedBacking } from './disk-kinds';
import { ioLimitsOfProto, ioLimitsToProto } from './disk-io-limits-proto';

/** A NIC's MAC by the rule the master applies too (src/common/mac.ts), same words; lower case. */
export function checkNicMac(mac: string): string {
  return normalizeMacWith(mac, invalidArgument);
}

/** A Nic message's link_state ("" = up) and model ("" = virtio), checked. */
export function nicEnums(nic: Pick<Nic, 'linkState' | 'model'>, what: string): { link_state: 'up' | 'down'; model: NicModelName } {
  const linkState = nic.linkState || 'up';
  if (linkState !== 'up' && linkState !== 'down') throw invalidArgument(`${what}: link_state must be up or down, not ${excerpt(linkState)}`);
  const model = (nic.model || 'virtio') as NicModelName;
  if (!NIC_MODEL_NAMES.includes(model)) throw invalidArgument(`${what}: model must be one of ${NIC_MODEL_NAMES.join(', ')}, not ${excerpt(nic.model)}`);
  return { link_state: linkState, model };
}

/** The NIC request of a Nic message (ADD, a spec's NIC): defaults left out; the hypervisor checks ranges. */
export function nicRequestOf(n: Pick<Nic, 'uuid' | 'link' | 'linkState' | 'rateMbit' | 'queues' | 'model'>, mac: string, what: string): NicRequest {
  const { link_state, model } = nicEnums(n, what);
  const req: NicRequest = { uuid: n.uuid as string, mac };
  if (n.link) req.link = n.link;
  if (link_state === 'down') req.link_state = 'down';
  if (n.rateMbit) req.rate_mbit = n.rateMbit;
  if (n.queues && n.queues > 1) req.queues = n.queues;
  if (model !== 'virtio') req.model = model;
  return req;
}

/** hvparams that select the machine rather than being kept as hvparams. */
const MACHINE_KEYS = ['machine', 'accel'] as const;

/** An int64 field (a decimal string with longs=String) as a safe integer. */
export function int64(value: string | number, what: string): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${what} must be a non-negative integer, not ${value}`);
  return n;
}

export interface StartPlan {
  machine: MachineSpec;
  nics: NicRequest[];
  disks: DiskRequest[];
  hvparams: HvParams;
  /** Disks with no path: files the node creates if missing. */
  newDisks: NewDisk[];
  /** RBD disks the node makes (`<instance>-<disk uuid>` in its pool): created if missing. */
  newImages: NewImage[];
}

/** An RBD image the node makes for a disk, if it is missing. */
export interface NewImage {
  image: RbdImage;
  sizeBytes: number;
}

/** Validates a spec and turns it into what KvmInstance needs. Touches nothing. */
export function planStart(spec: InstanceSpec__Output, storage: Storage, rbd?: { imageFor(instance: string, diskUuid: string): RbdImage }): StartPlan {
  assertInstanceName(spec.name);
  const hv = spec.hvparams ?? {};
  checkHvparams(hv, (m) => invalidArgument(`instance ${spec.name}: ${m}`));
  const machine: MachineSpec = {
    name: spec.name,
    uuid: spec.uuid || undefined,
    memoryMiB: int64(spec.memoryMib, 'memory_mib'),
    maxMemoryMiB: int64(spec.maxmemMib, 'maxmem_mib') || undefined,
    vcpus: spec.vcpus,
    maxVcpus: spec.maxvcpus || undefined,
    kernel: spec.kernel,
    initrd: spec.initrd || undefined,
    kernelArgs: spec.kernelArgs || undefined,
    machine: hv.machine || undefined,
    accel: hv.accel || undefined,
  };
  if (!machine.kernel) throw invalidArgument(`instance ${spec.name}: kernel is required (boot is by direct kernel only)`);
  if (!machine.kernel.startsWith('/')) throw invalidArgument(`instance ${spec.name}: kernel path ${excerpt(machine.kernel)} is not absolute`);
  const hvparams: HvParams = {};
  for (const [k, v] of Object.entries(hv)) if (!(MACHINE_KEYS as readonly string[]).includes(k)) hvparams[k] = v;
  const newDisks: NewDisk[] = [];
  const newImages: NewImage[] = [];
  const images = rbd ? { imageFor: (u: string) => rbd.imageFor(spec.name, u) } : undefined;
  const disks = spec.disks.map((d, i): DiskRequest => {
    assertDeviceUuid(d.uuid, `disk ${i} of ${spec.name}`);
    const flavour = diskFlavour(d);
    const limits = ioLimitsOfProto(d.ioLimits, `disk ${d.uuid} of ${spec.name}`);
    if (limits && flavour === 'pmem') throw invalidArgument(`pmem device ${d.uuid} of ${spec.name}: I/O limits apply to block disks only`);
    const bus = { ...(flavour === 'scsi' ? { diskBus: 'scsi' as const } : {}), ...(limits ? { io_limits: limits } : {}) };
    const wanted = requestedBacking(d, storage.nodeName, images);
    if (!wanted.create) return { uuid: d.uuid, path: wanted.path, ...bus, ...wanted.backing };
    const sizeBytes = int64(d.sizeBytes, `disk ${d.uuid} size_bytes`);
    if (wanted.backing.rbd) {
      newImages.push({ image: wanted.backing.rbd, sizeBytes });
      return { uuid: d.uuid, path: wanted.path, created: true, ...bus, ...wanted.backing };
    }
    const path = storage.defaultDiskPath(spec.name, d.uuid);
    newDisks.push({ path, sizeBytes });
    if (flavour === 'pmem') return { uuid: d.uuid, path, created: true, diskType: 'pmem', sizeMiB: pmemMiB(d.uuid, sizeBytes) };
    return { uuid: d.uuid, path, created: true, ...bus };
  });
  const nics = spec.nics.map((n, i): NicRequest => {
    assertDeviceUuid(n.uuid, `NIC ${i} of ${spec.name}`);
    const mac = checkNicMac(n.mac);
    return nicRequestOf(n, mac, `NIC ${i} of ${spec.name}`);
  });
  return { machine, nics, disks, hvparams, newDisks, newImages };
}

/**
 * Checks every host path of a plan with the node's HostPathPolicy, by
 * resolution (opens and closes each): the kernel and initrd beneath the
 * image directory, every given disk beneath the storage directory or an
 * allow-listed block device, every disk to create at a place beneath the
 * storage directory. Run before anything is created.
 */
export function assertPlanHostPaths(plan: StartPlan, hostPaths: HostPathPolicy): void {
  hostPaths.checkBootFile(plan.machine.kernel, 'kernel');
  if (plan.machine.initrd) hostPaths.checkBootFile(plan.machine.initrd, 'initrd');
  for (const d of plan.disks) {
    if (d.template === 'rbd') continue; // no host path: QEMU's rbd driver opens the image
    if (d.created) hostPaths.assertNewDiskPath(d.path);
    else hostPaths.checkDisk(d.path);
  }
}

/** The device id, or "" when the record has none (no slot or uuid, e.g. from an old runtime file). */
function idOf(kind: 'nic' | 'disk', rec: NicRecord | DiskRecord): string {
  if (rec.pci === null || !rec.uuid) return '';
  try {
    return deviceId(kind, rec.uuid, rec.pci, rec.bus);
  } catch {
    return '';
  }
}

/** The QEMU id of the record's PCI bus: its bridge or root port, else the machine's root bus (`rootBus`: pci.0 or pcie.0; "" when not known). */
const pciBusOf = (rec: NicRecord | DiskRecord, rootBus: string): string => (rec.pci === null ? '' : rec.bus ?? rootBus);

/** The root bus's QEMU id of an instance (pci.0, pcie.0); "" when its tree cannot be built. */
export function rootBusOf(data: RuntimeData): string {
  try {
    return pciTopology(data).buses[0].name;
  } catch {
    return '';
  }
}

export function nicToProto(n: NicRecord, rootBus = ''): Nic {
  return {
    uuid: n.uuid,
    mac: n.mac,
    link: n.link ?? '',
    pci: n.pci ?? -1,
    deviceId: idOf('nic', n),
    pciBus: pciBusOf(n, rootBus),
    tap: n.tap ?? '',
    state: n.state ?? '',
    linkState: n.link_state ?? 'up',
    rateMbit: n.rate_mbit ?? 0,
    queues: n.queues ?? 1,
    model: n.model ?? 'virtio',
  };
}

/** The size of a disk file or block device (from sysfs, by its device number); 0 when unknown. */
function fileSize(file: string): number {
  try {
    const st = fs.statSync(file);
    if (st.isFile()) return st.size;
    if (!st.isBlockDevice()) return 0;
    const { major, minor } = devNumbers(st.rdev);
    return Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512 || 0;
  } catch {
    return 0;
  }
}

export function diskToProto(d: DiskRecord, rootBus = ''): Disk {
  const limits = ioLimitsToProto(d.io_limits);
  return {
    ...(limits ? { ioLimits: limits } : {}),
    uuid: d.uuid,
    sizeBytes: String(fileSize(d.path) || d.size_bytes || 0),
    path: d.path,
    pci: d.pci ?? -1,
    deviceId: idOf('disk', d),
    pciBus: pciBusOf(d, rootBus),
    state: d.state ?? '',
    ...backingToProto(d),
  };
}

export function guestToProto(g: GuestState | undefined): GuestView {
  if (!g) return { known: false, nics: [], disks: [], cpusOnline: '', memTotalKib: '0' };
  return {
    known: true,
    nics: g.nets.map((n) => `${n.name} ${n.mac} ${n.pci} ${n.queues} ${n.carrier}`),
    disks: g.blks.map((b) => `${b.name} ${b.sectors} ${b.pci}${b.scsi !== '-' ? ` ${b.scsi}` : ''}`),
    cpusOnline: g.cpusOnline,
    memTotalKib: String(g.memTotalKiB),
  };
}

export function resourcesToProto(r: ResourceState): Resources {
  return {
    bootVcpus: r.bootVcpus,
    vcpus: currentVcpus(r),
    maxVcpus: r.maxVcpus,
    bootMemoryMib: String(r.bootMemoryMiB),
    memoryMib: String(currentMemoryMiB(r)),
    maxMemoryMib: String(r.maxMemoryMiB),
    memoryHotplug: r.memoryHotplug,
    pendingMemoryMib: String(r.pendingMemoryMiB ?? -1),
  };
}

export function runtimeToProto(
  data: RuntimeData,
  pid: number | undefined,
  guest: GuestState | undefined,
): InstanceRuntime {
  const root = rootBusOf(data);
  return {
    name: data.instance,
    running: pid !== undefined,
    pid: pid ?? 0,
    nics: data.nics.map((n) => nicToProto(n, root)),
    disks: [...data.block_devices, ...(data.scsi_disks ?? []), ...(data.pmem_devices ?? [])].map((d) => anyDiskToProto(d, (x) => diskToProto(x, root))),
    guest: guestToProto(pid !== undefined ? guest : undefined),
    ...(data.resources ? { resources: resourcesToProto(data.resources) } : {}),
  };
}
