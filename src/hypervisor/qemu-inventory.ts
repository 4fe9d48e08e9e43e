/**
 * What QEMU really has, read from its own lists for verify: PCI functions on
 * every bus, /machine/peripheral, named block nodes, `info network`, fdsets,
 * hotpluggable CPUs, memory devices and backends, and the tun fds it holds.
 * readQemuInventory asks QEMU; inventoryFrom and the parsers are pure (unit
 * tests feed them lists captured from QEMU 10).
 */
import type { HotpluggableCpu } from './cpu';
import { tunFdsOf } from './host-inventory';
import { queryPciDevices, type QueryPciAddress } from './pci-info';
import type { Monitor } from './qmp-client';

/** One PCI function, on any bus (bridges followed). */
export interface PciEntry {
  bus: number;
  slot: number;
  function: number;
  qdevId: string;
  desc: string;
  /** The qdev id of its bus's bridge or root port; undefined on the root bus (bus 0) or on a bus no bridge is known for. */
  busId?: string;
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
  /** Its size as QEMU has it (image.virtual-size), bytes; absent when QEMU did not say. */
  size?: number;
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

export interface RawPciDevice extends QueryPciAddress {
  class_info?: { desc?: string; class?: number };
  pci_bridge?: { bus?: { number?: number; secondary?: number }; devices?: RawPciDevice[] };
}

export interface RawBlockNode {
  'node-name': string;
  drv: string;
  file: string;
  image?: { 'virtual-size'?: number };
}

export interface RawMemoryDevice {
  type: string;
  data: { id?: string; memdev?: string; size?: number; 'requested-size'?: number };
}

/** A child of a qom-list answer. */
interface QomChild {
  name: string;
  type: string;
}

/** QEMU's answers as they come (QMP, HMP), before they are parsed. */
export interface RawInventory {
  queryPci: Array<{ bus: number; devices: RawPciDevice[] }>;
  peripheral: QomChild[];
  blockNodes: RawBlockNode[];
  infoNetwork: string;
  fdsets: Array<{ 'fdset-id': number; fds: Fdset['fds'] }>;
  cpus: HotpluggableCpu[];
  memoryDevices: RawMemoryDevice[];
  objects: QomChild[];
}

const pciEntryOf = (d: RawPciDevice): PciEntry => ({
  bus: d.bus,
  slot: d.slot,
  function: d.function,
  qdevId: d.qdev_id ?? '',
  desc: d.class_info?.desc ?? `class ${d.class_info?.class ?? '?'}`,
});

/** Every PCI function of query-pci, bridges' buses included. */
export function flattenPci(buses: RawInventory['queryPci']): PciEntry[] {
  const ids = new Map<number, string>();
  for (const d of queryPciDevices(buses)) if (d.pci_bridge?.bus?.secondary && d.qdev_id) ids.set(d.pci_bridge.bus.secondary, d.qdev_id);
  return queryPciDevices(buses).map((d) => {
    const e = pciEntryOf(d);
    const busId = d.bus === 0 ? undefined : ids.get(d.bus);
    return busId === undefined ? e : { ...e, busId };
  });
}

/** /machine/peripheral children: id -> type without the child<> wrapper. */
export function peripheralFrom(list: QomChild[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of list) {
    const m = /^child<(.+)>$/.exec(c.type);
    if (m) out.set(c.name, m[1]);
  }
  return out;
}

const NET_LINE = /^(\s*\\\s+)?([^:\s]+):\s+index=\d+,type=([a-z_-]+)(?:,(.*))?$/;

/** One client line of `info network`, without its peer; undefined for any other line. */
function netClientOf(line: string): { client: NetClient; isPeer: boolean } | undefined {
  const m = NET_LINE.exec(line);
  if (!m) return undefined;
  const rest = m[4] ?? '';
  const client: NetClient = { id: m[2], type: m[3] };
  const fd = /(?:^|,)fd=(\d+)/.exec(rest);
  if (fd) client.fd = Number(fd[1]);
  const mac = /(?:^|,)macaddr=([0-9a-f:]{17})/i.exec(rest);
  if (mac) client.mac = mac[1].toLowerCase();
  return { client, isPeer: !!m[1] };
}

/**
 * Parses HMP `info network` (QEMU has no QMP query for netdevs). A client
 * line at the start is followed by its peer on a line starting with " \ ";
 * a backend without a NIC shows as a client line with no peer.
 */
export function parseInfoNetwork(text: string): NetClient[] {
  const out: NetClient[] = [];
  let top: NetClient | undefined;
  for (const line of text.split(/\r?\n/)) {
    const parsed = netClientOf(line);
    if (!parsed) continue;
    const { client, isPeer } = parsed;
    if (isPeer && top) {
      client.peer = top.id;
      top.peer = client.id;
    } else {
      top = client;
    }
    out.push(client);
  }
  return out;
}

export function memoryDevicesFrom(raw: RawMemoryDevice[]): MemoryDevice[] {
  return raw.map((d) => {
    const m: MemoryDevice = { type: d.type, id: d.data.id ?? '', memdev: d.data.memdev ?? '', sizeBytes: d.data.size ?? 0 };
    if (d.data['requested-size'] !== undefined) m.requestedBytes = d.data['requested-size'];
    return m;
  });
}

/** Parses QEMU's raw answers (pure: unit tests feed it lists captured from QEMU 10). */
export function inventoryFrom(raw: RawInventory, tunFds: Map<number, string>): QemuInventory {
  return {
    pci: flattenPci(raw.queryPci),
    peripheral: peripheralFrom(raw.peripheral),
    blockNodes: raw.blockNodes.map((n) => ({ nodeName: n['node-name'], driver: n.drv, file: n.file, ...(typeof n.image?.['virtual-size'] === 'number' ? { size: n.image['virtual-size'] } : {}) })),
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

/** The tap QEMU reads a NIC's netdev from, by its fd (undefined when unknown). */
export function tapOfNic(q: QemuInventory, id: string): string | undefined {
  const netdev = q.net.find((c) => c.id === id && c.type !== 'nic');
  return netdev?.fd === undefined ? undefined : q.tunFds.get(netdev.fd);
}
