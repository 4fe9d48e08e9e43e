/**
 * The master's half of verify: an instance's configuration against the
 * node's runtime view, and which side is the truth for each difference.
 * Pure (no SQL, no RPC): verify.ts feeds it and applies the fixes.
 *
 * For a running instance the node is the truth about the live device set
 * (as in jobs/reconcile.ts), except where the difference is legitimate: a
 * change made without --hotplug is in the configuration only until the next
 * start. A difference counts as legitimate ("explained") when a modify job
 * of the instance changed that kind of device (NICs, disks, vCPUs/memory)
 * in the configuration only, after the instance's last start and after the
 * last live change of that device. Jobs do not record which device a
 * config-only change touched, so any such job explains every difference of
 * its kind: verify never undoes what an operator asked for. A device the
 * node's own repairs took away (VerifyGone) is always the node's truth.
 * For a stopped instance every difference applies at the next start.
 */
import type { NicParams } from './config/config-store';
import { describeNicParams } from './nic-params';
import { formatSize } from './validate';

export type DeviceClass = 'nic' | 'disk' | 'resources';

export interface ConfigNic {
  uuid: string;
  mac: string;
  link: string;
  removalPending: boolean;
  /** link_state, rate, queues, model; absent: not compared (older callers). */
  params?: NicParams;
}

export interface ConfigDisk {
  uuid: string;
  sizeBytes: number;
  removalPending: boolean;
}

export interface ConfigView {
  name: string;
  vcpus: number;
  maxvcpus: number;
  memoryMib: number;
  maxmemMib: number;
  nics: ConfigNic[];
  disks: ConfigDisk[];
}

export interface NodeNic {
  uuid: string;
  mac: string;
  link: string;
  state: string;
  params?: NicParams;
}

export interface NodeDisk {
  /** '' or 'scsi'; '' or 'pmem' (as the node reports them). */
  diskBus?: string;
  diskType?: string;
  /** '' (file), 'blockdev' or 'rbd', and what was adopted ('' none). */
  template?: string;
  adopt?: string;
  uuid: string;
  sizeBytes: number;
  state: string;
}

export interface NodeView {
  running: boolean;
  nics: NodeNic[];
  disks: NodeDisk[];
  /** Current vCPUs and memory (the pending values when a shrink waits for the next start); absent for old runtime files. */
  resources?: { vcpus: number; memoryMib: number };
}

export type ConfigFix =
  | { kind: 'drop-nic' | 'drop-disk'; uuid: string }
  | { kind: 'add-nic'; uuid: string; mac: string; link: string }
  | { kind: 'add-disk'; uuid: string; sizeBytes: number; diskBus?: string; diskType?: string; template?: string; adopt?: string }
  | { kind: 'update-nic'; uuid: string; mac: string; link: string; params?: NicParams }
  | { kind: 'set-resources'; vcpus: number; memoryMib: number };

export interface ConfigDiff {
  device: string;
  /** The NIC's or disk's uuid ('' for vCPUs/memory). */
  uuid: string;
  problem: string;
  /** Legitimate: reported, not counted. */
  note: boolean;
  fix?: ConfigFix;
}

/** What the job history says about an instance (verify.ts reads it from the job tables). */
export interface JobHistory {
  /** Id of the last successful job that started the instance (0: none). */
  lastSync: number;
  /** Per device uuid: the id of the last job that changed it live. */
  lastLive: ReadonlyMap<string, number>;
  /** Id of the last job that resized the instance live (0: none). */
  lastLiveResize: number;
  /** Modify jobs that changed the configuration only, with the kinds they changed. */
  configOnly: ReadonlyArray<{ id: number; nics: boolean; disks: boolean; resources: boolean }>;
}

export interface GoneDevice {
  kind: string;
  uuid: string;
  prefixOnly: boolean;
}

/** Whether the node is the truth for this device (or for vCPUs/memory). */
export type Truth = (cls: DeviceClass, uuid: string) => boolean;

export function truthFrom(h: JobHistory, gone: readonly GoneDevice[]): Truth {
  const isGone = (cls: DeviceClass, uuid: string): boolean =>
    gone.some((g) => g.kind === cls && (g.prefixOnly ? uuid.split('-')[0] === g.uuid : uuid === g.uuid));
  return (cls, uuid) => {
    if (isGone(cls, uuid)) return true;
    const after = Math.max(h.lastSync, cls === 'resources' ? h.lastLiveResize : (h.lastLive.get(uuid) ?? 0));
    const key = cls === 'nic' ? 'nics' : cls === 'disk' ? 'disks' : 'resources';
    return !h.configOnly.some((j) => j[key] && j.id > after);
  };
}

const nicText = (mac: string, link: string, params?: NicParams): string => {
  const p = params ? describeNicParams(params) : '';
  return `${mac}${link ? ` on ${link}` : ''}${p ? ` (${p})` : ''}`;
};
/** Whether the node's and the configuration's live parameters agree (not compared when either side lacks them). */
const sameParams = (a?: NicParams, b?: NicParams): boolean => !a || !b || describeNicParams(a) === describeNicParams(b);
const PENDING = 'a change made without --hotplug; it applies at the next start';

function compareNics(cfg: ConfigView, rt: NodeView, truth: Truth): ConfigDiff[] {
  const out: ConfigDiff[] = [];
  const onNode = new Map(rt.nics.map((n) => [n.uuid, n]));
  for (const c of cfg.nics) {
    const device = `NIC ${c.uuid}`;
    const n = onNode.get(c.uuid);
    if (!n) {
      if (c.removalPending || truth('nic', c.uuid))
        out.push({ device, uuid: c.uuid, problem: `in the configuration (${nicText(c.mac, c.link)}), the node does not have it${c.removalPending ? ' (its removal was pending)' : ''}`, note: false, fix: { kind: 'drop-nic', uuid: c.uuid } });
      else out.push({ device, uuid: c.uuid, problem: `in the configuration only: ${PENDING}`, note: true });
      continue;
    }
    if (n.state === 'detaching' || c.removalPending) {
      out.push({ device, uuid: c.uuid, problem: 'removal pending: the guest has not released it yet', note: true });
      continue;
    }
    if (n.mac === c.mac && n.link === c.link && sameParams(n.params, c.params)) continue;
    const problem = `${nicText(n.mac, n.link, n.params)} on the node, ${nicText(c.mac, c.link, c.params)} in the configuration`;
    if (truth('nic', c.uuid)) out.push({ device, uuid: c.uuid, problem, note: false, fix: { kind: 'update-nic', uuid: c.uuid, mac: n.mac, link: n.link, ...(n.params ? { params: n.params } : {}) } });
    else out.push({ device, uuid: c.uuid, problem: `${problem}: ${PENDING}`, note: true });
  }
  const inConfig = new Set(cfg.nics.map((c) => c.uuid));
  for (const n of rt.nics) {
    if (inConfig.has(n.uuid)) continue;
    const device = `NIC ${n.uuid}`;
    if (n.state) out.push({ device, uuid: n.uuid, problem: `on the node only, ${n.state === 'attaching' ? 'its hot-add not confirmed yet' : 'its removal pending'}`, note: true });
    else if (truth('nic', n.uuid)) out.push({ device, uuid: n.uuid, problem: `on the node (${nicText(n.mac, n.link)}), not in the configuration`, note: false, fix: { kind: 'add-nic', uuid: n.uuid, mac: n.mac, link: n.link } });
    else out.push({ device, uuid: n.uuid, problem: `on the node only: removed from the configuration by ${PENDING}`, note: true });
  }
  return out;
}

function compareDisks(cfg: ConfigView, rt: NodeView, truth: Truth): ConfigDiff[] {
  const out: ConfigDiff[] = [];
  const onNode = new Map(rt.disks.map((d) => [d.uuid, d]));
  for (const c of cfg.disks) {
    const device = `disk ${c.uuid}`;
    const d = onNode.get(c.uuid);
    if (d && (d.state === 'detaching' || c.removalPending)) out.push({ device, uuid: c.uuid, problem: 'removal pending: the guest has not released it yet', note: true });
    else if (d) continue;
    else if (c.removalPending || truth('disk', c.uuid))
      out.push({ device, uuid: c.uuid, problem: `in the configuration (${formatSize(c.sizeBytes)}), the node does not have it`, note: false, fix: { kind: 'drop-disk', uuid: c.uuid } });
    else out.push({ device, uuid: c.uuid, problem: `in the configuration only: ${PENDING}`, note: true });
  }
  const inConfig = new Set(cfg.disks.map((c) => c.uuid));
  for (const d of rt.disks) {
    if (inConfig.has(d.uuid)) continue;
    const device = `disk ${d.uuid}`;
    if (d.state) out.push({ device, uuid: d.uuid, problem: `on the node only, ${d.state === 'attaching' ? 'its hot-add not confirmed yet' : 'its removal pending'}`, note: true });
    else if (truth('disk', d.uuid)) out.push({ device, uuid: d.uuid, problem: `on the node (${d.sizeBytes > 0 ? formatSize(d.sizeBytes) : 'size unknown'}), not in the configuration`, note: false, fix: { kind: 'add-disk', uuid: d.uuid, sizeBytes: d.sizeBytes, diskBus: d.diskBus, diskType: d.diskType, template: d.template, adopt: d.adopt } });
    else out.push({ device, uuid: d.uuid, problem: `on the node only: removed from the configuration by ${PENDING}`, note: true });
  }
  return out;
}

function compareResources(cfg: ConfigView, rt: NodeView, truth: Truth): ConfigDiff[] {
  const r = rt.resources;
  if (!r || (r.vcpus === cfg.vcpus && r.memoryMib === cfg.memoryMib)) return [];
  const problem = `${r.vcpus} vCPUs and ${r.memoryMib} MiB on the node, ${cfg.vcpus} vCPUs and ${cfg.memoryMib} MiB in the configuration`;
  if (!truth('resources', '')) return [{ device: 'vCPUs/memory', uuid: '', problem: `${problem}: ${PENDING}`, note: true }];
  if (r.vcpus > cfg.maxvcpus || r.memoryMib > cfg.maxmemMib || r.vcpus < 1 || r.memoryMib < 1)
    return [{ device: 'vCPUs/memory', uuid: '', problem: `${problem}, outside the configured limits (maxvcpus ${cfg.maxvcpus}, maxmem ${cfg.maxmemMib} MiB)`, note: false }];
  return [{ device: 'vCPUs/memory', uuid: '', problem, note: false, fix: { kind: 'set-resources', vcpus: r.vcpus, memoryMib: r.memoryMib } }];
}

/** Every difference between the configuration and the node's view of one instance. */
export function compareConfig(cfg: ConfigView, rt: NodeView, truth: Truth): ConfigDiff[] {
  const all = [...compareNics(cfg, rt, truth), ...compareDisks(cfg, rt, truth), ...compareResources(cfg, rt, truth)];
  if (rt.running) return all;
  // Stopped: the next start sends the configuration to the node.
  return all.map((d) => (d.note ? d : { device: d.device, uuid: d.uuid, problem: `${d.problem.replace(/: a change made.*$/, '')} (stopped: the next start applies the configuration)`, note: true }));
}

/** Fixes in the order they keep device indices dense: drops first. */
export function orderFixes(diffs: readonly ConfigDiff[]): ConfigDiff[] {
  const rank = (d: ConfigDiff): number => (d.fix?.kind.startsWith('drop') ? 0 : d.fix?.kind.startsWith('add') ? 2 : 1);
  return [...diffs].sort((a, b) => rank(a) - rank(b));
}

export function describeFix(f: ConfigFix): string {
  switch (f.kind) {
    case 'drop-nic':
      return `NIC ${f.uuid} dropped from the configuration`;
    case 'drop-disk':
      return `disk ${f.uuid} dropped from the configuration`;
    case 'add-nic':
      return `NIC ${f.uuid} (${nicText(f.mac, f.link)}) added to the configuration`;
    case 'add-disk':
      return `disk ${f.uuid} (${formatSize(f.sizeBytes)}) added to the configuration`;
    case 'update-nic':
      return `NIC ${f.uuid} set to ${nicText(f.mac, f.link, f.params)} in the configuration`;
    case 'set-resources':
      return `configuration set to ${f.vcpus} vCPUs and ${f.memoryMib} MiB`;
  }
}
