/**
 * The PCI slot map of one bus (PciSlotMap; bus 0 by default) and of the
 * whole tree (PciTreeMap): which of its 32 slots are free for a hotplugged
 * device, given the slots reserved for the machine's own devices, what QEMU
 * shows now (`info pci`) and what the runtime file records.
 */
import { NoFreePciSlotError, PciSlotTakenError, InvalidArgumentError } from './errors';
import type { PciFunction } from './pci-info';
import type { PciBus, PciTopology } from './pci-topology';

export const PCI_SLOTS = 32;

/**
 * Slots QEMU's default `pc` machine keeps for itself: 0 host bridge, 1 the
 * PIIX3 ISA/IDE/USB/ACPI functions, 2 VGA and 3 the first default device,
 * as Ganeti's default reservations. Devices we place start at slot 4.
 */
export const DEFAULT_RESERVED_SLOTS: readonly number[] = [0, 1, 2, 3];

export class PciSlotMap {
  private readonly holders = new Map<number, string>();

  constructor(
    private readonly instance: string,
    reserved: readonly number[] = DEFAULT_RESERVED_SLOTS,
  ) {
    for (const slot of reserved) this.holders.set(slot, 'the machine (reserved)');
  }

  /** Marks the slots QEMU reports on bus 0 as used. */
  addLive(functions: readonly PciFunction[]): this {
    for (const f of functions) {
      if (f.bus !== 0 || this.holders.has(f.slot)) continue;
      this.holders.set(f.slot, f.qdevId ? `device ${f.qdevId}` : `a ${f.className || 'PCI device'} (${f.vendorDevice})`);
    }
    return this;
  }

  /** Marks a slot the runtime file gives to a device as used. */
  addRecorded(slot: number, holder: string): this {
    if (!this.holders.has(slot)) this.holders.set(slot, holder);
    return this;
  }

  get used(): number {
    return this.holders.size;
  }

  holderOf(slot: number): string | undefined {
    return this.holders.get(slot);
  }

  /** The lowest free slot; NoFreePciSlotError when all 32 are used. */
  firstFree(): number {
    for (let slot = 0; slot < PCI_SLOTS; slot++) if (!this.holders.has(slot)) return slot;
    throw new NoFreePciSlotError(this.instance, this.used, PCI_SLOTS);
  }

  /** Checks that a requested slot exists and is free. */
  claim(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= PCI_SLOTS)
      throw new InvalidArgumentError(`PCI slot ${slot} is out of range (0 to ${PCI_SLOTS - 1})`);
    if (this.holders.has(slot)) throw new PciSlotTakenError(this.instance, slot, this.holders.get(slot) || 'another device');
    return slot;
  }
}

/** A place in the PCI tree: a slot of a bus (absent: the machine's root bus). */
export interface PciPlacement {
  bus?: string;
  slot: number;
}

export const placementText = (p: PciPlacement): string => `${p.bus ?? 'root bus'} slot ${p.slot}`;

/**
 * The slot maps of every bus of an instance's tree (pci-topology.ts): the
 * root bus with the machine's and the controllers' slots reserved, each
 * bridge or root port with the slots it has. Devices are placed on the
 * first hotplug bus with a free slot, in the tree's order: bus 0 first,
 * then the bridges (pc), or the root ports in order (q35).
 */
export class PciTreeMap {
  private readonly maps = new Map<string, { bus: PciBus; map: PciSlotMap }>();

  constructor(
    private readonly instance: string,
    readonly topology: PciTopology,
  ) {
    for (const bus of topology.buses) {
      const reserved = Array.from({ length: PCI_SLOTS }, (_, s) => s).filter((s) => !bus.slots.includes(s));
      const map = new PciSlotMap(instance, []);
      for (const s of reserved) map.addRecorded(s, bus.kind === 'root' ? topology.reserved.get(s) ?? 'the machine (reserved)' : `not a slot of ${bus.kind} ${bus.name}`);
      this.maps.set(bus.id ?? '', { bus, map });
    }
  }

  private entry(bus: string | undefined): { bus: PciBus; map: PciSlotMap } {
    const e = this.maps.get(bus ?? '');
    if (!e) throw new InvalidArgumentError(`PCI bus ${JSON.stringify(String(bus).slice(0, 40))} is not in the tree of instance ${this.instance} (${this.topology.buses.map((b) => b.name).join(', ')})`);
    return e;
  }

  /** Marks functions QEMU reports on a bus of the tree as used (busId: its qdev id, undefined for the root bus; unknown buses are ignored). */
  addLive(busId: string | undefined, functions: readonly PciFunction[]): this {
    const e = this.maps.get(busId ?? '');
    if (e) e.map.addLive(functions.map((f) => ({ ...f, bus: 0 })));
    return this;
  }

  /** Marks a recorded place as used (a place on a bus the tree lacks is ignored: runtime-validate refuses such files). */
  addRecorded(p: PciPlacement, holder: string): this {
    this.maps.get(p.bus ?? '')?.map.addRecorded(p.slot, holder);
    return this;
  }

  holderOf(p: PciPlacement): string | undefined {
    return this.maps.get(p.bus ?? '')?.map.holderOf(p.slot);
  }

  /** Used and usable slots of the buses devices are placed on. */
  usage(): { used: number; total: number; buses: Array<{ name: string; used: number; total: number }> } {
    const buses = [...this.maps.values()]
      .filter((e) => e.bus.hotplug)
      .map((e) => ({ name: e.bus.name, total: e.bus.slots.length, used: e.bus.slots.filter((s) => e.map.holderOf(s) !== undefined).length }));
    return { used: buses.reduce((a, b) => a + b.used, 0), total: buses.reduce((a, b) => a + b.total, 0), buses };
  }

  /** The first free place on a hotplug bus, in the tree's order; NoFreePciSlotError naming every bus when all are full. */
  firstFree(): PciPlacement {
    for (const { bus, map } of this.maps.values()) {
      if (!bus.hotplug) continue;
      const slot = bus.slots.find((s) => map.holderOf(s) === undefined);
      if (slot !== undefined) return bus.id === undefined ? { slot } : { bus: bus.id, slot };
    }
    const u = this.usage();
    if (!u.buses.length)
      throw new NoFreePciSlotError(this.instance, 0, 0, `its root bus ${this.topology.buses[0].name} takes no hotplug and it has no PCIe root port (hvparam pcie_root_ports, at the next start)`);
    const list = u.buses.map((b) => `${b.name} ${b.used} of ${b.total}`).join(', ');
    throw new NoFreePciSlotError(this.instance, u.used, u.total, `on ${u.buses.length} bus${u.buses.length === 1 ? '' : 'es'}: ${list}`);
  }

  /** The first free slot of the root bus (fixed devices: virtio-mem). */
  firstFreeOnRoot(): number {
    const { bus, map } = this.entry(undefined);
    const slot = bus.slots.find((s) => map.holderOf(s) === undefined);
    if (slot === undefined) throw new NoFreePciSlotError(this.instance, bus.slots.length, bus.slots.length, `on the root bus ${bus.name}`);
    return slot;
  }

  /** Checks that a requested place exists and is free. */
  claim(p: PciPlacement): PciPlacement {
    const { bus, map } = this.entry(p.bus);
    if (!Number.isInteger(p.slot) || p.slot < 0 || p.slot >= PCI_SLOTS)
      throw new InvalidArgumentError(`PCI slot ${p.slot} is out of range (0 to ${PCI_SLOTS - 1})`);
    const holder = map.holderOf(p.slot);
    if (holder !== undefined) {
      if (p.bus === undefined) throw new PciSlotTakenError(this.instance, p.slot, holder);
      throw new PciSlotTakenError(this.instance, p.slot, `${holder} (on ${bus.name})`);
    }
    return p.bus === undefined ? { slot: p.slot } : { bus: p.bus, slot: p.slot };
  }
}
