/**
 * What a PCI bus id names, by the node's naming rule (src/hypervisor/
 * pci-topology.ts): the machine's root bus (pci.0 on pc, pcie.0 on q35), a
 * pci-bridge pcibN, or a pcie-root-port rpN. Pure, for the master's output.
 */
export type PciBusKind = 'root bus' | 'PCI bridge' | 'PCIe root port' | 'bus';

export function pciBusKind(id: string): PciBusKind {
  if (id === 'pci.0' || id === 'pcie.0') return 'root bus';
  if (/^pcib[1-9]\d*$/.test(id)) return 'PCI bridge';
  if (/^rp[1-9]\d*$/.test(id)) return 'PCIe root port';
  return 'bus';
}

/** Sort key of a bus: the root bus first, then bridges and ports by number. */
export function pciBusOrder(id: string): [number, number] {
  const kind = pciBusKind(id);
  const n = Number(/(\d+)$/.exec(id)?.[1] ?? 0);
  return [kind === 'root bus' ? 0 : kind === 'PCI bridge' ? 1 : kind === 'PCIe root port' ? 2 : 3, n];
}
