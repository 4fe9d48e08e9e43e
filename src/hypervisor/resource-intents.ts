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

/** Settles the pending vCPU and DIMM records of `r` in place; the caller saves. */
export async function settleResourceIntents(mon: Monitor, r: ResourceState, unplugTimeoutMs: number): Promise<ResourceSettlement> {
  const out: ResourceSettlement = { completed: [], rolledBack: [], pending: [] };
  const ids = await listDeviceIds(mon);
  const note = (id: string, o: Outcome): void => void (o === 'completed' ? out.completed : o === 'pending' ? out.pending : out.rolledBack).push(id);
  const keepCpu = new Set<CpuRecord>();
  for (const cpu of r.cpus) {
    if (!cpu.state) {
      keepCpu.add(cpu);
      continue;
    }
    const wasAttaching = cpu.state === 'attaching';
    const o = await settleOne(cpu, ids.has(cpu.id), () => detachCpu(mon, cpu, unplugTimeoutMs), async () => undefined);
    note(cpu.id, o);
    if (o === 'pending' || (o === 'completed' && wasAttaching)) keepCpu.add(cpu);
  }
  r.cpus = r.cpus.filter((c) => keepCpu.has(c));
  const keepDimm = new Set<DimmRecord>();
  for (const dimm of r.dimms) {
    if (!dimm.state) {
      keepDimm.add(dimm);
      continue;
    }
    const wasAttaching = dimm.state === 'attaching';
    const release = (): Promise<void> => ignoreNotFound(mon.execute('object-del', { id: backendId(dimm.id) }));
    const o = await settleOne(dimm, ids.has(dimm.id), () => detachDimm(mon, dimm, unplugTimeoutMs), release);
    note(dimm.id, o);
    if (o === 'pending' || (o === 'completed' && wasAttaching)) keepDimm.add(dimm);
  }
  r.dimms = r.dimms.filter((d) => keepDimm.has(d));
  return out;
}
