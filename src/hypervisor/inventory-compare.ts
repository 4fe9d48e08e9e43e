/**
 * The runtime file against what QEMU has (pure; tested on lists captured
 * from QEMU 10): its NIC and disk records against QEMU's devices, backends no
 * device uses, hot-added vCPUs and memory, and a stopped instance's pending
 * states. compareInstance adds the host's side (host-compare.ts).
 */
import { pciTopology } from './pci-topology';
import { allDevices, DEVICE_KINDS, type DeviceKindName as RecordKind } from './device-kinds';
import { compareTaps, type BridgeExists } from './host-compare';
import { compareDiskSizes } from './disk-size-compare';
import type { HostTap } from './host-inventory';
import {
  aboutRecord,
  describeRecord,
  dropRecord,
  finding,
  idOfRecord,
  note,
  type AnyRecord,
  type DeviceKind,
  type Finding,
  type Repair,
} from './inventory-findings';
import { backendId } from './memory';
import { NIC_MODELS, nicModel } from './nic';
import type { MemoryDevice, QemuInventory } from './qemu-inventory';
import type { NicRecord, RuntimeData } from './runtime-file';
import { AGENT_CONTROLLER_ID, AGENT_PORT_ID } from './guest-agent-channel';

type Resources = NonNullable<RuntimeData['resources']>;

/** The QOM type of each record kind's device (a NIC's by its model: qomTypeOf). */
const QOM_TYPE: Record<RecordKind, string> = { nic: 'virtio-net-pci', disk: 'virtio-blk-pci', 'scsi-disk': 'scsi-hd', pmem: 'virtio-pmem-pci' };
/** The QOM type a record's device must have (a NIC's by its model). */
const qomTypeOf = (kind: RecordKind, rec: AnyRecord): string => (kind === 'nic' ? NIC_MODELS[nicModel(rec as NicRecord)] : QOM_TYPE[kind]);
const NIC_TYPES = new Set<string>(Object.values(NIC_MODELS));
const SCSI_CONTROLLER_TYPE = 'virtio-scsi-pci';

const records = (rt: RuntimeData): Array<[RecordKind, AnyRecord]> => allDevices(rt).map(([kind, rec]): [RecordKind, AnyRecord] => [kind.name, rec]);

/** The device ids the runtime file accounts for (NICs, disks, vCPUs, DIMMs, virtio-mem). */
/** The bridges and root ports of the instance's tree (pci-topology.ts): QEMU's own part of the layout, not devices to remove. */
function controllerIds(rt: RuntimeData): string[] {
  try {
    return pciTopology(rt).buses.flatMap((b) => (b.id ? [b.id] : []));
  } catch {
    return [];
  }
}

export function recordedIds(rt: RuntimeData): Set<string> {
  const ids = new Set<string>();
  for (const [kind, rec] of records(rt)) {
    const id = idOfRecord(kind, rec);
    if (id !== undefined) ids.add(id);
  }
  const r = rt.resources;
  for (const c of r?.cpus ?? []) ids.add(c.id);
  for (const d of r?.dimms ?? []) ids.add(d.id);
  if (r?.virtioMem) ids.add(r.virtioMem.id);
  for (const id of controllerIds(rt)) ids.add(id);
  if (rt.scsi_controller) ids.add(rt.scsi_controller.id);
  if (rt.agent_channel) for (const id of [AGENT_CONTROLLER_ID, AGENT_PORT_ID]) ids.add(id);
  return ids;
}

/** The kind of a QEMU device by its QOM type. */
export function kindOfType(type: string): DeviceKind {
  if (NIC_TYPES.has(type)) return 'nic';
  if (type === QOM_TYPE.disk || type === QOM_TYPE['scsi-disk']) return 'disk'; // a block node and an fdset to release
  if (type.endsWith('-cpu')) return 'cpu';
  if (type === 'pc-dimm') return 'dimm';
  return 'other';
}

// ---- NIC and disk records against QEMU's devices --------------------------

/** An "attaching" or "detaching" record, by whether QEMU has its device. */
function pendingFinding(kind: RecordKind, rec: AnyRecord, device: string, present: boolean): Finding {
  if (rec.state === 'attaching') {
    return present
      ? finding(device, 'attach-unconfirmed', 'hot-add recorded as unconfirmed ("attaching"), but QEMU has the device', { kind: 'complete-attach', record: kind, uuid: rec.uuid })
      : finding(device, 'attach-failed', 'hot-add recorded as unconfirmed ("attaching"), and QEMU has no such device', dropRecord(kind, rec.uuid));
  }
  return present
    ? note(device, 'removal-pending', 'removal pending: the guest has not released the device yet')
    : finding(device, 'removal-unfinished', 'removal pending ("detaching"), but QEMU no longer has the device', dropRecord(kind, rec.uuid));
}

/** A NIC's MAC and netdev as QEMU has them. */
function nicBackendFindings(nic: NicRecord, id: string, device: string, q: QemuInventory): Finding[] {
  const client = q.net.find((c) => c.id === id && c.type === 'nic');
  const out: Finding[] = [];
  if (client?.mac && client.mac !== nic.mac) out.push(finding(device, 'mac-differs', `QEMU has MAC ${client.mac}, the runtime file ${nic.mac}`));
  if (client && !client.peer) out.push(finding(device, 'no-backend', 'QEMU has the NIC without a backend (no netdev)'));
  return out;
}

/** A disk's block node. */
function diskBackendFindings(id: string, device: string, q: QemuInventory): Finding[] {
  return q.blockNodes.some((n) => n.nodeName === id) ? [] : [finding(device, 'no-backend', `QEMU has no block node ${id} for it`)];
}

/** A pmem device's memory backend, as query-memory-devices shows it in use. */
function pmemBackendFindings(id: string, device: string, q: QemuInventory): Finding[] {
  return q.memoryDevices.some((m) => m.type === 'virtio-pmem' && m.id === id) ? [] : [finding(device, 'no-backend', `QEMU lists no virtio-pmem memory device ${id}`)];
}

/** The SCSI controller: recorded with SCSI disks on it, QEMU must have it (as a virtio-scsi-pci at its slot). */
function compareScsiController(rt: RuntimeData, q: QemuInventory): Finding[] {
  const c = rt.scsi_controller;
  if (!c) return [];
  const device = `SCSI controller ${c.id}`;
  const type = q.peripheral.get(c.id);
  if (type === undefined) {
    if (!(rt.scsi_disks ?? []).length) return [];
    return [finding(device, 'record-without-device', `recorded at PCI slot ${c.pci} with ${(rt.scsi_disks ?? []).length} SCSI disks on it, QEMU has no such device (the disks' hot-add re-creates it)`)];
  }
  if (type !== SCSI_CONTROLLER_TYPE) return [finding(device, 'wrong-type', `QEMU has it as a ${type}, not a ${SCSI_CONTROLLER_TYPE}`)];
  const fn = q.pci.find((p) => p.qdevId === c.id);
  return fn && (fn.bus !== 0 || fn.slot !== c.pci) ? [finding(device, 'wrong-slot', `QEMU has it on bus ${fn.bus} slot ${fn.slot}, the runtime file says bus 0 slot ${c.pci}`)] : [];
}

/** A settled record whose device QEMU has: its QOM type, slot and backend. */
function presentFindings(kind: RecordKind, rec: AnyRecord, id: string, device: string, q: QemuInventory): Finding[] {
  const out: Finding[] = [];
  const type = q.peripheral.get(id);
  const want = qomTypeOf(kind, rec);
  if (type !== undefined && type !== want) out.push(finding(device, 'wrong-type', `QEMU has it as a ${type}, not a ${want}`));
  const fn = q.pci.find((p) => p.qdevId === id);
  const slot = DEVICE_KINDS[kind].takesPciSlot ? (rec as { pci: number | null }).pci : undefined;
  const bus = (rec as { bus?: string }).bus;
  const onBus = (busId: string | undefined, n: number): string => (busId ? `${busId} (bus ${n})` : n === 0 ? 'the root bus' : `bus ${n}`);
  if (fn && slot !== undefined && ((fn.bus === 0 ? undefined : fn.busId ?? `#${fn.bus}`) !== bus || fn.slot !== slot))
    out.push(finding(device, 'wrong-slot', `QEMU has it on ${onBus(fn.busId, fn.bus)} slot ${fn.slot}, the runtime file says ${bus ?? 'the root bus'} slot ${slot}`));
  const backend =
    kind === 'nic' ? nicBackendFindings(rec as NicRecord, id, device, q) : kind === 'pmem' ? pmemBackendFindings(id, device, q) : diskBackendFindings(id, device, q);
  return [...out, ...backend];
}

/** One NIC or disk record against QEMU's device lists. */
function compareRecord(kind: RecordKind, rec: AnyRecord, q: QemuInventory): Finding[] {
  const device = describeRecord(kind, rec);
  const id = idOfRecord(kind, rec);
  if (id === undefined) return [note(device, 'no-slot', 'has no PCI slot or uuid (old runtime file); it gets both at the next start')];
  const present = q.peripheral.get(id) !== undefined || q.pci.some((p) => p.qdevId === id);
  if (rec.state) return [pendingFinding(kind, rec, device, present)];
  if (!present) return [finding(device, 'record-without-device', 'recorded in the runtime file, QEMU has no such device', dropRecord(kind, rec.uuid))];
  return presentFindings(kind, rec, id, device, q);
}

/** QEMU's /machine/peripheral devices the runtime file does not account for: to be removed. */
function unrecordedDevices(known: Set<string>, q: QemuInventory): Finding[] {
  return [...q.peripheral]
    .filter(([id]) => !known.has(id))
    .map(([id, type]) =>
      finding(`${type} ${id}`, 'device-without-record', 'QEMU has this device, the runtime file does not record it', { kind: 'remove-device', id, device: kindOfType(type) }),
    );
}

/** PCI functions with an id that is neither recorded nor in /machine/peripheral. */
function unknownPciFunctions(known: Set<string>, q: QemuInventory): Finding[] {
  return q.pci
    .filter((fn) => fn.qdevId && !known.has(fn.qdevId) && !q.peripheral.has(fn.qdevId))
    .map((fn) => finding(`PCI ${fn.desc} ${fn.qdevId}`, 'device-without-record', `on bus ${fn.bus} slot ${fn.slot}, neither a known device nor in /machine/peripheral`));
}

/** Runtime records against QEMU's devices, and QEMU's devices the runtime file does not account for. */
export function compareDevices(rt: RuntimeData, q: QemuInventory): Finding[] {
  const known = recordedIds(rt);
  return [
    ...records(rt).flatMap(([kind, rec]) => compareRecord(kind, rec, q).map(aboutRecord(rec.uuid))),
    ...compareScsiController(rt, q),
    ...unrecordedDevices(known, q),
    ...unknownPciFunctions(known, q),
  ];
}

// ---- backends no device uses --------------------------------------------

const unusedBackend = (device: string, problem: string, repair?: Repair): Finding => finding(device, 'unused-backend', problem, repair);

function unusedNetdevs(q: QemuInventory): Finding[] {
  return q.net
    .filter((c) => c.type !== 'nic' && !c.peer)
    .map((c) => unusedBackend(`netdev ${c.id} (${c.type})`, 'no NIC uses this netdev', { kind: 'release-netdev', id: c.id }));
}

/** Block nodes no disk device uses, except a used node's protocol child (same file) and QEMU's own (#...). */
function unusedBlockNodes(q: QemuInventory): Finding[] {
  const devices = new Set(q.peripheral.keys());
  const used = (n: QemuInventory['blockNodes'][number]): boolean =>
    n.nodeName.startsWith('#') || devices.has(n.nodeName) || q.blockNodes.some((o) => o !== n && o.file === n.file && devices.has(o.nodeName));
  return q.blockNodes
    .filter((n) => !used(n))
    .map((n) => unusedBackend(`block node ${n.nodeName} (${n.driver}, ${n.file})`, 'no disk device uses this block node', { kind: 'release-block-node', id: n.nodeName }));
}

function unusedFdsets(q: QemuInventory): Finding[] {
  return q.fdsets
    .filter((s) => !q.blockNodes.some((n) => n.file === `/dev/fdset/${s.id}`))
    .map((s) => {
      const opaque = s.fds.map((f) => f.opaque ?? '').filter(Boolean).join(', ');
      return unusedBackend(`fdset ${s.id}${opaque ? ` (${opaque})` : ''}`, 'no block node reads from this fdset', { kind: 'release-fdset', id: s.id });
    });
}

/** Tap fds QEMU holds that no netdev reads (a getfd no netdev_add consumed); no repair, they go with QEMU. */
function unconsumedTapFds(q: QemuInventory): Finding[] {
  const netdevFds = new Set(q.net.filter((c) => c.type !== 'nic' && c.fd !== undefined).map((c) => c.fd));
  return [...q.tunFds]
    .filter(([fd]) => !netdevFds.has(fd))
    .map(([fd, tap]) => unusedBackend(`tap ${tap} (QEMU fd ${fd})`, 'QEMU holds this tap open but no netdev uses it (a getfd no netdev_add consumed); it goes when QEMU stops'));
}

/** Our memory backends (mem-...) no memory device uses; the recorded virtio-mem's counts as used. */
function unusedMemoryBackends(rt: RuntimeData, q: QemuInventory): Finding[] {
  const usedMem = new Set(q.memoryDevices.map((m) => m.memdev.replace(/^\/objects\//, '')));
  const vmem = rt.resources?.virtioMem;
  if (vmem) usedMem.add(backendId(vmem.id));
  return q.memoryBackends
    .filter((b) => b.startsWith('mem-') && !usedMem.has(b))
    .map((b) => unusedBackend(`memory backend ${b}`, 'no memory device uses this backend', { kind: 'release-memory-backend', id: b }));
}

/** Backends no device uses: netdevs without a NIC, block nodes without a disk, fdsets no block node reads, our memory backends without a memory device. */
export function compareBackends(rt: RuntimeData, q: QemuInventory): Finding[] {
  return [...unusedNetdevs(q), ...unusedBlockNodes(q), ...unusedFdsets(q), ...unconsumedTapFds(q), ...unusedMemoryBackends(rt, q)];
}

// ---- hot-added vCPUs and memory -------------------------------------------

const MiB = 1024 * 1024;

function compareVcpus(r: Resources, q: QemuInventory): Finding[] {
  const present = new Set(q.cpus.map((c) => c['qom-path']).filter((p): p is string => !!p));
  const out = r.cpus
    .filter((c) => !present.has(`/machine/peripheral/${c.id}`))
    .map((c) => finding(`vCPU ${c.id}`, 'record-without-device', 'recorded as hot-added, QEMU has no such vCPU', dropRecord('cpu', c.id)));
  const boot = [...present].filter((p) => !p.startsWith('/machine/peripheral/')).length;
  if (boot !== r.bootVcpus) out.push(finding('vCPUs', 'vcpu-count', `QEMU has ${boot} boot vCPUs, the runtime file ${r.bootVcpus}`));
  return out;
}

const memoryDevice = (q: QemuInventory, type: string, id: string): MemoryDevice | undefined => q.memoryDevices.find((x) => x.type === type && x.id === id);

function compareDimms(r: Resources, q: QemuInventory): Finding[] {
  return r.dimms.flatMap((d) => {
    const m = memoryDevice(q, 'dimm', d.id);
    if (!m) return [finding(`DIMM ${d.id}`, 'record-without-device', `recorded (${d.sizeMiB} MiB), QEMU has no such DIMM`, dropRecord('dimm', d.id))];
    return m.sizeBytes === d.sizeMiB * MiB ? [] : [finding(`DIMM ${d.id}`, 'memory-size', `QEMU has ${m.sizeBytes / MiB} MiB, the runtime file ${d.sizeMiB} MiB`)];
  });
}

function compareVirtioMem(r: Resources, q: QemuInventory): Finding[] {
  const vm = r.virtioMem;
  if (!vm) return [];
  const m = memoryDevice(q, 'virtio-mem', vm.id);
  if (!m) return [finding(`virtio-mem ${vm.id}`, 'record-without-device', 'recorded, QEMU has no such device')];
  if (m.requestedBytes === undefined || m.requestedBytes === vm.requestedMiB * MiB) return [];
  return [finding(`virtio-mem ${vm.id}`, 'memory-size', `QEMU's requested size is ${m.requestedBytes / MiB} MiB, the runtime file's ${vm.requestedMiB} MiB`)];
}

/** Hot-added vCPUs, DIMMs and virtio-mem against query-hotpluggable-cpus and query-memory-devices. */
export function compareResources(rt: RuntimeData, q: QemuInventory): Finding[] {
  const r = rt.resources;
  return r ? [...compareVcpus(r, q), ...compareDimms(r, q), ...compareVirtioMem(r, q)] : [];
}

// ---- whole instances --------------------------------------------------------

/** Everything the runtime file says against everything QEMU and the host have, for a running instance. */
export function compareInstance(rt: RuntimeData, q: QemuInventory, host: HostTap[], bridgeExists: BridgeExists): Finding[] {
  return [...compareDevices(rt, q), ...compareResources(rt, q), ...compareBackends(rt, q), ...compareTaps(rt, q, host, bridgeExists), ...compareDiskSizes(rt, q)];
}

/** For a stopped instance: only the runtime file's own pending states. */
export function compareStopped(rt: RuntimeData): Finding[] {
  return records(rt)
    .filter(([, rec]) => rec.state)
    .map(([kind, rec]) =>
      note(
        describeRecord(kind, rec),
        rec.state === 'attaching' ? 'attach-failed' : 'removal-pending',
        `recorded as "${rec.state}" in the runtime file of a stopped instance; it is dropped at the next start`,
      ),
    );
}
