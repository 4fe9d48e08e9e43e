/**
 * NIC changes of a modify job (`--net add:mac=..,link=..`, `--net N:mac=..`,
 * `--net N:remove`): planned against a copy of the instance's NICs, new
 * MACs reserved; HotplugDevice with the Nic message.
 */
import { randomUUID } from 'node:crypto';
import type { ConfigStore, InstanceConfig } from '../../config/config-store';
import { checkMac } from '../../validate';
import type { PlanContext, PlannedChange } from './change-kind';
import { hotplugKind, outOfRange } from './hotplug';

export type NicChange =
  | { kind: 'nic'; action: 'add'; uuid: string; mac: string; link: string }
  | { kind: 'nic'; action: 'modify'; uuid: string; mac: string; link: string; oldMac: string; oldLink: string }
  | { kind: 'nic'; action: 'remove'; uuid: string; mac: string };

type NicStep = PlannedChange<NicChange>;
interface NicView {
  uuid: string;
  mac: string;
  link: string;
}

const onLink = (link: string): string => (link ? ` on ${link}` : '');

function planAdd(c: { mac: string; link: string }, nics: NicView[], { macs }: PlanContext): NicStep {
  const mac = c.mac ? macs.reserve(checkMac(c.mac)) : macs.generate();
  const uuid = randomUUID();
  nics.push({ uuid, mac, link: c.link });
  return { kind: 'nic', what: `new NIC ${uuid} (${mac}${c.link ? ` on ${c.link}` : ''})`, change: { kind: 'nic', action: 'add', uuid, mac, link: c.link } };
}

function planModify(c: { index: number; mac: string; link: string }, nics: NicView[], { macs }: PlanContext): NicStep {
  const cur = nics[c.index];
  const mac = c.mac && c.mac !== cur.mac ? macs.reserve(checkMac(c.mac)) : cur.mac;
  const link = c.link || cur.link;
  nics[c.index] = { ...cur, mac, link };
  return {
    kind: 'nic',
    what: `NIC ${c.index} (${cur.uuid}) to ${mac}${link ? ` on ${link}` : ''}`,
    change: { kind: 'nic', action: 'modify', uuid: cur.uuid, mac, link, oldMac: cur.mac, oldLink: cur.link },
  };
}

function planRemove(index: number, nics: NicView[]): NicStep {
  const cur = nics[index];
  nics.splice(index, 1);
  return { kind: 'nic', what: `NIC ${index} (${cur.uuid})`, change: { kind: 'nic', action: 'remove', uuid: cur.uuid, mac: cur.mac } };
}

function plan(ctx: PlanContext): NicStep[] {
  const nics: NicView[] = ctx.inst.nics.map((n) => ({ uuid: n.uuid, mac: n.mac, link: n.link }));
  return ctx.op.nics.map((c) => {
    if (c.action === 'ADD') return planAdd(c, nics, ctx);
    if (c.index >= nics.length) throw outOfRange(ctx.inst, 'NIC', c.index, nics.length);
    return c.action === 'MODIFY' ? planModify(c, nics, ctx) : planRemove(c.index, nics);
  });
}

function commit(config: ConfigStore, inst: InstanceConfig, c: NicChange): void {
  if (c.action === 'add') return config.appendNic(inst.uuid, c.uuid, c.mac, c.link);
  if (c.action === 'modify') return config.modifyNic(c.uuid, c.mac, c.link);
  return config.removeDevice('nics', c.uuid);
}

function commitSettled(config: ConfigStore, inst: InstanceConfig, c: NicChange): void {
  if (c.action === 'remove') return config.removeDevice('nics', c.uuid);
  const present = config.hasDevice('nics', c.uuid);
  if (c.action === 'modify') return present ? config.modifyNic(c.uuid, c.mac, c.link) : undefined;
  if (!present) config.appendNic(inst.uuid, c.uuid, c.mac, c.link);
}

function describe(c: NicChange): string {
  if (c.action === 'add') return `hot-add of new NIC ${c.uuid} (${c.mac}${onLink(c.link)})`;
  if (c.action === 'modify') return `hot-modify of NIC ${c.uuid} to ${c.mac}${onLink(c.link)}`;
  return `hot-remove of NIC ${c.uuid} (${c.mac})`;
}

export const nicChanges = hotplugKind<NicChange>({
  deviceType: 'NIC',
  table: 'nics',
  plan,
  device: (c) => ({ nic: { uuid: c.uuid, mac: c.action === 'remove' ? '' : c.mac, link: c.action === 'remove' ? '' : c.link, pci: -1 } }),
  commit,
  commitSettled,
  describe,
});
