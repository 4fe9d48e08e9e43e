/**
 * Reading QEMU's view of the PCI bus: the text of HMP `info pci` and the
 * structured `query-pci`, and a cross-check of the two.
 */
export interface PciFunction {
  bus: number;
  slot: number;
  function: number;
  /** Class description as QEMU prints it ("Ethernet controller", "Class 0255"). */
  className: string;
  /** "vvvv:dddd" in lower-case hex. */
  vendorDevice: string;
  /** The qdev id, "" for devices created without one. */
  qdevId: string;
}

const HEADER = /^\s*Bus\s+(\d+), device\s+(\d+), function\s+(\d+):\s*$/;
const IDENT = /^\s*(.+?): PCI device ([0-9a-f]{4}):([0-9a-f]{4})\s*$/i;
const QDEV_ID = /^\s*id "(.*)"\s*$/;

/** Parses the text of `info pci` into one entry per PCI function, in order. */
export function parseInfoPci(text: string): PciFunction[] {
  const out: PciFunction[] = [];
  let current: PciFunction | undefined;
  for (const line of text.split(/\r?\n/)) {
    const header = HEADER.exec(line);
    if (header) {
      current = {
        bus: Number(header[1]),
        slot: Number(header[2]),
        function: Number(header[3]),
        className: '',
        vendorDevice: '',
        qdevId: '',
      };
      out.push(current);
      continue;
    }
    if (!current) continue;
    const ident = IDENT.exec(line);
    if (ident && !current.vendorDevice) {
      current.className = ident[1].trim();
      current.vendorDevice = `${ident[2]}:${ident[3]}`.toLowerCase();
      continue;
    }
    const qdev = QDEV_ID.exec(line);
    if (qdev) current.qdevId = qdev[1];
  }
  return out;
}

/** Where a `query-pci` device is, and its qdev id. */
export interface QueryPciAddress {
  bus: number;
  slot: number;
  function: number;
  qdev_id: string;
}

/** The subset of `query-pci` this project reads. */
export interface QueryPciBus {
  bus: number;
  devices: Array<QueryPciAddress & {
    class_info: { class: number; desc?: string };
    id: { vendor: number; device: number };
    pci_bridge?: { bus?: { number: number; secondary: number; subordinate: number }; devices?: QueryPciBus['devices'] };
  }>;
}

const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

/** A device of `query-pci` as far as walking the buses goes: a bridge lists the devices behind it. */
interface BridgedDevice<D> {
  pci_bridge?: { devices?: D[] };
}

/** Every device of `query-pci`, bus by bus, each bridge followed by the devices behind it. */
export function queryPciDevices<D extends BridgedDevice<D>>(buses: Array<{ devices: D[] }>): D[] {
  const out: D[] = [];
  const walk = (devices: D[]): void => {
    for (const d of devices) {
      out.push(d);
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices);
    }
  };
  for (const b of buses) walk(b.devices);
  return out;
}

/** Flattens `query-pci` into the same shape as parseInfoPci. */
export function fromQueryPci(buses: QueryPciBus[]): PciFunction[] {
  return queryPciDevices(buses).map((d) => ({
    bus: d.bus,
    slot: d.slot,
    function: d.function,
    className: d.class_info.desc ?? `Class ${String(d.class_info.class).padStart(4, '0')}`, // decimal, as info pci prints it
    vendorDevice: `${hex4(d.id.vendor)}:${hex4(d.id.device)}`,
    qdevId: d.qdev_id,
  }));
}

const key = (f: PciFunction): string => `${f.bus}:${f.slot}.${f.function}`;

/**
 * Differences between the two views, as human-readable lines; empty when they
 * agree on every function's address, vendor:device and qdev id.
 */
export function crossCheckPci(infoPci: PciFunction[], queryPci: PciFunction[]): string[] {
  const problems: string[] = [];
  const byKey = new Map(queryPci.map((f) => [key(f), f]));
  for (const f of infoPci) {
    const q = byKey.get(key(f));
    if (!q) {
      problems.push(`${key(f)} (${f.vendorDevice}) is in info pci but not in query-pci`);
      continue;
    }
    byKey.delete(key(f));
    if (q.vendorDevice !== f.vendorDevice) problems.push(`${key(f)}: vendor:device ${f.vendorDevice} vs ${q.vendorDevice}`);
    if (q.qdevId !== f.qdevId) problems.push(`${key(f)}: id "${f.qdevId}" vs "${q.qdevId}"`);
  }
  for (const q of byKey.values()) problems.push(`${key(q)} (${q.vendorDevice}) is in query-pci but not in info pci`);
  return problems;
}

/**
 * Which bus number is which bridge's (or root port's) bus: query-pci gives
 * each bridge's secondary bus number (`pci_bridge.bus.secondary`, assigned by
 * the guest's firmware, so not known before it ran) and its qdev id. Bus 0
 * is the root bus (no id). A bridge with no number yet (0) is left out: the
 * devices behind it are not listed by QEMU until the guest numbers it.
 */
export function bridgeBusIds(buses: QueryPciBus[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const d of queryPciDevices(buses)) {
    const sec = d.pci_bridge?.bus?.secondary;
    if (sec && d.qdev_id) out.set(sec, d.qdev_id);
  }
  return out;
}

/** The qdev id of the bus a function is on: undefined for the root bus (0), or for a bus no bridge of the map owns (then `known` is false). */
export function busIdOf(f: Pick<PciFunction, 'bus'>, ids: ReadonlyMap<number, string>): { id?: string; known: boolean } {
  if (f.bus === 0) return { known: true };
  const id = ids.get(f.bus);
  return id === undefined ? { known: false } : { id, known: true };
}
