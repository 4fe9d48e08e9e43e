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
import { InvalidArgumentError } from './errors';
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
