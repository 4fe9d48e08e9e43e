/** Where QEMU and the guest have the devices of a PCI tree (tests of pci-topology). */
import { bridgeBusIds, type QueryPciBus } from '../../src/hypervisor/pci-info';
import type { Monitor } from '../../src/hypervisor/qmp-client';

/** Bus id ('' for the root bus) -> the bus number the guest's firmware gave it. */
export async function busNumbers(mon: Monitor): Promise<Map<string, number>> {
  const query = await mon.execute<QueryPciBus[]>('query-pci');
  const out = new Map<string, number>([['', 0]]);
  for (const [num, id] of bridgeBusIds(query)) out.set(id, num);
  return out;
}

/** The guest's address of a device at `slot` of `bus` ("0000:01:05.0"). */
export function guestAddr(numbers: Map<string, number>, bus: string | undefined, slot: number): string {
  const n = numbers.get(bus ?? '');
  if (n === undefined) throw new Error(`bus ${bus} has no number in query-pci`);
  return `0000:${n.toString(16).padStart(2, '0')}:${slot.toString(16).padStart(2, '0')}.0`;
}

/** Every device id of query-pci with its bus id ('' root) and slot. */
export async function qemuPlaces(mon: Monitor): Promise<Map<string, string>> {
  const query = await mon.execute<QueryPciBus[]>('query-pci');
  const ids = bridgeBusIds(query);
  const out = new Map<string, string>();
  const walk = (devices: QueryPciBus['devices']): void => {
    for (const d of devices) {
      if (d.qdev_id) out.set(d.qdev_id, `${d.bus === 0 ? '' : ids.get(d.bus) ?? `?${d.bus}`}:${d.slot}`);
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices);
    }
  };
  for (const b of query) walk(b.devices);
  return out;
}
