/**
 * The one owner of an instance's PCI slots. The slots its devices hold come
 * from the runtime file (every record, also one whose removal is pending, so
 * its slot stays reserved; the virtio-mem device); the slots QEMU uses for
 * devices no record names (the machine's own, or one added behind our back)
 * come from QEMU's lists (`info pci` cross-checked with `query-pci`), read
 * when the instance's monitor is first opened, at every reconcile, and again
 * after any attach QEMU refused. A hot-add then needs no QMP round trip to
 * find its slot. Used only inside the instance's queue.
 */
import { allDevices, idOf, slotOf } from './device-kinds';
import { crossCheckPci, fromQueryPci, parseInfoPci, type PciFunction, type QueryPciBus } from './pci-info';
import { PciSlotMap } from './pci-slots';
import type { Monitor } from './qmp-client';
import type { RuntimeData } from './runtime-file';

export class SlotOwner {
  /** Bus-0 functions QEMU had that no record named, as last read; undefined: read again. */
  private foreign: PciFunction[] | undefined;

  constructor(
    private readonly instance: string,
    private readonly warn: (message: string) => void,
  ) {}

  /** The slots the runtime file gives away (device ids, or a description). */
  private recorded(data: RuntimeData): Map<number, string> {
    const held = new Map<number, string>();
    for (const [kind, rec] of allDevices(data)) {
      const slot = slotOf(kind, rec);
      if (typeof slot === 'number') held.set(slot, rec.uuid ? idOf(kind, rec) : `a ${kind.label} from an old runtime file`);
    }
    const vmem = data.resources?.virtioMem;
    if (vmem) held.set(vmem.pci, `the virtio-mem device ${vmem.id}`);
    const scsi = data.scsi_controller;
    if (scsi) held.set(scsi.pci, scsi.id);
    return held;
  }

  /** Reads QEMU's lists and keeps the functions no record names. */
  async refresh(mon: Monitor, data: RuntimeData): Promise<PciFunction[]> {
    const [text, query] = await Promise.all([mon.hmp('info pci'), mon.execute<QueryPciBus[]>('query-pci')]);
    const live = parseInfoPci(text);
    const structured = fromQueryPci(query);
    const problems = crossCheckPci(live, structured);
    if (problems.length) this.warn(`info pci and query-pci disagree: ${problems.join('; ')}`);
    const held = this.recorded(data);
    for (const f of structured) {
      const want = held.get(f.slot);
      if (f.bus === 0 && f.function === 0 && want && !want.startsWith('a ') && f.qdevId && f.qdevId !== want)
        this.warn(`PCI slot ${f.slot}: the runtime file gives it to ${want}, QEMU has ${f.qdevId} there (gnt-instance verify shows and repairs it)`);
    }
    this.foreign = [...live, ...structured].filter((f) => f.bus === 0 && !held.has(f.slot));
    return [...live, ...structured];
  }

  /** Forget QEMU's view (QEMU restarted, or refused a slot we thought free). */
  invalidate(): void {
    this.foreign = undefined;
  }

  /** The slot map: records plus what QEMU uses otherwise. */
  async map(mon: Monitor, data: RuntimeData): Promise<PciSlotMap> {
    if (!this.foreign) await this.refresh(mon, data);
    const map = new PciSlotMap(this.instance).addLive(this.foreign ?? []);
    for (const [slot, holder] of this.recorded(data)) map.addRecorded(slot, holder);
    return map;
  }

  /** A free slot: the requested one if it is free, else the first free one. */
  async choose(mon: Monitor, data: RuntimeData, requested: number | undefined): Promise<number> {
    const map = await this.map(mon, data);
    return requested === undefined ? map.firstFree() : map.claim(requested);
  }
}
