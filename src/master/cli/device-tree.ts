/**
 * The device tree of `gnt-instance info`, from the node's runtime reply
 * (RuntimeNic/RuntimeDisk: pci_bus, pci, device_id; scsi_address and
 * disk_type for the kinds that have them): every bus (root bus, PCI bridge,
 * PCIe root port, SCSI controller), and on each its devices by slot or LUN.
 */
import { pciBusKind, pciBusOrder } from '../../common/pci-bus';
import type { RuntimeDisk__Output } from '../../generated/gnt/master/v1/RuntimeDisk';
import type { RuntimeNic__Output } from '../../generated/gnt/master/v1/RuntimeNic';
import { table } from './output';

interface TreeRow {
  bus: string;
  busKind: string;
  /** Sort position on the bus (slot, or LUN). */
  order: number;
  place: string;
  id: string;
  kind: string;
}

const UNPLACED = '(no place yet)';

function nicRow(n: RuntimeNic__Output): TreeRow {
  const bus = n.pciBus || (n.pci >= 0 ? 'pci.0' : UNPLACED);
  return { bus, busKind: pciBusKind(bus), order: n.pci, place: n.pci >= 0 ? `slot ${n.pci}` : '-', id: n.deviceId || n.uuid, kind: 'NIC' };
}

function diskRow(d: RuntimeDisk__Output): TreeRow {
  const pmem = d.diskType === 'pmem';
  if (d.scsiAddress) {
    // "CONTROLLER:TARGET:LUN", e.g. "scsi0:0:5"
    const [controller, target, lun] = d.scsiAddress.split(':');
    return { bus: controller, busKind: 'SCSI controller', order: Number(lun) || 0, place: `target ${target ?? '?'} LUN ${lun ?? '?'}`, id: d.deviceId || d.uuid, kind: 'disk (SCSI)' };
  }
  const bus = d.pciBus || (d.pci >= 0 ? 'pci.0' : UNPLACED);
  return { bus, busKind: pciBusKind(bus), order: d.pci, place: d.pci >= 0 ? `slot ${d.pci}` : '-', id: d.deviceId || d.uuid, kind: pmem ? 'disk (pmem)' : 'disk' };
}

function compareBus(a: string, b: string): number {
  const [ka, na] = pciBusOrder(a);
  const [kb, nb] = pciBusOrder(b);
  return ka - kb || na - nb || a.localeCompare(b);
}

/** The "Device tree" section; "" when the node reported no device. */
export function formatDeviceTree(nics: RuntimeNic__Output[], disks: RuntimeDisk__Output[]): string {
  const rows = [...nics.map(nicRow), ...disks.map(diskRow)];
  if (!rows.length) return '';
  const buses = [...new Set(rows.map((r) => r.bus))].sort(compareBus);
  const lines: (string | number)[][] = [];
  for (const bus of buses) {
    const on = rows.filter((r) => r.bus === bus).sort((a, b) => a.order - b.order);
    on.forEach((r, i) => lines.push([i === 0 ? `  ${bus}` : '', i === 0 ? r.busKind : '', r.place, r.id, r.kind]));
  }
  return `Device tree (node runtime):\n${table(['  Bus', 'Bus kind', 'Place', 'Device id', 'Kind'], lines)}`;
}
