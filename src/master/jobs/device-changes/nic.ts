/**
 * NIC changes of a modify job (`--net add:mac=..,link=..,link_state=..,
 * rate=..,queues=..,model=..`, `--net N:mac=..,link=..,link_state=..,rate=..,
 * model=..`, `--net N:remove`): planned against a copy of the instance's
 * NICs, new MACs reserved; HotplugDevice with the Nic message, which for a
 * modify carries the NIC's whole state after the change (the node applies
 * what differs, live or by a replug, and says which in its reply).
 */
import { randomUUID } from 'node:crypto';
import { DEFAULT_NIC_PARAMS, nicParams, type ConfigStore, type InstanceConfig, type NicParams } from '../../config/config-store';
import { checkQueues, describeNicParams } from '../../nic-params';
import type { NicChangeOp } from '../ops';
import { checkMac } from '../../validate';
import type { PlanContext, PlannedChange } from './change-kind';
import { hotplugKind, outOfRange } from './hotplug';

export type NicChange =
  | ({ kind: 'nic'; action: 'add'; uuid: string; mac: string; link: string } & Partial<NicParams>)
  | ({ kind: 'nic'; action: 'modify'; uuid: string; mac: string; link: string; oldMac: string; oldLink: string } & Partial<Omit<NicParams, 'queues'>>)
  | { kind: 'nic'; action: 'remove'; uuid: string; mac: string };

type NicStep = PlannedChange<NicChange>;
interface NicView extends NicParams {
  uuid: string;
  mac: string;
  link: string;
}

const onLink = (link: string): string => (link ? ` on ${link}` : '');
const withParams = (p: Partial<NicParams>): string => {
  const d = describeNicParams(nicParams(p));
  return d ? `, ${d}` : '';
};

function planAdd(c: NicChangeOp, nics: NicView[], { macs, inst }: PlanContext): NicStep {
  const model = c.model || 'virtio';
  const params: NicParams = { link_state: c.linkState || 'up', rate_mbit: c.rate && c.rate > 0 ? c.rate : 0, queues: checkQueues(c.queues ?? 1, model, inst.maxvcpus, 'new NIC'), model };
  const mac = c.mac ? macs.reserve(checkMac(c.mac)) : macs.generate();
  const uuid = randomUUID();
  nics.push({ uuid, mac, link: c.link, ...params });
  return { kind: 'nic', what: `new NIC ${uuid} (${mac}${onLink(c.link)}${withParams(params)})`, change: { kind: 'nic', action: 'add', uuid, mac, link: c.link, ...params } };
}

function planModify(c: NicChangeOp, nics: NicView[], { macs }: PlanContext): NicStep {
  const cur = nics[c.index];
  const mac = c.mac && c.mac !== cur.mac ? macs.reserve(checkMac(c.mac)) : cur.mac;
  const link = c.link || cur.link;
  const params = { link_state: c.linkState || cur.link_state, rate_mbit: c.rate !== undefined && c.rate >= 0 ? c.rate : cur.rate_mbit, model: c.model || cur.model };
  nics[c.index] = { ...cur, mac, link, ...params };
  const changed = [
    mac !== cur.mac ? `mac ${mac}` : '',
    link !== cur.link ? `link ${link}` : '',
    params.link_state !== cur.link_state ? `link ${params.link_state}` : '',
    params.rate_mbit !== cur.rate_mbit ? (params.rate_mbit ? `rate ${params.rate_mbit} Mbit/s` : 'no rate limit') : '',
    params.model !== cur.model ? `model ${params.model}` : '',
  ].filter(Boolean);
  return {
    kind: 'nic',
    what: `NIC ${c.index} (${cur.uuid}) to ${changed.length ? changed.join(', ') : 'the same values'}`,
    change: { kind: 'nic', action: 'modify', uuid: cur.uuid, mac, link, oldMac: cur.mac, oldLink: cur.link, ...params },
  };
}

function planRemove(index: number, nics: NicView[]): NicStep {
  const cur = nics[index];
  nics.splice(index, 1);
  return { kind: 'nic', what: `NIC ${index} (${cur.uuid})`, change: { kind: 'nic', action: 'remove', uuid: cur.uuid, mac: cur.mac } };
}

function plan(ctx: PlanContext): NicStep[] {
  const nics: NicView[] = ctx.inst.nics.map((n) => ({ uuid: n.uuid, mac: n.mac, link: n.link, ...nicParams(n) }));
  return ctx.op.nics.map((c) => {
    if (c.action === 'ADD') return planAdd(c, nics, ctx);
    if (c.index >= nics.length) throw outOfRange(ctx.inst, 'NIC', c.index, nics.length);
    return c.action === 'MODIFY' ? planModify(c, nics, ctx) : planRemove(c.index, nics);
  });
}

/** A modify's parameters; a change recorded before they existed keeps the NIC's current ones. */
function modifyParams(c: Extract<NicChange, { action: 'modify' }>): Omit<NicParams, 'queues'> | undefined {
  if (c.link_state === undefined && c.rate_mbit === undefined && c.model === undefined) return undefined;
  return { link_state: c.link_state ?? DEFAULT_NIC_PARAMS.link_state, rate_mbit: c.rate_mbit ?? 0, model: c.model ?? DEFAULT_NIC_PARAMS.model };
}

function commit(config: ConfigStore, inst: InstanceConfig, c: NicChange): void {
  if (c.action === 'add') return config.appendNic(inst.uuid, c.uuid, c.mac, c.link, c);
  if (c.action === 'modify') return config.modifyNic(c.uuid, c.mac, c.link, modifyParams(c));
  return config.removeDevice('nics', c.uuid);
}

function commitSettled(config: ConfigStore, inst: InstanceConfig, c: NicChange): void {
  if (c.action === 'remove') return config.removeDevice('nics', c.uuid);
  const present = config.hasDevice('nics', c.uuid);
  if (c.action === 'modify') return present ? config.modifyNic(c.uuid, c.mac, c.link, modifyParams(c)) : undefined;
  if (!present) config.appendNic(inst.uuid, c.uuid, c.mac, c.link, c);
}

/** The Nic message: an add's parameters; a modify's state after the change (the node compares it with its record). */
function nicMessage(c: NicChange): Record<string, unknown> {
  if (c.action === 'remove') return { uuid: c.uuid, mac: '', link: '', pci: -1 };
  const p = nicParams(c);
  return { uuid: c.uuid, mac: c.mac, link: c.link, pci: -1, linkState: p.link_state, rateMbit: p.rate_mbit, queues: c.action === 'add' ? p.queues : 0, model: p.model };
}

function describe(c: NicChange): string {
  if (c.action === 'add') return `hot-add of new NIC ${c.uuid} (${c.mac}${onLink(c.link)}${withParams(c)})`;
  if (c.action === 'modify') return `hot-modify of NIC ${c.uuid} to ${c.mac}${onLink(c.link)}${withParams(c)}`;
  return `hot-remove of NIC ${c.uuid} (${c.mac})`;
}

export const nicChanges = hotplugKind<NicChange>({
  deviceType: 'NIC',
  table: 'nics',
  plan,
  device: (c) => ({ nic: nicMessage(c) }),
  commit,
  commitSettled,
  describe,
});
