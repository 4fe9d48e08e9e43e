/**
 * Turns a SubmitJobRequest into a normalized, validated operation with the
 * locks its job needs. Everything that can be checked without the
 * configuration is checked here, at submission; the rest when the job runs.
 */
import type { SubmitJobRequest__Output } from '../../generated/gnt/master/v1/SubmitJobRequest';
import type { InstanceAddOp__Output } from '../../generated/gnt/master/v1/InstanceAddOp';
import type { InstanceModifyOp__Output } from '../../generated/gnt/master/v1/InstanceModifyOp';
import type { NodeAddOp__Output } from '../../generated/gnt/master/v1/NodeAddOp';
import type { InstanceMigrateOp__Output } from '../../generated/gnt/master/v1/InstanceMigrateOp';
import type { NicParams } from '../config/config-store';
import { checkLinkState, checkModel, checkQueues, newNicParams, rateChange } from '../nic-params';
import { checkAddress, checkCount, checkHvparamValues, checkLink, checkMac, checkName, checkNodePath, formatSize, UsageError } from '../validate';
import { ioLimitsProblem, type DiskIoLimits } from '../../common/io-limits';
import { CLI_IO_KEY, ioLimitsOfApi } from '../cli/io-limits';
import { diskFlavourOf, type DiskFlavourValues } from '../../common/disk-flavour';
import { excerpt } from '../../common/excerpt';

export type OpType =
  | 'node-add' | 'node-remove' | 'cluster-renew-crypto' | 'cluster-modify' | 'instance-add' | 'instance-start' | 'instance-stop' | 'instance-remove' | 'instance-modify' | 'instance-migrate'
  | 'instance-grow-disk';

export interface NicChangeOp {
  action: 'ADD' | 'MODIFY' | 'REMOVE';
  index: number;
  mac: string;
  link: string;
  /** '' or absent keeps (ADD: up). */
  linkState?: string;
  /** Mbit/s; -1 or absent keeps (ADD: none), 0 removes the limit. */
  rate?: number;
  /** ADD only; 1 otherwise. */
  queues?: number;
  /** '' or absent keeps (ADD: virtio). */
  model?: string;
}

export interface DiskChangeOp {
  action: 'ADD' | 'REMOVE' | 'MODIFY';
  index: number;
  sizeBytes: number;
  /** ADD: '' (virtio-blk) or 'scsi'; '' (disk) or 'pmem' (src/common/disk-flavour.ts). */
  diskBus?: string;
  diskType?: string;
  /** ADD: '' (file), 'blockdev' or 'rbd', and the adopted backing ('' none). */
  template?: string;
  adopt?: string;
  /** ADD: the limits (absent: none). MODIFY: the limits given (a key absent keeps its value, 0 removes it). */
  ioLimits?: DiskIoLimits;
  /** MODIFY: the new total size (gnt-instance grow-disk); absent: no grow. */
  growToBytes?: number;
}

/** A DiskIoLimits of the API: ADD/spec (-1 and 0: none) or MODIFY (-1: keep, so left out). Checked. */
function apiIoLimits(l: Parameters<typeof ioLimitsOfApi>[0], modify: boolean, what: string): DiskIoLimits | undefined {
  const raw = ioLimitsOfApi(l);
  if (!raw) return undefined;
  const out: DiskIoLimits = {};
  for (const [k, v] of Object.entries(raw) as [keyof DiskIoLimits, number][]) {
    if (v === -1) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`${what}: ${CLI_IO_KEY[k]} must be a non-negative whole number, not ${v}`);
    if (modify || v > 0) out[k] = v;
  }
  const problem = ioLimitsProblem(out, (k) => CLI_IO_KEY[k]);
  if (problem) throw new UsageError(`${what}: ${problem}`);
  return modify || Object.keys(out).length ? out : undefined;
}

/** bus, type, template and adopt of an API disk, by the CLI's rule. */
function flavourOf(d: { diskBus?: string; diskType?: string; template?: string; adopt?: string }, what: string): DiskFlavourValues {
  const r = diskFlavourOf(d.diskBus ?? '', d.diskType ?? '', excerpt, d.template ?? '', d.adopt ?? '');
  if (typeof r === 'string') throw new UsageError(`${what}: ${r}`);
  return r;
}

/** A disk the node makes needs a size; an adopted one has its own (size= is refused, not ignored). */
function checkDiskSize(sizeBytes: number, flavour: DiskFlavourValues, what: string): void {
  if (flavour.adopt && sizeBytes > 0) throw new UsageError(`${what}: an adopted ${flavour.template} disk keeps the size of ${flavour.adopt}; leave out size=`);
  if (!flavour.adopt && sizeBytes <= 0) throw new UsageError(`${what} needs a size greater than zero (size=SIZE)`);
}

export type Op =
  | { type: 'node-add'; name: string; address: string }
  | { type: 'node-remove'; name: string }
  | { type: 'cluster-renew-crypto'; newCa: boolean }
  | { type: 'cluster-modify'; migrationTls: '' | 'on' | 'off' }
  | {
      type: 'instance-add';
      name: string;
      node: string;
      vcpus: number;
      maxvcpus: number;
      memoryMib: number;
      maxmemMib: number;
      kernel: string;
      initrd: string;
      kernelArgs: string;
      disks: { sizeBytes: number; diskBus?: string; diskType?: string; template?: string; adopt?: string; ioLimits?: DiskIoLimits }[];
      nics: ({ mac: string; link: string } & NicParams)[];
      hvparams: Record<string, string>;
      noStart: boolean;
    }
  | { type: 'instance-start'; name: string }
  | { type: 'instance-stop'; name: string; timeoutMs: number }
  | { type: 'instance-remove'; name: string }
  | {
      type: 'instance-modify';
      name: string;
      nics: NicChangeOp[];
      disks: DiskChangeOp[];
      hotplug: 'NONE' | 'HOTPLUG' | 'IF_POSSIBLE';
      /** -B vcpus=N: 0 unchanged. */
      vcpus: number;
      /** -B memory=SIZE in MiB: 0 unchanged. */
      memoryMib: number;
      /** --wait-guest (yes) / --no-wait-guest (no); absent: the node's default (gnt-noded --wait-guest-default). */
      waitGuest?: 'yes' | 'no';
      /** --wait-guest-timeout, ms (absent: 60 s). */
      waitGuestTimeoutMs?: number;
    }
  | MigrateOp
  | GrowDiskOp;

/** gnt-instance grow-disk: disk `index` grows by `amountBytes` (absolute: to it). */
export interface GrowDiskOp {
  type: 'instance-grow-disk';
  name: string;
  index: number;
  amountBytes: number;
  absolute: boolean;
}

/**
 * gnt-instance migrate / failover. `target` empty: the only other node.
 * cleanup: repair an interrupted migration (target is then empty).
 * failover: stop on the source, boot on the target (no live state).
 */
export interface MigrateOp {
  type: 'instance-migrate';
  name: string;
  target: string;
  cleanup: boolean;
  failover: boolean;
}

export interface PreparedJob {
  op: Op;
  summary: string;
  locks: string[];
}

function int64(v: string | number | undefined, what: string): number {
  const n = Number(v ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${what} "${v}" is not valid`);
  return n;
}

function nodeAdd(o: NodeAddOp__Output): PreparedJob {
  checkName('node', o.name);
  checkAddress(o.address, 'node address');
  return { op: { type: 'node-add', name: o.name, address: o.address }, summary: `add node ${o.name} at ${o.address}`, locks: [`node:${o.name}`, CRYPTO_LOCK] };
}

/** Held by node add/remove and renew-crypto: a node joining during a CA rollover would be left out of it. */
export const CRYPTO_LOCK = 'cluster:crypto';

function instanceAdd(o: InstanceAddOp__Output): PreparedJob {
  checkName('instance', o.name);
  checkName('node', o.node);
  const vcpus = checkCount(o.vcpus, 'vcpus');
  const maxvcpus = o.maxvcpus ? checkCount(o.maxvcpus, 'maxvcpus') : vcpus;
  if (maxvcpus < vcpus) throw new UsageError(`maxvcpus (${maxvcpus}) is less than vcpus (${vcpus})`);
  const memoryMib = int64(o.memoryMib, 'memory');
  if (memoryMib <= 0) throw new UsageError('memory must be given and greater than zero');
  const maxmemMib = int64(o.maxmemMib, 'maxmem') || memoryMib;
  if (maxmemMib < memoryMib) throw new UsageError(`maxmem (${maxmemMib}M) is less than memory (${memoryMib}M)`);
  if (!o.kernel) throw new UsageError('a kernel is required (--kernel PATH)');
  checkNodePath(o.kernel, 'kernel');
  if (o.initrd) checkNodePath(o.initrd, 'initrd');
  if (/[\n\0]/.test(o.kernelArgs)) throw new UsageError('kernel args must be one line');
  const disks = o.disks.map((d, i) => {
    const sizeBytes = int64(d.sizeBytes, `disk ${i} size`);
    const flavour = flavourOf(d, `disk ${i}`);
    checkDiskSize(sizeBytes, flavour, `disk ${i}`);
    const ioLimits = apiIoLimits(d.ioLimits, false, `disk ${i}`);
    return { sizeBytes, ...flavour, ...(ioLimits ? { ioLimits } : {}) };
  });
  const nics = o.nics.map((n, i) => ({ mac: n.mac ? checkMac(n.mac) : '', link: checkLink(n.link), ...newNicParams(n, maxvcpus, `NIC ${i}`) }));
  const macs = nics.map((n) => n.mac).filter(Boolean);
  const dup = macs.find((m, i) => macs.indexOf(m) !== i);
  if (dup) throw new UsageError(`MAC address ${dup} is given twice`);
  const hvparams = checkHvparamValues(o.hvparams);
  return {
    op: {
      type: 'instance-add', name: o.name, node: o.node, vcpus, maxvcpus, memoryMib, maxmemMib, kernel: o.kernel,
      initrd: o.initrd, kernelArgs: o.kernelArgs, disks, nics, hvparams, noStart: o.noStart,
    },
    summary: `add instance ${o.name} on node ${o.node}`,
    locks: [`instance:${o.name}`],
  };
}

function instanceModify(o: InstanceModifyOp__Output): PreparedJob {
  checkName('instance', o.name);
  const nics = o.nics.map((c): NicChangeOp => {
    if (c.action === 'CHANGE_ACTION_UNSPECIFIED') throw new UsageError('a NIC change needs an action (add, N:remove or N:mac=...)');
    if (c.action !== 'ADD' && c.index < 0) throw new UsageError(`NIC index ${c.index} is not valid`);
    const what = c.action === 'ADD' ? 'new NIC' : `NIC ${c.index}`;
    if (c.action === 'MODIFY' && !c.mac && !c.link && !c.linkState && !c.rate && !c.model)
      throw new UsageError(`NIC ${c.index}: nothing to change (give mac=, link=, link_state=, rate= or model=)`);
    if (c.action === 'MODIFY' && (c.queues ?? 0) > 1) throw new UsageError(`NIC ${c.index}: the queues of an existing NIC cannot change; remove it and add a new one with queues=N`);
    if (c.action === 'REMOVE' && (c.mac || c.link || c.linkState || c.rate || (c.queues ?? 0) > 1 || c.model)) throw new UsageError(`NIC ${c.index}: remove takes no parameters`);
    const model = checkModel(c.model, what);
    return {
      action: c.action, index: c.index, mac: c.mac ? checkMac(c.mac) : '', link: checkLink(c.link), linkState: checkLinkState(c.linkState, what),
      rate: rateChange(c.rate, what), queues: c.action === 'ADD' ? checkQueues(c.queues, model, undefined, what) : 1, model,
    };
  });
  const disks = o.disks.map((c): DiskChangeOp => {
    if (c.action === 'ADD') {
      const sizeBytes = int64(c.sizeBytes, 'disk size');
      const flavour = flavourOf(c, 'a new disk');
      checkDiskSize(sizeBytes, flavour, 'a new disk');
      const ioLimits = apiIoLimits(c.ioLimits, false, 'a new disk');
      return { action: 'ADD', index: -1, sizeBytes, ...flavour, ...(ioLimits ? { ioLimits } : {}) };
    }
    if (c.action === 'MODIFY') {
      if (c.index < 0) throw new UsageError(`disk index ${c.index} is not valid`);
      const ioLimits = apiIoLimits(c.ioLimits, true, `disk ${c.index}`);
      const growToBytes = int64(c.growToBytes, `disk ${c.index} new size`);
      if (!growToBytes && (!ioLimits || !Object.keys(ioLimits).length)) throw new UsageError(`disk ${c.index}: nothing to change (give I/O limits, e.g. ${c.index}:iops_max=100)`);
      if (growToBytes && ioLimits && Object.keys(ioLimits).length) throw new UsageError(`disk ${c.index}: a grow (gnt-instance grow-disk) and I/O limits are separate changes`);
      return { action: 'MODIFY', index: c.index, sizeBytes: 0, ...(ioLimits ? { ioLimits } : {}), ...(growToBytes ? { growToBytes } : {}) };
    }
    if (c.action === 'REMOVE') {
      if (c.index < 0) throw new UsageError(`disk index ${c.index} is not valid`);
      return { action: 'REMOVE', index: c.index, sizeBytes: 0 };
    }
    throw new UsageError('a disk change is add:size=SIZE, N:remove or N:iops_max=..,bps_max=..');
  });
  const vcpus = o.vcpus ? checkCount(o.vcpus, 'vcpus') : 0;
  const memoryMib = int64(o.memoryMib, 'memory');
  if (nics.length === 0 && disks.length === 0 && !vcpus && !memoryMib) throw new UsageError('nothing to change: give --net, --disk or -B');
  const hotplug = o.hotplug === 'HOTPLUG' ? 'HOTPLUG' : o.hotplug === 'HOTPLUG_IF_POSSIBLE' ? 'IF_POSSIBLE' : 'NONE';
  const waitGuest = o.waitGuest === 'WAIT_GUEST' ? { waitGuest: 'yes' as const } : o.waitGuest === 'NO_WAIT_GUEST' ? { waitGuest: 'no' as const } : {};
  if (o.waitGuestTimeoutS && (!Number.isInteger(o.waitGuestTimeoutS) || o.waitGuestTimeoutS < 1 || o.waitGuestTimeoutS > 600))
    throw new UsageError(`--wait-guest-timeout ${o.waitGuestTimeoutS} is not a number of seconds from 1 to 600`);
  const waitTimeout = o.waitGuestTimeoutS ? { waitGuestTimeoutMs: o.waitGuestTimeoutS * 1000 } : {};
  return {
    op: { type: 'instance-modify', name: o.name, nics, disks, hotplug, vcpus, memoryMib, ...waitGuest, ...waitTimeout },
    summary: `modify instance ${o.name}`,
    locks: [`instance:${o.name}`],
  };
}

function migrateSummary(op: MigrateOp): string {
  if (op.cleanup) return `clean up migration of ${op.name}`;
  const to = op.target ? ` to ${op.target}` : '';
  return op.failover ? `failover instance ${op.name}${to}` : `migrate instance ${op.name}${to}`;
}

function instanceMigrate(o: InstanceMigrateOp__Output): PreparedJob {
  checkName('instance', o.name);
  if (o.cleanup && o.failover) throw new UsageError('--cleanup repairs an interrupted live migration; it cannot be combined with failover');
  // Cleanup finds where the instance runs by itself: a target is ignored (proto/master.proto).
  const target = o.cleanup ? '' : o.target;
  if (target) checkName('node', target);
  const op: MigrateOp = { type: 'instance-migrate', name: o.name, target, cleanup: o.cleanup, failover: o.failover };
  return { op, summary: migrateSummary(op), locks: [`instance:${o.name}`] };
}

export function prepareJob(req: SubmitJobRequest__Output): PreparedJob {
  switch (req.op) {
    case 'nodeAdd':
      return nodeAdd(req.nodeAdd!);
    case 'nodeRemove':
      checkName('node', req.nodeRemove!.name);
      return { op: { type: 'node-remove', name: req.nodeRemove!.name }, summary: `remove node ${req.nodeRemove!.name}`, locks: [`node:${req.nodeRemove!.name}`, CRYPTO_LOCK] };
    case 'clusterRenewCrypto': {
      const newCa = req.clusterRenewCrypto!.newCa;
      return { op: { type: 'cluster-renew-crypto', newCa }, summary: `renew the cluster certificates${newCa ? ' with a new CA' : ''}`, locks: [CRYPTO_LOCK] };
    }
    case 'clusterModify': {
      const tls = req.clusterModify!.migrationTls;
      if (tls !== 'on' && tls !== 'off') throw new UsageError(`--migration-tls must be on or off, not ${excerpt(tls || '(nothing)')}`);
      return { op: { type: 'cluster-modify', migrationTls: tls }, summary: `modify the cluster: migration TLS ${tls}`, locks: ['cluster:settings'] };
    }
    case 'instanceAdd':
      return instanceAdd(req.instanceAdd!);
    case 'instanceStart':
      checkName('instance', req.instanceStart!.name);
      return { op: { type: 'instance-start', name: req.instanceStart!.name }, summary: `start instance ${req.instanceStart!.name}`, locks: [`instance:${req.instanceStart!.name}`] };
    case 'instanceStop': {
      const { name, timeoutMs } = req.instanceStop!;
      checkName('instance', name);
      return { op: { type: 'instance-stop', name, timeoutMs: Math.max(0, timeoutMs) }, summary: `stop instance ${name}`, locks: [`instance:${name}`] };
    }
    case 'instanceRemove':
      checkName('instance', req.instanceRemove!.name);
      return { op: { type: 'instance-remove', name: req.instanceRemove!.name }, summary: `remove instance ${req.instanceRemove!.name}`, locks: [`instance:${req.instanceRemove!.name}`] };
    case 'instanceModify':
      return instanceModify(req.instanceModify!);
    case 'instanceMigrate':
      return instanceMigrate(req.instanceMigrate!);
    case 'instanceGrowDisk': {
      const g = req.instanceGrowDisk!;
      checkName('instance', g.name);
      if (!Number.isInteger(g.index) || g.index < 0) throw new UsageError(`disk index ${g.index} is not valid`);
      const amountBytes = int64(g.amountBytes, 'grow amount');
      if (amountBytes <= 0) throw new UsageError('the grow amount must be greater than zero (e.g. 512M, 1G)');
      const op: GrowDiskOp = { type: 'instance-grow-disk', name: g.name, index: g.index, amountBytes, absolute: g.absolute };
      return { op, summary: `grow disk ${g.index} of instance ${g.name} ${g.absolute ? 'to' : 'by'} ${formatSize(amountBytes)}`, locks: [`instance:${g.name}`] };
    }
    default:
      throw new UsageError('the request names no operation');
  }
}
