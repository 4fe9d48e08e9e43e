/**
 * The PCI tree of an instance, from its machine type (the fixed command's
 * -machine) and its hvparams alone, so that a restart and a migration target
 * build exactly the same tree:
 *
 *   pc   root bus pci.0 (slots 0-3 the machine's own), then `pci_bridges`
 *        pci-bridge devices pcib1..pcibN on pci.0 slots 0x1f, 0x1e, ...,
 *        each a bus of 32 slots (ACPI hotplug behind bridges, on by default
 *        on pc, serves all of them, slot 0 included).
 *   q35  root bus pcie.0 (slot 0 the host bridge, 0x1f the ICH9 functions),
 *        `pcie_root_ports` pcie-root-port devices rp1..rpN packed 8 to a slot
 *        as multifunction devices on pcie.0 from slot 1, each a bus with the
 *        one slot 0 (native PCIe hotplug). Devices we place go into ports;
 *        pcie.0 itself takes only fixed devices (virtio-mem), as integrated
 *        endpoints the guest cannot eject (pcie.0 has no hotplug on q35).
 *
 * Runtime files from before this module have neither hvparam: no
 * controllers, the layout they had. layoutRuntime records the defaults.
 */
import { HVPARAM_LIMITS, isQ35Machine } from '../common/hvparams';
import { InvalidArgumentError } from './errors';
import type { HvParams } from './runtime-file';
import { agentChannelSlot } from './guest-agent-channel';

export type MachineFamily = 'pc' | 'q35';

export interface PciBus {
  /** The bus's qdev id (its controller's id); undefined for the root bus. */
  id?: string;
  /** The name in messages and QEMU: pci.0, pcie.0, pcib1, rp3. */
  name: string;
  kind: 'root' | 'pci-bridge' | 'pcie-root-port';
  /** The slots a device we place may take, in order of choice. */
  slots: readonly number[];
  /** Devices are hot-added here (false: the q35 root bus, fixed devices only). */
  hotplug: boolean;
}

export interface PciTopology {
  machine: MachineFamily;
  /** Root-bus slots no device of ours may take, with who holds them. */
  reserved: ReadonlyMap<number, string>;
  /** Every bus, the root bus first, then the controllers in order (the order of choice). */
  buses: readonly PciBus[];
  /** The controllers' QEMU arguments; they go before every device that sits behind them. */
  args: readonly string[];
}

/** Slots of pc's pci.0 the machine keeps (Ganeti's default reservations). */
export const PC_RESERVED = [0, 1, 2, 3];
/** Slots of q35's pcie.0: 0 host bridge, 0x1f ICH9 LPC/SATA/SMBus. */
export const Q35_RESERVED = [0, 0x1f];
const PORTS_PER_SLOT = 8;
const FIRST_PORT_SLOT = 1;
const ALL_SLOTS = Array.from({ length: 32 }, (_, i) => i);

export const hex = (n: number): string => `0x${n.toString(16)}`;

/** The -machine value of a fixed command (pc when absent). */
export function machineOf(kvmCmd: readonly string[]): string {
  const i = kvmCmd.indexOf('-machine');
  return i >= 0 && i + 1 < kvmCmd.length ? kvmCmd[i + 1] : 'pc';
}

export const machineFamily = (machine: string): MachineFamily => (isQ35Machine(machine) ? 'q35' : 'pc');

/** An integer hvparam within its limits; `fallback` when absent. */
function count(hv: HvParams, key: 'pci_bridges' | 'pcie_root_ports', fallback: number): number {
  const v = hv[key];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  const { min, max } = HVPARAM_LIMITS[key];
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`hvparam ${key}=${String(v).slice(0, 20)} is not a whole number from ${min} to ${max}`);
  return n;
}

/** Slot of pci.0 bridge `i` (1-based): from the top down, far from Ganeti's low slots. */
export const bridgeSlot = (i: number): number => 32 - i;

/** pcie.0 slot and function of root port `k` (1-based). */
export function portAddress(k: number): { slot: number; fn: number } {
  return { slot: FIRST_PORT_SLOT + Math.floor((k - 1) / PORTS_PER_SLOT), fn: (k - 1) % PORTS_PER_SLOT };
}

/**
 * Windows the firmware opens behind each (empty) bridge at boot, sized for
 * 32 hot-added virtio devices: I/O for their legacy BARs (at most 64 bytes
 * each), 32-bit memory for the MSI-X BAR (4 KiB) and a NIC's option ROM
 * (256 KiB) each, 64-bit prefetchable memory for the virtio BAR (16 KiB
 * each). Without them the firmware sizes the windows for no device, and the
 * guest cannot fit the BARs of the later devices: QEMU and the guest's PCI
 * list have them, but their drivers never bind (seen with 30 of 60 devices
 * behind the first bridge).
 */
const BRIDGE_RESERVE = 'io-reserve=4K,mem-reserve=16M,pref64-reserve=16M';

function pcTopology(bridges: number): PciTopology {
  const reserved = new Map<number, string>(PC_RESERVED.map((s) => [s, 'the machine (reserved)']));
  reserved.set(agentChannelSlot('pc'), 'the guest agent channel (virtio-serial)');
  const buses: PciBus[] = [];
  const args: string[] = [];
  for (let i = 1; i <= bridges; i++) {
    const id = `pcib${i}`;
    reserved.set(bridgeSlot(i), `PCI bridge ${id}`);
    buses.push({ id, name: id, kind: 'pci-bridge', slots: ALL_SLOTS, hotplug: true });
    args.push('-device', `pci-bridge,id=${id},bus=pci.0,addr=${hex(bridgeSlot(i))},chassis_nr=${i},${BRIDGE_RESERVE}`);
  }
  const root: PciBus = { name: 'pci.0', kind: 'root', slots: ALL_SLOTS.filter((s) => !reserved.has(s)), hotplug: true };
  return { machine: 'pc', reserved, buses: [root, ...buses], args };
}

function q35Topology(ports: number): PciTopology {
  const reserved = new Map<number, string>([[0, 'the host bridge'], [0x1f, 'the ICH9 functions'], [agentChannelSlot('q35'), 'the guest agent channel (virtio-serial)']]);
  const buses: PciBus[] = [];
  const args: string[] = [];
  for (let k = 1; k <= ports; k++) {
    const id = `rp${k}`;
    const { slot, fn } = portAddress(k);
    reserved.set(slot, `PCIe root ports from rp${k - fn}`);
    buses.push({ id, name: id, kind: 'pcie-root-port', slots: [0], hotplug: true });
    // io-reserve=0: virtio devices behind a PCIe port are modern-only and need no I/O window, and 4 KiB each would exhaust the 64 KiB I/O space.
    args.push('-device', `pcie-root-port,id=${id},bus=pcie.0,addr=${hex(slot)}.${hex(fn)}${fn === 0 ? ',multifunction=on' : ''},chassis=${k},io-reserve=0`);
  }
  const root: PciBus = { name: 'pcie.0', kind: 'root', slots: ALL_SLOTS.filter((s) => !reserved.has(s)), hotplug: false };
  return { machine: 'q35', reserved, buses: [root, ...buses], args };
}

/** The tree a runtime file gives (its fixed command's machine and its hvparams). */
export function pciTopology(data: { kvm_cmd: readonly string[]; hvparams: HvParams }): PciTopology {
  const family = machineFamily(machineOf(data.kvm_cmd));
  const hv = data.hvparams;
  if (family === 'q35') {
    if (hv.pci_bridges !== undefined) throw new InvalidArgumentError('hvparam pci_bridges is for pc machines; a q35 machine gets pcie_root_ports');
    return q35Topology(count(hv, 'pcie_root_ports', 0));
  }
  if (hv.pcie_root_ports !== undefined) throw new InvalidArgumentError('hvparam pcie_root_ports is for q35 machines; a pc machine gets pci_bridges');
  return pcTopology(count(hv, 'pci_bridges', 0));
}

/** The bus a record names (undefined: the root bus), or undefined when the tree has no such bus. */
export function busOf(topology: PciTopology, bus: string | undefined): PciBus | undefined {
  return bus === undefined ? topology.buses[0] : topology.buses.find((b) => b.id === bus);
}

/** Why (bus, slot) is not a place for a device of ours in this tree, or undefined. */
export function placementProblem(topology: PciTopology, bus: string | undefined, slot: number): string | undefined {
  const b = busOf(topology, bus);
  if (!b) return `there is no PCI bus ${JSON.stringify(String(bus).slice(0, 40))} in this instance's tree (${topology.buses.map((x) => x.name).join(', ')})`;
  if (!b.slots.includes(slot)) return `slot ${slot} of ${b.name} is not one devices may take (${b.kind === 'root' ? `reserved: ${topology.reserved.get(slot) ?? 'out of range'}` : `a ${b.kind} has slot${b.slots.length > 1 ? 's' : ''} ${b.slots.length > 1 ? `${b.slots[0]}-${b.slots[b.slots.length - 1]}` : b.slots[0]}`})`;
  return undefined;
}

/** The default bridge count of a pc instance: see HVPARAMS.pci_bridges. */
export const DEFAULT_PCI_BRIDGES = 2;

/**
 * The default root-port count of a q35 instance, KubeVirt's rule (PR 14754):
 * the cold-plugged devices get a port each, plus 3 free ones when the
 * instance's memory limit is at most 2 GiB, or free ones up to 32 ports in
 * all (at least 3 free) above that.
 */
export function defaultRootPorts(coldDevices: number, maxMemoryMiB: number): number {
  const free = maxMemoryMiB <= 2048 ? 3 : Math.max(3, 32 - coldDevices);
  return Math.min(HVPARAM_LIMITS.pcie_root_ports.max, coldDevices + free);
}

/** hvparams with the tree's defaults written in (a new layout), so that the tree stays fixed from now on. */
export function withTopologyDefaults(hv: HvParams, machine: string, coldDevices: number, maxMemoryMiB: number): HvParams {
  const out = { ...hv };
  if (machineFamily(machine) === 'q35') {
    if (out.pcie_root_ports === undefined) out.pcie_root_ports = defaultRootPorts(coldDevices, maxMemoryMiB);
  } else if (out.pci_bridges === undefined) out.pci_bridges = DEFAULT_PCI_BRIDGES;
  return out;
}
