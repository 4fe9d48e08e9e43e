/**
 * Reconciliation of vCPU and DIMM intents. A resize records each vCPU or
 * DIMM in the runtime file as "attaching" before its device_add and as
 * "detaching" before its device_del; after a crash, a timeout or a lost
 * monitor these records are settled against QEMU's own device list here,
 * the same rule as for NICs and disks: an attach QEMU has is kept, one it
 * lacks is dropped (with its memory backend); a removal is carried on, and
 * stays pending while the guest does not eject the device.
 */
import { detachCpu, type CpuRecord } from './cpu';
import { isOutcomeUnknown } from './errors';
import { backendId, detachDimm, type DimmRecord } from './memory';
import { ignoreNotFound, listDeviceIds } from './qdev';
import type { Monitor } from './qmp-client';
import type { ResourceState } from './resize';

/** Whether a vCPU or DIMM change is recorded but not settled. */
export const hasResourceIntents = (r: ResourceState): boolean => r.cpus.some((c) => c.state !== undefined) || r.dimms.some((d) => d.state !== undefined);

export interface ResourceSettlement {
  completed: string[];
  rolledBack: string[];
  pending: string[];
}

type Outcome = 'completed' | 'rolled back' | 'pending';

async function settleOne(
  rec: CpuRecord | DimmRecord,
  present: boolean,
  detach: () => Promise<void>,
  release: () => Promise<void>,
): Promise<Outcome> {
  if (rec.state === 'attaching') {
    if (present) {
      delete rec.state;
      return 'completed';
    }
    await release();
    return 'rolled back';
  }
  if (present) {
    try {
      await detach();
    } catch (err) {
      if (isOutcomeUnknown(err)) return 'pending';
      throw err;
    }
  } else await release();
  return 'completed';
}

/** How one kind of resource record is detached and released. */
interface ResourceSteps<R> {
  detach(rec: R): Promise<void>;
  release(rec: R): Promise<void>;
}

/** Settles the pending records of one list; returns the records to keep. */
async function settleList<R extends CpuRecord | DimmRecord>(
  list: R[],
  present: ReadonlySet<string>,
  steps: ResourceSteps<R>,
  note: (id: string, o: Outcome) => void,
): Promise<R[]> {
  const keep: R[] = [];
  for (const rec of list) {
    if (!rec.state) {
      keep.push(rec);
      continue;
    }
    const wasAttaching = rec.state === 'attaching';
    const o = await settleOne(rec, present.has(rec.id), () => steps.detach(rec), () => steps.release(rec));
    note(rec.id, o);
    if (o === 'pending' || (o === 'completed' && wasAttaching)) keep.push(rec);
  }
  return keep;
}

/** Settles the pending vCPU and DIMM records of `r` in place; the caller saves. */
export async function settleResourceIntents(mon: Monitor, r: ResourceState, unplugTimeoutMs: number): Promise<ResourceSettlement> {
  const out: ResourceSettlement = { completed: [], rolledBack: [], pending: [] };
  const ids = await listDeviceIds(mon);
  const note = (id: string, o: Outcome): void => void (o === 'completed' ? out.completed : o === 'pending' ? out.pending : out.rolledBack).push(id);
  r.cpus = await settleList(r.cpus, ids, { detach: (cpu) => detachCpu(mon, cpu, unplugTimeoutMs), release: async () => undefined }, note);
  r.dimms = await settleList(
    r.dimms,
    ids,
    {
      detach: (dimm) => detachDimm(mon, dimm, unplugTimeoutMs),
      release: (dimm) => ignoreNotFound(mon.execute('object-del', { id: backendId(dimm.id) })),
    },
    note,
  );
  return out;
}
