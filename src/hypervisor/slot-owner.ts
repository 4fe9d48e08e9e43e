/**
 * The one owner of an instance's PCI tree: which buses exist (pci-topology.ts,
 * from the machine and hvparams), which slots of each are free, and who holds
 * the others. The places its devices hold come from the runtime file (every
 * record, also one whose removal is pending, so its place stays reserved; the
 * virtio-mem device); the slots QEMU uses for devices no record names (the
 * machine's own, or one added behind our back) come from QEMU's lists
 * (`info pci` cross-checked with `query-pci`; a bridge's bus number is mapped
 * to its qdev id by query-pci's `pci_bridge.bus`), read when the instance's
 * monitor is first opened, at every reconcile, and again after any attach
 * QEMU refused. A hot-add then needs no QMP round trip to find its place.
 * Placement goes bus 0 first, then the bridges in order (pc), or the root
 * ports in order (q35). Used only inside the instance's queue.
 */
import { allDevices, idOf, slotOf } from './device-kinds';
import { bridgeBusIds, busIdOf, crossCheckPci, fromQueryPci, parseInfoPci, type PciFunction, type QueryPciBus } from './pci-info';
import { PciTreeMap, type PciPlacement } from './pci-slots';
import { pciTopology, type PciTopology } from './pci-topology';
import type { Monitor } from './qmp-client';
import type { RuntimeData } from './runtime-file';

const placeKey = (bus: string | undefined, slot: number): string => `${bus ?? ''}:${slot}`;

/** A place the runtime file gives away: its holder as messages name it, and the QEMU id that must sit there when it is known. */
export interface RecordedPlace {
  place: PciPlacement;
  holder: string;
  id?: string;
}

/** The places the runtime file gives away, with their holders (device ids, or a description). */
export function recordedPlaces(data: RuntimeData): Map<string, RecordedPlace> {
  const held = new Map<string, RecordedPlace>();
  const hold = (bus: string | undefined, slot: number, holder: string, id?: string): void => {
    held.set(placeKey(bus, slot), { place: bus === undefined ? { slot } : { bus, slot }, holder, ...(id ? { id } : {}) });
  };
  for (const [kind, rec] of allDevices(data)) {
    const slot = slotOf(kind, rec);
    if (typeof slot !== 'number') continue; // no PCI slot: an old record without one, or a kind that takes none (SCSI LUNs)
    const id = rec.uuid ? idOf(kind, rec) : undefined;
    hold((rec as { bus?: string }).bus, slot, id ?? `a ${kind.label} from an old runtime file`, id);
  }
  const vmem = data.resources?.virtioMem;
  if (vmem) hold(undefined, vmem.pci, `the virtio-mem device ${vmem.id}`, vmem.id);
  const scsi = data.scsi_controller;
  if (scsi) hold(scsi.bus, scsi.pci, `the SCSI controller ${scsi.id}`, scsi.id);
  return held;
}

/** A tree map of `data`'s topology with its recorded places. */
export function recordedTree(instance: string, data: RuntimeData, topology: PciTopology = pciTopology(data)): PciTreeMap {
  const map = new PciTreeMap(instance, topology);
  for (const { place, holder } of recordedPlaces(data).values()) map.addRecorded(place, holder);
  return map;
}

export class SlotOwner {
  /** Functions QEMU had that no record names, by bus id ('' root), as last read; undefined: read again. */
  private foreign: Map<string, PciFunction[]> | undefined;

  constructor(
    private readonly instance: string,
    private readonly warn: (message: string) => void,
  ) {}

  /** Reads QEMU's lists and keeps the functions no record names. */
  async refresh(mon: Monitor, data: RuntimeData): Promise<PciFunction[]> {
    const [text, query] = await Promise.all([mon.hmp('info pci'), mon.execute<QueryPciBus[]>('query-pci')]);
    const live = parseInfoPci(text);
    const structured = fromQueryPci(query);
    const problems = crossCheckPci(live, structured);
    if (problems.length) this.warn(`info pci and query-pci disagree: ${problems.join('; ')}`);
    const ids = bridgeBusIds(query);
    const held = recordedPlaces(data);
    const foreign = new Map<string, PciFunction[]>();
    const all = [...live, ...structured];
    for (const [i, f] of all.entries()) {
      const bus = busIdOf(f, ids);
      if (!bus.known) continue; // a bus of no bridge we know (not numbered yet, or not ours)
      const want = held.get(placeKey(bus.id, f.slot));
      if (i >= live.length && f.function === 0 && want?.id && f.qdevId && f.qdevId !== want.id)
        this.warn(`PCI ${bus.id ?? 'root bus'} slot ${f.slot}: the runtime file gives it to ${want.holder}, QEMU has ${f.qdevId} there (gnt-instance verify shows and repairs it)`);
      if (want) continue;
      const list = foreign.get(bus.id ?? '') ?? [];
      list.push(f);
      foreign.set(bus.id ?? '', list);
    }
    this.foreign = foreign;
    return all;
  }

  /** Forget QEMU's view (QEMU restarted, or refused a slot we thought free). */
  invalidate(): void {
    this.foreign = undefined;
  }

  /** The tree map: records plus what QEMU uses otherwise. */
  async map(mon: Monitor, data: RuntimeData): Promise<PciTreeMap> {
    if (!this.foreign) await this.refresh(mon, data);
    const map = recordedTree(this.instance, data);
    for (const [bus, fns] of this.foreign ?? []) map.addLive(bus || undefined, fns);
    return map;
  }

  /** A free place: the requested one if it is free, else the first free one (bus 0 first, then the bridges or root ports). */
  async choose(mon: Monitor, data: RuntimeData, requested: PciPlacement | undefined): Promise<PciPlacement> {
    const map = await this.map(mon, data);
    return requested === undefined ? map.firstFree() : map.claim(requested);
  }
}
