/**
 * What an instance really has, read from QEMU's own lists and from the host,
 * and the comparisons of that with the runtime file (gnt-cluster verify,
 * gnt-instance verify).
 *
 * Reading (needs QEMU or the host): readQemuInventory, readHostTaps,
 * tapHolders, fdCount, storageCandidates.
 * Comparing (pure, tested on lists captured from QEMU 10): compareDevices,
 * compareBackends, compareResources, compareTaps, findStrayTaps,
 * findOrphanFiles. Each difference is one Finding; a finding that names a
 * repair can be fixed by inventory-repair.ts (QEMU, host) or by the caller
 * (the runtime record).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { diskId } from './disk';
import { nicId } from './nic';
import { backendId } from './memory';
import type { HotpluggableCpu } from './cpu';
import type { Monitor } from './qmp-client';
import type { DiskRecord, NicRecord, RuntimeData } from './runtime-file';

// ---- what QEMU has --------------------------------------------------------

/** One PCI function, on any bus (bridges followed). */
export interface PciEntry {
  bus: number;
  slot: number;
  function: number;
  qdevId: string;
  desc: string;
}

/** A network client of `info network`: a NIC (type nic) or a backend (tap, user, ...). */
export interface NetClient {
  id: string;
  type: string;
  /** The client it is connected to (a NIC's netdev, a netdev's NIC). */
  peer?: string;
  /** tap: the fd QEMU reads it from. */
  fd?: number;
  /** nic: its MAC. */
  mac?: string;
}

export interface BlockNode {
  nodeName: string;
  driver: string;
  file: string;
}

export interface Fdset {
  id: number;
  fds: Array<{ fd: number; opaque?: string }>;
}

export interface MemoryDevice {
  type: string;
  id: string;
  /** QOM path of its backend, e.g. /objects/mem-dimm0. */
  memdev: string;
  sizeBytes: number;
  requestedBytes?: number;
}

export interface QemuInventory {
  pci: PciEntry[];
  /** /machine/peripheral: device id -> QOM type (virtio-net-pci, pc-dimm, ...). */
  peripheral: Map<string, string>;
  blockNodes: BlockNode[];
  net: NetClient[];
  fdsets: Fdset[];
  cpus: HotpluggableCpu[];
  memoryDevices: MemoryDevice[];
  /** /objects children that are memory backends (pc.ram, mem-dimm0, ...). */
  memoryBackends: string[];
  /** QEMU's open tun fds: fd number -> tap name (from /proc/PID/fdinfo). */
  tunFds: Map<number, string>;
}

export interface RawPciDevice {
  bus: number;
  slot: number;
  function: number;
  qdev_id: string;
  class_info?: { desc?: string; class?: number };
  pci_bridge?: { bus?: { number?: number }; devices?: RawPciDevice[] };
}

/** Every PCI function of query-pci, bridges' buses included. */
export function flattenPci(buses: Array<{ bus: number; devices: RawPciDevice[] }>): PciEntry[] {
  const out: PciEntry[] = [];
  const walk = (devices: RawPciDevice[]): void => {
    for (const d of devices) {
      out.push({ bus: d.bus, slot: d.slot, function: d.function, qdevId: d.qdev_id ?? '', desc: d.class_info?.desc ?? `class ${d.class_info?.class ?? '?'}` });
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices);
    }
  };
  for (const b of buses) walk(b.devices);
  return out;
}

/** /machine/peripheral children: id -> type without the child<> wrapper. */
export function peripheralFrom(list: Array<{ name: string; type: string }>): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of list) {
    const m = /^child<(.+)>$/.exec(c.type);
    if (m) out.set(c.name, m[1]);
  }
  return out;
}

const NET_LINE = /^(\s*\\\s+)?([^:\s]+):\s+index=\d+,type=([a-z_-]+)(?:,(.*))?$/;

/**
 * Parses HMP `info network` (QEMU has no QMP query for netdevs). A client
 * line at the start is followed by its peer on a line starting with " \ ";
 * a backend without a NIC shows as a client line with no peer.
 */
export function parseInfoNetwork(text: string): NetClient[] {
  const out: NetClient[] = [];
  let top: NetClient | undefined;
  for (const line of text.split(/\r?\n/)) {
    const m = NET_LINE.exec(line);
    if (!m) continue;
    const rest = m[4] ?? '';
    const client: NetClient = { id: m[2], type: m[3] };
    const fd = /(?:^|,)fd=(\d+)/.exec(rest);
    if (fd) client.fd = Number(fd[1]);
    const mac = /(?:^|,)macaddr=([0-9a-f:]{17})/i.exec(rest);
    if (mac) client.mac = mac[1].toLowerCase();
    if (m[1] && top) {
      client.peer = top.id;
      top.peer = client.id;
      out.push(client);
      continue;
    }
    top = client;
    out.push(client);
  }
  return out;
}

export interface RawBlockNode {
  'node-name': string;
  drv: string;
  file: string;
}

export interface RawMemoryDevice {
  type: string;
  data: { id?: string; memdev?: string; size?: number; 'requested-size'?: number };
}

export function memoryDevicesFrom(raw: RawMemoryDevice[]): MemoryDevice[] {
  return raw.map((d) => {
    const m: MemoryDevice = { type: d.type, id: d.data.id ?? '', memdev: d.data.memdev ?? '', sizeBytes: d.data.size ?? 0 };
    if (d.data['requested-size'] !== undefined) m.requestedBytes = d.data['requested-size'];
    return m;
  });
}

/** The tap name in a /proc/PID/fdinfo/N text of a tun fd ("iff:\tgnttap0"), if any. */
export function tapOfFdinfo(text: string): string | undefined {
  return /^iff:\s*(\S+)\s*$/m.exec(text)?.[1];
}

/** The tun fds a process holds: fd -> tap name. Empty when the process is gone. */
export function tunFdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== '/dev/net/tun') continue;
      const tap = tapOfFdinfo(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (tap) out.set(Number(fd), tap);
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** Open fds of a process; -1 when it cannot be read. */
export function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** QEMU's answers as they come (QMP, HMP), before they are parsed. */
export interface RawInventory {
  queryPci: Array<{ bus: number; devices: RawPciDevice[] }>;
  peripheral: Array<{ name: string; type: string }>;
  blockNodes: RawBlockNode[];
  infoNetwork: string;
  fdsets: Array<{ 'fdset-id': number; fds: Fdset['fds'] }>;
  cpus: HotpluggableCpu[];
  memoryDevices: RawMemoryDevice[];
  objects: Array<{ name: string; type: string }>;
}

/** Parses QEMU's raw answers (pure: unit tests feed it lists captured from QEMU 10). */
export function inventoryFrom(raw: RawInventory, tunFds: Map<number, string>): QemuInventory {
  return {
    pci: flattenPci(raw.queryPci),
    peripheral: peripheralFrom(raw.peripheral),
    blockNodes: raw.blockNodes.map((n) => ({ nodeName: n['node-name'], driver: n.drv, file: n.file })),
    net: parseInfoNetwork(raw.infoNetwork),
    fdsets: raw.fdsets.map((f) => ({ id: f['fdset-id'], fds: f.fds })),
    cpus: raw.cpus,
    memoryDevices: memoryDevicesFrom(raw.memoryDevices),
    memoryBackends: raw.objects.filter((o) => /^child<memory-backend-/.test(o.type)).map((o) => o.name),
    tunFds,
  };
}

/** Reads every list verify compares from one monitor, one command after another. */
export async function readQemuInventory(mon: Monitor, pid: number): Promise<QemuInventory> {
  const raw: RawInventory = {
    queryPci: await mon.execute('query-pci'),
    peripheral: await mon.execute('qom-list', { path: '/machine/peripheral' }),
    blockNodes: await mon.execute('query-named-block-nodes', { flat: true }),
    infoNetwork: await mon.hmp('info network'),
    fdsets: await mon.execute('query-fdsets'),
    cpus: await mon.execute('query-hotpluggable-cpus'),
    memoryDevices: await mon.execute('query-memory-devices'),
    objects: await mon.execute('qom-list', { path: '/objects' }),
  };
  return inventoryFrom(raw, tunFdsOf(pid));
}

// ---- what the host has ----------------------------------------------------

/** Host taps this software names (tap.ts: gnttap%d). */
export const TAP_NAME = /^gnttap\d+$/;

export interface HostTap {
  name: string;
  /** The bridge it is enslaved to, if any. */
  master?: string;
}

/** Every gnttapN of this network namespace with its bridge. */
export function readHostTaps(sysClassNet = '/sys/class/net'): HostTap[] {
  const out: HostTap[] = [];
  for (const name of fs.readdirSync(sysClassNet)) {
    if (!TAP_NAME.test(name)) continue;
    const tap: HostTap = { name };
    try {
      tap.master = path.basename(fs.readlinkSync(path.join(sysClassNet, name, 'master')));
    } catch {
      /* not enslaved */
    }
    out.push(tap);
  }
  return out.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

/** The network namespace of a process ("net:[4026531840]"), undefined when it cannot be read. */
function netnsOf(pid: number | 'self'): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/**
 * Which processes of this network namespace hold each tap open (scans
 * /proc/*\/fd for tun fds). Tap names are per namespace: a process of
 * another namespace holding a tap of the same name is not counted.
 */
export function tapHolders(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const ours = netnsOf('self');
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || netnsOf(Number(p)) !== ours) continue;
    for (const tap of tunFdsOf(Number(p)).values()) {
      const list = out.get(tap) ?? [];
      if (!list.includes(Number(p))) list.push(Number(p));
      out.set(tap, list);
    }
  }
  return out;
}

// ---- findings ---------------------------------------------------------------

export type FindingCode =
  | 'record-without-device'
  | 'device-without-record'
  | 'attach-unconfirmed'
  | 'attach-failed'
  | 'removal-pending'
  | 'removal-unfinished'
  | 'wrong-slot'
  | 'wrong-type'
  | 'mac-differs'
  | 'no-slot'
  | 'no-backend'
  | 'unused-backend'
  | 'vcpu-count'
  | 'memory-size'
  | 'tap-missing'
  | 'tap-not-recorded'
  | 'tap-wrong-bridge'
  | 'bridge-missing'
  | 'stray-tap'
  | 'orphan-file'
  | 'not-verified';

export type DeviceKind = 'nic' | 'disk' | 'cpu' | 'dimm' | 'other';

/** What --fix does about a finding. */
export type Repair =
  | { kind: 'remove-device'; id: string; device: DeviceKind }
  | { kind: 'complete-attach'; record: 'nic' | 'disk'; uuid: string }
  | { kind: 'drop-record'; record: 'nic' | 'disk' | 'cpu' | 'dimm'; key: string }
  | { kind: 'release-netdev'; id: string }
  | { kind: 'release-block-node'; id: string }
  | { kind: 'release-fdset'; id: number }
  | { kind: 'release-memory-backend'; id: string }
  | { kind: 'record-tap'; uuid: string; tap: string }
  | { kind: 'connect-tap'; tap: string; link: string }
  | { kind: 'delete-tap'; name: string }
  | { kind: 'delete-file'; path: string };

export interface Finding {
  /** What it is about: "NIC <uuid> (<id>)", "tap gnttap3", "file /srv/...". */
  device: string;
  /** The NIC's or disk's uuid when the finding is about a runtime record. */
  uuid?: string;
  /** What differs, for people. */
  problem: string;
  code: FindingCode;
  /** A legitimate state: reported, not counted as a difference. */
  note?: boolean;
  repair?: Repair;
}

type Kind = 'nic' | 'disk';
type AnyRecord = NicRecord | DiskRecord;

const QOM_TYPE: Record<Kind, string> = { nic: 'virtio-net-pci', disk: 'virtio-blk-pci' };
const WHAT: Record<Kind, string> = { nic: 'NIC', disk: 'disk' };

const idOf = (kind: Kind, rec: AnyRecord): string =>
  kind === 'nic' ? nicId(rec as NicRecord, rec.pci as number) : diskId(rec as DiskRecord, rec.pci as number);

const records = (rt: RuntimeData): Array<[Kind, AnyRecord]> => [
  ...rt.nics.map((n): [Kind, AnyRecord] => ['nic', n]),
  ...rt.block_devices.map((d): [Kind, AnyRecord] => ['disk', d]),
];

export const describeRecord = (kind: Kind, rec: AnyRecord): string =>
  `${WHAT[kind]} ${rec.uuid || '(no uuid)'}${rec.pci !== null && rec.uuid ? ` (${idOf(kind, rec)})` : ''}`;

/** The device ids the runtime file accounts for (NICs, disks, vCPUs, DIMMs, virtio-mem). */
export function recordedIds(rt: RuntimeData): Set<string> {
  const ids = new Set<string>();
  for (const [kind, rec] of records(rt)) if (rec.pci !== null && rec.uuid) ids.add(idOf(kind, rec));
  const r = rt.resources;
  for (const c of r?.cpus ?? []) ids.add(c.id);
  for (const d of r?.dimms ?? []) ids.add(d.id);
  if (r?.virtioMem) ids.add(r.virtioMem.id);
  return ids;
}

/** The kind of a QEMU device by its QOM type. */
export function kindOfType(type: string): DeviceKind {
  if (type === QOM_TYPE.nic) return 'nic';
  if (type === QOM_TYPE.disk) return 'disk';
  if (type.endsWith('-cpu')) return 'cpu';
  if (type === 'pc-dimm') return 'dimm';
  return 'other';
}

/** One NIC or disk record against QEMU's device lists. */
function compareRecord(kind: Kind, rec: AnyRecord, q: QemuInventory): Finding[] {
  const device = describeRecord(kind, rec);
  if (rec.pci === null || !rec.uuid)
    return [{ device, problem: 'has no PCI slot or uuid (old runtime file); it gets both at the next start', code: 'no-slot', note: true }];
  const id = idOf(kind, rec);
  const type = q.peripheral.get(id);
  const fn = q.pci.find((p) => p.qdevId === id);
  const present = type !== undefined || fn !== undefined;
  if (rec.state === 'attaching') {
    return present
      ? [{ device, problem: 'hot-add recorded as unconfirmed ("attaching"), but QEMU has the device', code: 'attach-unconfirmed', repair: { kind: 'complete-attach', record: kind, uuid: rec.uuid } }]
      : [{ device, problem: 'hot-add recorded as unconfirmed ("attaching"), and QEMU has no such device', code: 'attach-failed', repair: { kind: 'drop-record', record: kind, key: rec.uuid } }];
  }
  if (rec.state === 'detaching') {
    return present
      ? [{ device, problem: 'removal pending: the guest has not released the device yet', code: 'removal-pending', note: true }]
      : [{ device, problem: 'removal pending ("detaching"), but QEMU no longer has the device', code: 'removal-unfinished', repair: { kind: 'drop-record', record: kind, key: rec.uuid } }];
  }
  if (!present)
    return [{ device, problem: 'recorded in the runtime file, QEMU has no such device', code: 'record-without-device', repair: { kind: 'drop-record', record: kind, key: rec.uuid } }];
  const out: Finding[] = [];
  if (type !== undefined && type !== QOM_TYPE[kind]) out.push({ device, problem: `QEMU has it as a ${type}, not a ${QOM_TYPE[kind]}`, code: 'wrong-type' });
  if (fn && (fn.bus !== 0 || fn.slot !== rec.pci))
    out.push({ device, problem: `QEMU has it on bus ${fn.bus} slot ${fn.slot}, the runtime file says bus 0 slot ${rec.pci}`, code: 'wrong-slot' });
  if (kind === 'nic') {
    const client = q.net.find((c) => c.id === id && c.type === 'nic');
    const mac = (rec as NicRecord).mac;
    if (client?.mac && client.mac !== mac) out.push({ device, problem: `QEMU has MAC ${client.mac}, the runtime file ${mac}`, code: 'mac-differs' });
    if (client && !client.peer) out.push({ device, problem: 'QEMU has the NIC without a backend (no netdev)', code: 'no-backend' });
  }
  if (kind === 'disk' && !q.blockNodes.some((n) => n.nodeName === id))
    out.push({ device, problem: `QEMU has no block node ${id} for it`, code: 'no-backend' });
  return out;
}

/** Runtime records against QEMU's devices, and QEMU's devices the runtime file does not account for. */
export function compareDevices(rt: RuntimeData, q: QemuInventory): Finding[] {
  const out = records(rt).flatMap(([kind, rec]) => compareRecord(kind, rec, q).map((f) => (rec.uuid ? { ...f, uuid: rec.uuid } : f)));
  const known = recordedIds(rt);
  for (const [id, type] of q.peripheral) {
    if (known.has(id)) continue;
    const kind = kindOfType(type);
    out.push({
      device: `${type} ${id}`,
      problem: 'QEMU has this device, the runtime file does not record it',
      code: 'device-without-record',
      repair: { kind: 'remove-device', id, device: kind },
    });
  }
  for (const fn of q.pci) {
    if (!fn.qdevId || known.has(fn.qdevId) || q.peripheral.has(fn.qdevId)) continue;
    out.push({ device: `PCI ${fn.desc} ${fn.qdevId}`, problem: `on bus ${fn.bus} slot ${fn.slot}, neither a known device nor in /machine/peripheral`, code: 'device-without-record' });
  }
  return out;
}

/** Backends no device uses: netdevs without a NIC, block nodes without a disk, fdsets no block node reads, our memory backends without a memory device. */
export function compareBackends(rt: RuntimeData, q: QemuInventory): Finding[] {
  const out: Finding[] = [];
  const devices = new Set(q.peripheral.keys());
  for (const c of q.net) {
    if (c.type === 'nic' || c.peer) continue;
    out.push({ device: `netdev ${c.id} (${c.type})`, problem: 'no NIC uses this netdev', code: 'unused-backend', repair: { kind: 'release-netdev', id: c.id } });
  }
  for (const n of q.blockNodes) {
    if (n.nodeName.startsWith('#') || devices.has(n.nodeName)) continue;
    if (q.blockNodes.some((o) => o !== n && o.file === n.file && devices.has(o.nodeName))) continue; // the protocol child of a used node
    out.push({ device: `block node ${n.nodeName} (${n.driver}, ${n.file})`, problem: 'no disk device uses this block node', code: 'unused-backend', repair: { kind: 'release-block-node', id: n.nodeName } });
  }
  for (const s of q.fdsets) {
    if (q.blockNodes.some((n) => n.file === `/dev/fdset/${s.id}`)) continue;
    const opaque = s.fds.map((f) => f.opaque ?? '').filter(Boolean).join(', ');
    out.push({ device: `fdset ${s.id}${opaque ? ` (${opaque})` : ''}`, problem: 'no block node reads from this fdset', code: 'unused-backend', repair: { kind: 'release-fdset', id: s.id } });
  }
  const netdevFds = new Set(q.net.filter((c) => c.type !== 'nic' && c.fd !== undefined).map((c) => c.fd));
  for (const [fd, tap] of q.tunFds) {
    if (netdevFds.has(fd)) continue;
    out.push({ device: `tap ${tap} (QEMU fd ${fd})`, problem: 'QEMU holds this tap open but no netdev uses it (a getfd no netdev_add consumed); it goes when QEMU stops', code: 'unused-backend' });
  }
  const usedMem = new Set(q.memoryDevices.map((m) => m.memdev.replace(/^\/objects\//, '')));
  const vmem = rt.resources?.virtioMem;
  if (vmem) usedMem.add(backendId(vmem.id));
  for (const b of q.memoryBackends) {
    if (!b.startsWith('mem-') || usedMem.has(b)) continue;
    out.push({ device: `memory backend ${b}`, problem: 'no memory device uses this backend', code: 'unused-backend', repair: { kind: 'release-memory-backend', id: b } });
  }
  return out;
}

const MiB = 1024 * 1024;

/** Hot-added vCPUs, DIMMs and virtio-mem against query-hotpluggable-cpus and query-memory-devices. */
export function compareResources(rt: RuntimeData, q: QemuInventory): Finding[] {
  const r = rt.resources;
  if (!r) return [];
  const out: Finding[] = [];
  const present = new Set(q.cpus.map((c) => c['qom-path']).filter((p): p is string => !!p));
  for (const c of r.cpus) {
    if (present.has(`/machine/peripheral/${c.id}`)) continue;
    out.push({ device: `vCPU ${c.id}`, problem: 'recorded as hot-added, QEMU has no such vCPU', code: 'record-without-device', repair: { kind: 'drop-record', record: 'cpu', key: c.id } });
  }
  const boot = [...present].filter((p) => !p.startsWith('/machine/peripheral/')).length;
  if (boot !== r.bootVcpus) out.push({ device: 'vCPUs', problem: `QEMU has ${boot} boot vCPUs, the runtime file ${r.bootVcpus}`, code: 'vcpu-count' });
  for (const d of r.dimms) {
    const m = q.memoryDevices.find((x) => x.type === 'dimm' && x.id === d.id);
    if (!m) out.push({ device: `DIMM ${d.id}`, problem: `recorded (${d.sizeMiB} MiB), QEMU has no such DIMM`, code: 'record-without-device', repair: { kind: 'drop-record', record: 'dimm', key: d.id } });
    else if (m.sizeBytes !== d.sizeMiB * MiB) out.push({ device: `DIMM ${d.id}`, problem: `QEMU has ${m.sizeBytes / MiB} MiB, the runtime file ${d.sizeMiB} MiB`, code: 'memory-size' });
  }
  const vm = r.virtioMem;
  if (vm) {
    const m = q.memoryDevices.find((x) => x.type === 'virtio-mem' && x.id === vm.id);
    if (!m) out.push({ device: `virtio-mem ${vm.id}`, problem: 'recorded, QEMU has no such device', code: 'record-without-device' });
    else if (m.requestedBytes !== undefined && m.requestedBytes !== vm.requestedMiB * MiB)
      out.push({ device: `virtio-mem ${vm.id}`, problem: `QEMU's requested size is ${m.requestedBytes / MiB} MiB, the runtime file's ${vm.requestedMiB} MiB`, code: 'memory-size' });
  }
  return out;
}

/** The tap QEMU reads a NIC's netdev from, by its fd (undefined when unknown). */
export function tapOfNic(q: QemuInventory, id: string): string | undefined {
  const netdev = q.net.find((c) => c.id === id && c.type !== 'nic');
  return netdev?.fd === undefined ? undefined : q.tunFds.get(netdev.fd);
}

/** Each settled NIC's tap: the one QEMU really uses, present on the host, on the recorded bridge. */
export function compareTaps(rt: RuntimeData, q: QemuInventory, host: HostTap[], bridgeExists: (link: string) => boolean): Finding[] {
  return rt.nics.flatMap((nic) => compareTap(nic, q, host, bridgeExists).map((f) => ({ ...f, uuid: nic.uuid })));
}

function compareTap(nic: NicRecord, q: QemuInventory, host: HostTap[], bridgeExists: (link: string) => boolean): Finding[] {
  if (nic.state || nic.pci === null || !nic.uuid) return [];
  const id = nicId(nic, nic.pci);
  if (!q.peripheral.has(id)) return []; // reported by compareDevices
  const device = describeRecord('nic', nic);
  const out: Finding[] = [];
  const used = tapOfNic(q, id);
  const tap = used ?? nic.tap;
  if (used && used !== nic.tap)
    out.push({ device, problem: `QEMU uses tap ${used}, the runtime file ${nic.tap ? `names ${nic.tap}` : 'names none'}`, code: 'tap-not-recorded', repair: { kind: 'record-tap', uuid: nic.uuid, tap: used } });
  if (!tap) return out;
  const h = host.find((t) => t.name === tap);
  if (!h) return [...out, { device, problem: `tap ${tap} does not exist on the host`, code: 'tap-missing' }];
  if ((h.master ?? '') === (nic.link ?? '')) return out;
  const where = h.master ? `on bridge ${h.master}` : 'on no bridge';
  if (nic.link && !bridgeExists(nic.link))
    return [...out, { device, problem: `bridge ${nic.link} does not exist on the host (tap ${tap} is ${where})`, code: 'bridge-missing' }];
  const problem = `tap ${tap} is ${where}, the runtime file says ${nic.link ? `bridge ${nic.link}` : 'none'}`;
  return [...out, { device, problem, code: 'tap-wrong-bridge', ...(nic.link ? { repair: { kind: 'connect-tap' as const, tap, link: nic.link } } : {}) }];
}

/**
 * Taps nobody owns: named gnttapN, not the tap of any running instance of
 * this node (its runtime file or its QEMU), and held open by no process (a
 * tap some process holds belongs to that process, e.g. another node's QEMU
 * in the same namespace, or a hot-add under way).
 */
export function findStrayTaps(host: HostTap[], owned: ReadonlySet<string>, holders: ReadonlyMap<string, number[]>): Finding[] {
  return host
    .filter((t) => !owned.has(t.name) && !(holders.get(t.name)?.length))
    .map((t) => ({
      device: `tap ${t.name}`,
      problem: `no instance of this node uses it and no process holds it open${t.master ? ` (on bridge ${t.master})` : ''}`,
      code: 'stray-tap' as const,
      repair: { kind: 'delete-tap' as const, name: t.name },
    }));
}

/**
 * Disk files of the node's own naming that no runtime file references. One
 * that `keep` names (a disk the cluster configuration still lists) is
 * reported without a repair: it is deleted only once nothing wants it.
 */
export function findOrphanFiles(candidates: string[], referenced: ReadonlySet<string>, keep: (file: string) => string | undefined = () => undefined): Finding[] {
  return candidates
    .filter((f) => !referenced.has(path.resolve(f)))
    .map((f) => {
      const problem = 'a disk file in the storage directory that no runtime file references';
      const why = keep(f);
      if (why) return { device: `file ${f}`, problem: `${problem}; kept: ${why}`, code: 'orphan-file' as const };
      return { device: `file ${f}`, problem, code: 'orphan-file' as const, repair: { kind: 'delete-file' as const, path: f } };
    });
}

function isRegularFile(f: string): boolean {
  try {
    return fs.lstatSync(f).isFile();
  } catch {
    return false; // gone meanwhile
  }
}

/** The node's own disk files in one instance directory of the storage directory: `<uuid>.img`. */
export function storageCandidates(dir: string, isOwnName: (file: string) => boolean): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => path.join(dir, n))
    .filter((f) => isOwnName(path.basename(f)) && isRegularFile(f))
    .sort();
}

/** Everything the runtime file says against everything QEMU and the host have, for a running instance. */
export function compareInstance(rt: RuntimeData, q: QemuInventory, host: HostTap[], bridgeExists: (link: string) => boolean): Finding[] {
  return [...compareDevices(rt, q), ...compareResources(rt, q), ...compareBackends(rt, q), ...compareTaps(rt, q, host, bridgeExists)];
}

/** For a stopped instance: only the runtime file's own pending states. */
export function compareStopped(rt: RuntimeData): Finding[] {
  return records(rt)
    .filter(([, rec]) => rec.state)
    .map(([kind, rec]) => ({
      device: describeRecord(kind, rec),
      problem: `recorded as "${rec.state}" in the runtime file of a stopped instance; it is dropped at the next start`,
      code: rec.state === 'attaching' ? ('attach-failed' as const) : ('removal-pending' as const),
      note: true,
    }));
}

/** What a repair does, for the report. */
export function describeRepair(r: Repair): string {
  switch (r.kind) {
    case 'remove-device':
      return `device_del ${r.id}, waited until QEMU dropped it, released its backends`;
    case 'complete-attach':
      return 'the hot-add completed: "attaching" cleared in the runtime file';
    case 'drop-record':
      return 'record dropped from the runtime file';
    case 'release-netdev':
      return `netdev_del ${r.id}`;
    case 'release-block-node':
      return `blockdev-del ${r.id}`;
    case 'release-fdset':
      return `remove-fd fdset-id=${r.id}`;
    case 'release-memory-backend':
      return `object-del ${r.id}`;
    case 'record-tap':
      return `tap ${r.tap} recorded in the runtime file`;
    case 'connect-tap':
      return `tap ${r.tap} enslaved to bridge ${r.link}`;
    case 'delete-tap':
      return `tap ${r.name} deleted`;
    case 'delete-file':
      return `${r.path} deleted`;
  }
}
