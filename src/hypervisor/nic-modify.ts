/**
 * A NIC modify, split by what it needs: a new bridge, link state or rate is
 * applied live on the running NIC (the tap moves between bridges with its
 * fds in QEMU, set_link, tc on the tap), the guest's PCI bus untouched; a
 * new MAC or model needs a new device, i.e. a replug at the same slot, which
 * then carries every other change of the same modify (the new tap is made on
 * the new bridge with the new rate, the link set before the guest uses it),
 * so nothing is applied twice. A failure of a live change undoes the ones
 * before it: host, QEMU and record stay as they were.
 */
import type { NicRequest, RemovalResult } from './device-operations';
import type { DeviceRecord } from './device-kinds';
import { DeviceNotFoundError, InstanceStateError, InvalidArgumentError, errorMessage, isOutcomeUnknown } from './errors';
import type { OperationRunner } from './operation-runner';
import { inTransaction } from './hotplug-transaction';
import { checkNicQueues, isNicModel, nicLinkState, nicModel, normalizeMac, setNicLink, type LinkState, type NicModel } from './nic';
import type { Monitor } from './qmp-client';
import type { NicRecord } from './runtime-file';
import { assertBridge, moveTap, tapBridge } from './tap';
import { checkRate, readTapRate, setTapRate } from './tap-rate';

/** What a modify asks for; absent: keep. rate_mbit 0 removes the limit. */
export interface NicChangeRequest {
  mac?: string;
  link?: string;
  link_state?: LinkState;
  rate_mbit?: number;
  model?: NicModel;
}

export type ApplyHow = 'live' | 'replug';

export interface NicModifyPlan {
  /** The record after the change (without tap or state). */
  next: NicRecord;
  /** Whether the NIC must be unplugged and plugged again. */
  replug: boolean;
  /** One entry per key that changes, e.g. "link=br2: live". */
  applied: string[];
  /** The live changes, in the order they are applied. */
  live: Array<'link' | 'rate_mbit' | 'link_state'>;
}

function checkChange(change: NicChangeRequest): void {
  if (change.link !== undefined) assertBridge(change.link);
  if (change.link_state !== undefined && change.link_state !== 'up' && change.link_state !== 'down')
    throw new InvalidArgumentError('link_state must be up or down');
  if (change.rate_mbit !== undefined) checkRate(change.rate_mbit);
  if (change.model !== undefined && !isNicModel(change.model)) throw new InvalidArgumentError('NIC model must be virtio, e1000 or rtl8139');
}

/** Sets or clears an optional field so that defaults are not written (absent = default). */
function setField<K extends 'link_state' | 'rate_mbit' | 'model'>(rec: NicRecord, key: K, value: NicRecord[K], dflt: NicRecord[K]): void {
  if (value === undefined || value === dflt) delete rec[key];
  else rec[key] = value;
}

/** Checks the change whole and says how each part is applied; changes nothing. */
export function planNicModify(old: NicRecord, change: NicChangeRequest, maxVcpus: number | undefined): NicModifyPlan {
  checkChange(change);
  const next: NicRecord = { ...old };
  delete next.tap;
  delete next.state;
  const mac = change.mac !== undefined ? normalizeMac(change.mac) : old.mac;
  const model = change.model ?? nicModel(old);
  const replug = mac !== old.mac || model !== nicModel(old);
  checkNicQueues(old.queues ?? 1, model, maxVcpus);
  next.mac = mac;
  setField(next, 'model', model, 'virtio');
  const how: ApplyHow = replug ? 'replug' : 'live';
  const applied: string[] = [];
  const live: NicModifyPlan['live'] = [];
  if (mac !== old.mac) applied.push(`mac=${mac}: replug`);
  if (model !== nicModel(old)) applied.push(`model=${model}: replug`);
  if (change.link !== undefined && change.link !== old.link) {
    next.link = change.link;
    applied.push(`link=${change.link}: ${how}`);
    live.push('link');
  }
  if (change.rate_mbit !== undefined && change.rate_mbit !== (old.rate_mbit ?? 0)) {
    setField(next, 'rate_mbit', change.rate_mbit, 0);
    applied.push(`rate=${change.rate_mbit || 'none'}: ${how}`);
    live.push('rate_mbit');
  }
  if (change.link_state !== undefined && change.link_state !== nicLinkState(old)) {
    setField(next, 'link_state', change.link_state, 'up');
    applied.push(`link_state=${change.link_state}: ${how}`);
    live.push('link_state');
  }
  return { next, replug, applied, live: replug ? [] : live };
}

/**
 * Applies the plan's live changes to the running NIC `rec` (at `slot`,
 * backed by `rec.tap`), each undone if a later one fails. The caller records
 * plan.next afterwards.
 */
export async function applyLiveNicChanges(mon: Monitor, rec: NicRecord, slot: number, plan: NicModifyPlan): Promise<void> {
  const tap = rec.tap;
  if (!tap && plan.live.some((k) => k !== 'link_state')) throw new InvalidArgumentError(`NIC ${rec.uuid} has no tap recorded; restart the instance once before changing its bridge or rate`);
  await inTransaction(`live modify of NIC ${rec.uuid}`, async (tx) => {
    for (const key of plan.live) {
      if (key === 'link') {
        const from = tapBridge(tap as string);
        await tx.step('bridge', async () => moveTap(tap as string, from, plan.next.link), async () => moveTap(tap as string, plan.next.link, from));
      } else if (key === 'rate_mbit') {
        const before = readTapRate(tap as string);
        await tx.step('rate', async () => setTapRate(tap as string, plan.next.rate_mbit ?? 0), async () => setTapRate(tap as string, before));
      } else {
        const state = nicLinkState(plan.next);
        await tx.step('set_link', () => setNicLink(mon, rec, slot, state), () => setNicLink(mon, rec, slot, nicLinkState(rec)));
      }
    }
  });
}

/** A modify's result: the record and how each change was applied ("link=br2: live"). */
export interface NicModifyResult {
  record: NicRecord;
  applied: string[];
}

/** What a modify needs from the instance's device operations (device-operations.ts). */
export interface NicModifyHost {
  readonly name: string;
  readonly runner: OperationRunner;
  readonly maxVcpus: number | undefined;
  save(): void;
  monitor(): Promise<Monitor>;
  requireRunning(): void;
  remove(uuid: string): Promise<RemovalResult<DeviceRecord>>;
  addNic(req: NicRequest): Promise<NicRecord>;
}

/** A record without its pending state, as callers see it (device-operations.ts publicRecord). */
function settled(rec: NicRecord): NicRecord {
  const copy = { ...rec };
  delete copy.state;
  return copy;
}

/** The request that adds `rec` again (at `slot`, by default its own). */
export const nicReaddRequest = (rec: NicRecord, slot?: number): NicRequest => ({ ...settled(rec), slot: slot ?? rec.pci ?? undefined });

/**
 * A NIC modify: a new bridge, link state or rate is applied live; a new MAC
 * or model removes the NIC and adds it again at the same slot, carrying the
 * other changes. Runs inside the instance's queue.
 */
export async function runNicModify(h: NicModifyHost, uuid: string, old: NicRecord | undefined, change: NicChangeRequest): Promise<NicModifyResult> {
  if (!old) throw new DeviceNotFoundError(h.name, `NIC with uuid ${uuid}`);
  if (old.state) throw new InstanceStateError(`NIC ${uuid} of ${h.name} is ${old.state === 'detaching' ? 'being removed (removal pending)' : 'being added'}; it cannot be modified now`);
  const plan = planNicModify(old, change, h.maxVcpus);
  if (!plan.applied.length) throw new InvalidArgumentError(`modify of NIC ${uuid} on ${h.name}: nothing changes (every given value is the current one)`);
  if (!plan.replug) return modifyLive(h, old, plan);
  const record = await replug(h, old, nicReaddRequest(plan.next, old.pci ?? undefined), plan.applied);
  return { record, applied: plan.applied };
}

async function modifyLive(h: NicModifyHost, rec: NicRecord, plan: NicModifyPlan): Promise<NicModifyResult> {
  if (rec.pci === null) throw new InstanceStateError(`NIC ${rec.uuid} of ${h.name} has no PCI slot recorded (old runtime file); restart the instance once to give it one`);
  h.requireRunning();
  const mon = await h.monitor();
  await applyLiveNicChanges(mon, rec, rec.pci, plan);
  const tap = rec.tap;
  for (const k of ['link', 'link_state', 'rate_mbit'] as const) delete rec[k];
  Object.assign(rec, plan.next, tap ? { tap } : {});
  const record = settled(rec);
  h.runner.settleCurrent('modify', 'succeeded', { result: { ...record, applied: plan.applied } });
  h.save();
  return { record, applied: plan.applied };
}

/** A new MAC or model: remove the NIC and add it again at the same slot. */
async function replug(h: NicModifyHost, old: NicRecord, next: NicRequest, applied: string[]): Promise<NicRecord> {
  const uuid = old.uuid;
  // Saved with the removal's intent: a crash between the removal and the
  // new add is repaired by putting the old NIC back (restoreModified).
  if (h.runner.current) h.runner.current.request = { before: settled(old) };
  const removal = await h.remove(uuid);
  if (removal.pending) throw new InstanceStateError(`modify of NIC ${uuid} on ${h.name}: the guest did not release the old NIC in time; its removal is pending, and the new one was not added`);
  let rec: NicRecord;
  try {
    rec = await h.addNic(next);
  } catch (err) {
    if (isOutcomeUnknown(err)) throw err;
    const restore = await h.addNic(nicReaddRequest(old, next.slot)).then(
      () => 'the old NIC was put back',
      (e) => `putting the old NIC back failed too: ${errorMessage(e)}`,
    );
    throw new InstanceStateError(`modify of NIC ${uuid} on ${h.name}: ${errorMessage(err)}; ${restore}`);
  }
  h.runner.settleCurrent('modify', 'succeeded', { result: { ...rec, applied } });
  h.save();
  return rec;
}
