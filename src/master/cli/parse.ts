/**
 * Parsers for Ganeti's device syntax into typed master requests. They only
 * parse and check the form of values; the master decides everything else
 * (uuids, generated MACs, whether an index exists).
 *
 *   gnt-instance add:    --net [N:]mac=MAC,link=BR,link_state=up|down,rate=MBIT,queues=N,model=M   --disk [N:]size=SIZE|adopt=DEV|POOL/IMAGE[,bus=virtio|scsi][,type=disk|pmem][,template=file|blockdev|rbd]
 *   gnt-instance modify: --net add[:mac=MAC,link=BR,link_state=..,rate=..,queues=N,model=M] | N:remove
 *                        --net N:mac=MAC,link=BR,link_state=up|down,rate=MBIT(0: none),model=virtio|e1000|rtl8139 (any of them)
 *                        --disk add:size=SIZE|adopt=DEV|POOL/IMAGE[,bus=virtio|scsi][,type=disk|pmem][,template=file|blockdev|rbd] | N:remove
 *                        -B / --backend-parameters vcpus=N,memory=SIZE
 *   -H / --hvparams:     the keys of src/common/hvparams.ts (security_model, security_domain, chroot, machine, accel,
 *                        memory_hotplug, unplug_timeout_{nic,disk,cpu,memory}, migration_bandwidth, migration_downtime)
 */
import type { NicChange } from '../../generated/gnt/master/v1/NicChange';
import type { DiskChange } from '../../generated/gnt/master/v1/DiskChange';
import type { NicSpec } from '../../generated/gnt/master/v1/NicSpec';
import type { DiskSpec } from '../../generated/gnt/master/v1/DiskSpec';
import { CLIENT_HVPARAM_KEYS } from '../../common/hvparams';
import { diskFlavourOf, type DiskFlavourValues } from '../../common/disk-flavour';
import { excerpt } from '../../common/excerpt';
import { checkCount, checkHvparamValues, checkLink, checkMac, parseSize, parseSizeMiB, UsageError } from '../validate';
import { LINK_STATES, NIC_MODEL_NAMES, queuesProblem, rateProblem } from '../../common/nic-params';

const NIC_ADD_KEYS = ['mac', 'link', 'link_state', 'rate', 'queues', 'model'];
const NIC_MODIFY_KEYS = ['mac', 'link', 'link_state', 'rate', 'model'];

function linkStateValue(v: string | undefined, what: string): string {
  if (v === undefined) return '';
  if (!(LINK_STATES as readonly string[]).includes(v)) throw new UsageError(`${what}: link_state must be up or down, not ${excerpt(v)}`);
  return v;
}

function modelValue(v: string | undefined, what: string): string {
  if (v === undefined) return '';
  if (!(NIC_MODEL_NAMES as readonly string[]).includes(v)) throw new UsageError(`${what}: model must be one of ${NIC_MODEL_NAMES.join(', ')}, not ${excerpt(v)}`);
  return v;
}

/** rate=MBIT: a whole number of Mbit/s, 0 for no limit. */
function rateValue(v: string, what: string): number {
  const n = /^\d{1,9}$/.test(v) ? Number(v) : NaN;
  const problem = rateProblem(n);
  if (problem) throw new UsageError(`${what}: ${problem}, not ${excerpt(v)}`);
  return n;
}

/** queues=N (the maximum vCPUs are checked by the master against the instance). */
function queuesValue(v: string | undefined, model: string, what: string): number {
  if (v === undefined) return 0;
  const n = /^\d{1,3}$/.test(v) ? Number(v) : NaN;
  const problem = queuesProblem(n, model || 'virtio', undefined);
  if (problem) throw new UsageError(`${what}: ${problem}, not ${excerpt(v)}`);
  return n;
}

/** The NIC keys beyond mac and link of an add (instance add or --net add:...), only those given. */
function nicAddExtras(kv: Record<string, string>, what: string): { linkState?: string; rateMbit?: number; queues?: number; model?: string } {
  const model = modelValue(kv.model, what);
  const out: { linkState?: string; rateMbit?: number; queues?: number; model?: string } = {};
  if (kv.link_state !== undefined) out.linkState = linkStateValue(kv.link_state, what);
  if (kv.rate !== undefined) out.rateMbit = rateValue(kv.rate, what);
  if (kv.queues !== undefined) out.queues = queuesValue(kv.queues, model, what);
  if (kv.model !== undefined) out.model = model;
  return out;
}

/** "a=1,b=2" with only the allowed keys, each at most once. */
export function parseKeyValues(text: string, allowed: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (text === '') return out;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`${what}: "${part}" is not KEY=VALUE`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (!allowed.includes(key)) throw new UsageError(`${what}: unknown parameter "${key}" (allowed: ${allowed.join(', ')})`);
    if (key in out) throw new UsageError(`${what}: parameter "${key}" given twice`);
    out[key] = value;
  }
  return out;
}

function parseIndex(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: "${text}" is not a device index (0, 1, ...)`);
  const n = Number(text);
  if (n > 1000) throw new UsageError(`${what}: index ${n} is out of range`);
  return n;
}

function macValue(v: string | undefined): string {
  if (v === undefined || v === '' || v === 'auto' || v === 'generate') return '';
  return checkMac(v);
}

/** Splits "N:rest", "add:rest", "add", "N:remove". */
function splitHead(text: string): { head: string; rest: string } {
  const colon = text.indexOf(':');
  return colon < 0 ? { head: text, rest: '' } : { head: text.slice(0, colon), rest: text.slice(colon + 1) };
}

/** One --net of gnt-instance add, in position `pos`. */
export function parseNicSpec(text: string, pos: number): NicSpec {
  let body = text;
  const m = /^(\d+):(.*)$/.exec(text);
  if (m) {
    if (Number(m[1]) !== pos) throw new UsageError(`--net ${text}: NIC index ${m[1]} given in position ${pos}`);
    body = m[2];
  }
  const kv = parseKeyValues(body, NIC_ADD_KEYS, `--net ${text}`);
  return { mac: macValue(kv.mac), link: checkLink(kv.link ?? ''), ...nicAddExtras(kv, `--net ${text}`) };
}

const DISK_KEYS = ['size', 'bus', 'type', 'template', 'adopt'];

/** bus=, type=, template= and adopt= of a --disk (src/common/disk-flavour.ts); only those that differ from the defaults. */
function diskFlavour(kv: Record<string, string | undefined>, what: string): Partial<DiskFlavourValues> {
  const r = diskFlavourOf(kv.bus, kv.type, excerpt, kv.template, kv.adopt);
  if (typeof r === 'string') throw new UsageError(`${what}: ${r}`);
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== ''));
}

/** size= of a --disk: required unless it adopts a device or image, which keeps its own size. */
function diskSize(kv: Record<string, string | undefined>, what: string, example: string): { sizeBytes: number } {
  if (kv.adopt !== undefined) {
    if (kv.size !== undefined) throw new UsageError(`${what}: an adopted disk keeps the size of ${excerpt(kv.adopt)}; leave out size=`);
    return { sizeBytes: 0 };
  }
  if (kv.size === undefined) throw new UsageError(`${what}: size=SIZE is required${example}`);
  return { sizeBytes: parseSize(kv.size, 'disk size') };
}

/** One --disk of gnt-instance add, in position `pos`. */
export function parseDiskSpec(text: string, pos: number): DiskSpec {
  let body = text;
  const m = /^(\d+):(.*)$/.exec(text);
  if (m) {
    if (Number(m[1]) !== pos) throw new UsageError(`--disk ${text}: disk index ${m[1]} given in position ${pos}`);
    body = m[2];
  }
  const kv = parseKeyValues(body, DISK_KEYS, `--disk ${text}`);
  return { ...diskSize(kv, `--disk ${text}`, ''), ...diskFlavour(kv, `--disk ${text}`) };
}

/** One --net of gnt-instance modify. */
export function parseNicChange(text: string): NicChange {
  const what = `--net ${text}`;
  const { head, rest } = splitHead(text);
  if (head === 'add') {
    const kv = parseKeyValues(rest, NIC_ADD_KEYS, what);
    const x = nicAddExtras(kv, what);
    const { rateMbit, ...rest2 } = x;
    return { action: 'ADD', index: -1, mac: macValue(kv.mac), link: checkLink(kv.link ?? ''), ...rest2, ...(rateMbit !== undefined ? { rate: String(rateMbit) } : {}) };
  }
  if (head === 'remove') throw new UsageError(`${what}: say which NIC, e.g. --net 1:remove`);
  const index = parseIndex(head, what);
  if (rest === 'remove') return { action: 'REMOVE', index };
  if (rest === 'add' || rest.startsWith('add,')) throw new UsageError(`${what}: adding at an index is not supported; use --net add[:mac=MAC,link=BR]`);
  if (/(^|,)queues=/.test(rest)) throw new UsageError(`${what}: the queues of an existing NIC cannot change; remove it and add a new one with --net add:queues=N`);
  const kv = parseKeyValues(rest, NIC_MODIFY_KEYS, what);
  if (!Object.keys(kv).length) throw new UsageError(`${what}: give mac=MAC and/or link=BRIDGE, link_state=up|down, rate=MBIT, model=MODEL, or remove`);
  if (kv.mac !== undefined && kv.mac === '') throw new UsageError(`${what}: mac= is empty`);
  if (kv.link !== undefined && kv.link === '') throw new UsageError(`${what}: link= is empty (a link cannot be cleared)`);
  const out: NicChange = { action: 'MODIFY', index, mac: kv.mac === undefined ? '' : checkMac(kv.mac), link: checkLink(kv.link ?? '') };
  if (kv.link_state !== undefined) out.linkState = linkStateValue(kv.link_state, what);
  if (kv.rate !== undefined) out.rate = String(rateValue(kv.rate, what));
  if (kv.model !== undefined) out.model = modelValue(kv.model, what);
  return out;
}

/** One --disk of gnt-instance modify. */
export function parseDiskChange(text: string): DiskChange {
  const what = `--disk ${text}`;
  const { head, rest } = splitHead(text);
  if (head === 'add') {
    const kv = parseKeyValues(rest, DISK_KEYS, what);
    return { action: 'ADD', index: -1, ...diskSize(kv, what, ', e.g. --disk add:size=1G'), ...diskFlavour(kv, what) };
  }
  if (head === 'remove') throw new UsageError(`${what}: say which disk, e.g. --disk 1:remove`);
  const index = parseIndex(head, what);
  if (rest === 'remove') return { action: 'REMOVE', index };
  throw new UsageError(`${what}: a disk change is add:size=SIZE, add:adopt=/dev/XYZ or N:remove (add also takes bus=virtio|scsi, type=disk|pmem and template=file|blockdev|rbd)`);
}

/** -H / --hvparams [kvm:]key=value,...: known keys only, each value by its rule (src/common/hvparams.ts). */
export function parseHvparams(texts: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of texts) {
    const body = t.startsWith('kvm:') ? t.slice(4) : t;
    const kv = parseKeyValues(body, [...CLIENT_HVPARAM_KEYS], `--hvparams ${t}`);
    for (const k of Object.keys(kv)) if (k in out) throw new UsageError(`--hvparams: parameter "${k}" given twice`);
    Object.assign(out, kv);
  }
  return checkHvparamValues(out);
}

/** -B / --backend-parameters vcpus=N,memory=SIZE (each may be repeated; a key at most once overall). 0 = unchanged. */
export function parseBackendParams(texts: string[]): { vcpus: number; memoryMib: number } {
  const all: Record<string, string> = {};
  for (const t of texts) {
    const kv = parseKeyValues(t, ['vcpus', 'memory'], `-B ${t}`);
    for (const [k, v] of Object.entries(kv)) {
      if (k in all) throw new UsageError(`-B: parameter "${k}" given twice`);
      if (v === '') throw new UsageError(`-B ${t}: ${k}= is empty`);
      all[k] = v;
    }
  }
  return {
    vcpus: all.vcpus === undefined ? 0 : checkCount(all.vcpus, 'vcpus'),
    memoryMib: all.memory === undefined ? 0 : parseSizeMiB(all.memory, 'memory'),
  };
}
