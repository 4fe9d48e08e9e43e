/**
 * The PCI slot map of bus 0: which of its 32 slots are free for a hotplugged
 * device, given the slots reserved for the machine's own devices, what QEMU
 * shows now (`info pci`) and what the runtime file records.
 */
import { NoFreePciSlotError, PciSlotTakenError, InvalidArgumentError } from './errors';
import type { PciFunction } from './pci-info';

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
