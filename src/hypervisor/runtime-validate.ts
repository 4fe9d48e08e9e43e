/**
 * Field-by-field check of a runtime file that came from elsewhere (a
 * migration or failover carries the source's file in InstanceReceive):
 * every value that reaches QEMU, a host path or a name on this node must
 * follow the rule this software itself writes, by whitelist. A refusal
 * names the field and quotes the value only through excerpt(); nothing is
 * changed on refusal (the caller has not touched the node yet).
 */
import { IO_LIMIT_KEYS, IO_LIMIT_MAX, ioLimitsProblem, type DiskIoLimits } from '../common/io-limits';
import { excerpt } from '../common/excerpt';
import { isRbdName } from '../common/disk-flavour';
import { rbdPath } from './disk-template';
import { checkHvparams } from '../common/hvparams';
import { macProblem } from '../common/mac';
import { CPU_DRIVER_RULE, CPU_TOPOLOGY_KEYS, MAX_TOPOLOGY_ID, cpuId } from './cpu';
import { InvalidArgumentError, errorMessage } from './errors';
import { assertInstanceName } from './instance-paths';
import { MAX_NIC_QUEUES, NIC_MODELS, isNicModel } from './nic';
import { VIRTIO_MEM_ID } from './resize';
import { CONTROLLER_BUS_RULE } from './device-id';
import { MAX_RATE_MBIT } from './tap-rate';
import { PCI_SLOTS } from './pci-slots';
import { pciTopology, placementProblem, type PciTopology } from './pci-topology';
import { SCSI_CONTROLLER_ID } from './scsi-disk';
import { MAX_SCSI_DISKS, SCSI_LUNS, SCSI_TARGETS } from './scsi-luns';

/** At most this many NICs (or disks) in a runtime file: every slot of the root bus and of 8 bridges. */
const MAX_PLACED = PCI_SLOTS * 9;
import { assertFixedCommand } from './qemu-command';
import type { RuntimeData } from './runtime-file';

/** Device uuids as the node accepts them (src/noded/storage.ts assertDeviceUuid). */
const UUID_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Bridge names: Linux interface names. */
const LINK_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$/;
/** Taps are named by this node (tap.ts TAP_NAME_TEMPLATE gnttap%d). */
const TAP_RULE = /^gnttap\d{1,8}$/;
const DIMM_ID_RULE = /^dimm\d{1,4}$/;
const NODE_RULE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const STATES = ['attaching', 'detaching'];
const OP_ID_RULE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const MAX_MIB = 16 * 1024 * 1024;

type Obj = Record<string, unknown>;

class Checker {
  constructor(private readonly instance: string) {}

  fail(field: string, value: unknown, rule: string): never {
    throw new InvalidArgumentError(`runtime file of ${this.instance}: ${field}=${excerpt(value)} is not valid: ${rule}`);
  }

  obj(field: string, v: unknown, allowed: readonly string[]): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, v, 'must be an object');
    const o = v as Obj;
    for (const k of Object.keys(o)) if (!allowed.includes(k)) this.fail(`${field}.${k}`, o[k], `unknown field (known: ${allowed.join(', ')})`);
    return o;
  }

  list(field: string, v: unknown, max: number): unknown[] {
    if (!Array.isArray(v) || v.length > max) this.fail(field, v, `must be a list of at most ${max} entries`);
    return v as unknown[];
  }

  match(field: string, v: unknown, rule: RegExp, what: string): string {
    if (typeof v !== 'string' || !rule.test(v) || v.includes('..')) this.fail(field, v, what);
    return v as string;
  }

  int(field: string, v: unknown, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(field, v, `must be a whole number from ${min} to ${max}`);
    return v as number;
  }

  optional<T>(o: Obj, key: string, check: (v: unknown) => T): void {
    if (o[key] !== undefined) check(o[key]);
  }

  pci(field: string, v: unknown): void {
    if (v !== null) this.int(field, v, 0, PCI_SLOTS - 1);
  }

  state(field: string, v: unknown): void {
    if (v !== undefined && !STATES.includes(v as string)) this.fail(field, v, `must be one of ${STATES.join(', ')}`);
  }

  hostPath(field: string, v: unknown): void {
    if (typeof v !== 'string' || !v.startsWith('/') || /[\0\n]/.test(v) || v.length > 4096) this.fail(field, v, 'must be an absolute path without NUL or newline');
  }
}

/** link_state, rate, queues and model of a NIC by the node's own rules (nic.ts, tap-rate.ts). */
function checkNicExtras(c: Checker, f: string, n: Obj): void {
  c.optional(n, 'link_state', (v) => v === 'up' || v === 'down' || c.fail(`${f}.link_state`, v, 'must be up or down'));
  c.optional(n, 'rate_mbit', (v) => c.int(`${f}.rate_mbit`, v, 0, MAX_RATE_MBIT));
  c.optional(n, 'queues', (v) => c.int(`${f}.queues`, v, 1, MAX_NIC_QUEUES));
  c.optional(n, 'model', (v) => isNicModel(v) || c.fail(`${f}.model`, v, `must be one of ${Object.keys(NIC_MODELS).join(', ')}`));
}

function checkNics(c: Checker, nics: unknown): void {
  c.list('nics', nics, MAX_PLACED).forEach((raw, i) => {
    const f = `nics[${i}]`;
    const n = c.obj(f, raw, ['uuid', 'mac', 'link', 'pci', 'bus', 'tap', 'state', 'link_state', 'rate_mbit', 'queues', 'model']);
    c.match(`${f}.uuid`, n.uuid, UUID_RULE, 'a device uuid: letters, digits, ".", "_", "-", without ".."');
    const mac = typeof n.mac === 'string' ? macProblem(n.mac) : 'not a string';
    if (mac) c.fail(`${f}.mac`, n.mac, mac);
    c.optional(n, 'link', (v) => c.match(`${f}.link`, v, LINK_RULE, 'a bridge name: 1 to 15 letters, digits, ".", "_" or "-"'));
    c.optional(n, 'tap', (v) => c.match(`${f}.tap`, v, TAP_RULE, 'a tap this software names: gnttapN'));
    c.pci(`${f}.pci`, n.pci);
    c.optional(n, 'bus', (v) => c.match(`${f}.bus`, v, CONTROLLER_BUS_RULE, 'a bridge or root port of this software: pcibN or rpN'));
    c.state(`${f}.state`, n.state);
    checkNicExtras(c, f, n);
  });
}

/** A disk's backing (disk-template.ts): a host path; or template rbd with {pool, image} and the path rbd:POOL/IMAGE. */
function checkBacking(c: Checker, f: string, d: Obj): void {
  c.optional(d, 'template', (v) => v === 'blockdev' || v === 'rbd' || c.fail(`${f}.template`, v, 'must be blockdev or rbd when present'));
  if (d.template !== 'rbd') {
    if (d.rbd !== undefined) c.fail(`${f}.rbd`, d.rbd, 'belongs to template rbd only');
    return c.hostPath(`${f}.path`, d.path);
  }
  const img = c.obj(`${f}.rbd`, d.rbd, ['pool', 'image']);
  for (const k of ['pool', 'image'] as const)
    if (typeof img[k] !== 'string' || !isRbdName(img[k] as string)) c.fail(`${f}.rbd.${k}`, img[k], 'an RBD name: letters, digits, ".", "_", "-"');
  if (d.path !== rbdPath({ pool: img.pool as string, image: img.image as string })) c.fail(`${f}.path`, d.path, 'must be rbd:POOL/IMAGE of its rbd entry');
}

function checkDisks(c: Checker, disks: unknown): void {
  c.list('block_devices', disks, MAX_PLACED).forEach((raw, i) => {
    const f = `block_devices[${i}]`;
    const d = c.obj(f, raw, ['uuid', 'path', 'pci', 'bus', 'state', 'created', 'template', 'rbd', ...GROW_FIELDS]);
    c.match(`${f}.uuid`, d.uuid, UUID_RULE, 'a device uuid: letters, digits, ".", "_", "-", without ".."');
    checkBacking(c, f, d);
    c.pci(`${f}.pci`, d.pci);
    c.optional(d, 'bus', (v) => c.match(`${f}.bus`, v, CONTROLLER_BUS_RULE, 'a bridge or root port of this software: pcibN or rpN'));
    c.state(`${f}.state`, d.state);
    c.optional(d, 'created', (v) => v === true || c.fail(`${f}.created`, v, 'must be true when present'));
    checkGrowFields(c, f, d);
  });
}

/** A disk's size after a grow, a grow in progress and its I/O limits (disk-modify.ts, disk-io-limits.ts). */
const GROW_FIELDS = ['size_bytes', 'grow_to', 'io_limits'] as const;

function checkGrowFields(c: Checker, f: string, d: Obj): void {
  c.optional(d, 'size_bytes', (v) => c.int(`${f}.size_bytes`, v, 1, Number.MAX_SAFE_INTEGER));
  c.optional(d, 'grow_to', (v) => c.int(`${f}.grow_to`, v, 1, Number.MAX_SAFE_INTEGER));
  c.optional(d, 'io_limits', (v) => {
    const l = c.obj(`${f}.io_limits`, v, IO_LIMIT_KEYS);
    for (const k of IO_LIMIT_KEYS) c.optional(l, k, (x) => c.int(`${f}.io_limits.${k}`, x, 1, IO_LIMIT_MAX));
    const problem = ioLimitsProblem(l as DiskIoLimits);
    if (problem) c.fail(`${f}.io_limits`, v, problem);
  });
}

function checkScsi(c: Checker, data: RuntimeData): void {
  c.list('scsi_disks', data.scsi_disks ?? [], MAX_SCSI_DISKS).forEach((raw, i) => {
    const f = `scsi_disks[${i}]`;
    const d = c.obj(f, raw, ['uuid', 'path', 'target', 'lun', 'state', 'created', 'template', 'rbd', ...GROW_FIELDS]);
    c.match(`${f}.uuid`, d.uuid, UUID_RULE, 'a device uuid: letters, digits, ".", "_", "-", without ".."');
    checkBacking(c, f, d);
    c.int(`${f}.target`, d.target, 0, SCSI_TARGETS - 1);
    c.int(`${f}.lun`, d.lun, 0, SCSI_LUNS - 1);
    c.state(`${f}.state`, d.state);
    c.optional(d, 'created', (v) => v === true || c.fail(`${f}.created`, v, 'must be true when present'));
    checkGrowFields(c, f, d);
  });
  if (data.scsi_controller === undefined) return;
  const ctrl = c.obj('scsi_controller', data.scsi_controller, ['id', 'pci', 'bus']);
  if (ctrl.id !== SCSI_CONTROLLER_ID) c.fail('scsi_controller.id', ctrl.id, `must be ${SCSI_CONTROLLER_ID}`);
  c.int('scsi_controller.pci', ctrl.pci, 0, PCI_SLOTS - 1);
  c.optional(ctrl, 'bus', (v) => c.match('scsi_controller.bus', v, CONTROLLER_BUS_RULE, 'a bridge or root port of this software: pcibN or rpN'));
}

function checkPmem(c: Checker, pmem: unknown): void {
  c.list('pmem_devices', pmem ?? [], PCI_SLOTS).forEach((raw, i) => {
    const f = `pmem_devices[${i}]`;
    const d = c.obj(f, raw, ['uuid', 'path', 'sizeMiB', 'pci', 'bus', 'state', 'created']);
    c.match(`${f}.uuid`, d.uuid, UUID_RULE, 'a device uuid: letters, digits, ".", "_", "-", without ".."');
    c.hostPath(`${f}.path`, d.path);
    c.int(`${f}.sizeMiB`, d.sizeMiB, 2, MAX_MIB);
    c.pci(`${f}.pci`, d.pci);
    c.optional(d, 'bus', (v) => c.match(`${f}.bus`, v, CONTROLLER_BUS_RULE, 'a bridge or root port of this software: pcibN or rpN'));
    c.state(`${f}.state`, d.state);
    c.optional(d, 'created', (v) => v === true || c.fail(`${f}.created`, v, 'must be true when present'));
  });
}

function checkCpus(c: Checker, cpus: unknown, maxVcpus: number): void {
  c.list('resources.cpus', cpus, maxVcpus).forEach((raw, i) => {
    const f = `resources.cpus[${i}]`;
    const cpu = c.obj(f, raw, ['id', 'driver', 'props', 'state']);
    c.match(`${f}.driver`, cpu.driver, CPU_DRIVER_RULE, 'a vCPU type QEMU names in query-hotpluggable-cpus (NAME-x86_64-cpu)');
    const props = c.obj(`${f}.props`, cpu.props, CPU_TOPOLOGY_KEYS);
    for (const [k, v] of Object.entries(props)) c.int(`${f}.props.${k}`, v, 0, MAX_TOPOLOGY_ID);
    if (cpu.id !== cpuId(props as Record<string, number>)) c.fail(`${f}.id`, cpu.id, `must be the id of its topology (${cpuId(props as Record<string, number>)})`);
    c.state(`${f}.state`, cpu.state);
  });
}

function checkMemory(c: Checker, r: Obj, boot: number, max: number): void {
  const room = max - boot;
  let total = 0;
  c.list('resources.dimms', r.dimms, 256).forEach((raw, i) => {
    const f = `resources.dimms[${i}]`;
    const d = c.obj(f, raw, ['id', 'sizeMiB', 'state']);
    c.match(`${f}.id`, d.id, DIMM_ID_RULE, 'dimmN');
    total += c.int(`${f}.sizeMiB`, d.sizeMiB, 1, room);
    c.state(`${f}.state`, d.state);
  });
  if (total > room) c.fail('resources.dimms', total, `DIMMs add up to more than maxMemoryMiB - bootMemoryMiB (${room} MiB)`);
  c.optional(r, 'virtioMem', (v) => {
    const vm = c.obj('resources.virtioMem', v, ['id', 'maxMiB', 'requestedMiB', 'pci']);
    if (vm.id !== VIRTIO_MEM_ID) c.fail('resources.virtioMem.id', vm.id, `must be ${VIRTIO_MEM_ID}`);
    const vmMax = c.int('resources.virtioMem.maxMiB', vm.maxMiB, 1, room);
    c.int('resources.virtioMem.requestedMiB', vm.requestedMiB, 0, vmMax);
    c.int('resources.virtioMem.pci', vm.pci, 0, PCI_SLOTS - 1);
  });
}

const RESOURCE_KEYS = [
  'bootVcpus', 'maxVcpus', 'bootMemoryMiB', 'maxMemoryMiB', 'memoryHotplug', 'cpus', 'dimms', 'virtioMem',
  'pendingMemoryMiB', 'pendingVcpus', 'cpuUnpluggedPid', 'cpuThreads',
] as const;

function checkResources(c: Checker, raw: unknown): void {
  const r = c.obj('resources', raw, RESOURCE_KEYS);
  const maxVcpus = c.int('resources.maxVcpus', r.maxVcpus, 1, 255);
  c.int('resources.bootVcpus', r.bootVcpus, 1, maxVcpus);
  const maxMem = c.int('resources.maxMemoryMiB', r.maxMemoryMiB, 1, MAX_MIB);
  const boot = c.int('resources.bootMemoryMiB', r.bootMemoryMiB, 1, maxMem);
  if (!['none', 'acpi', 'virtio-mem'].includes(r.memoryHotplug as string)) c.fail('resources.memoryHotplug', r.memoryHotplug, 'must be none, acpi or virtio-mem');
  checkCpus(c, r.cpus, maxVcpus);
  checkMemory(c, r, boot, maxMem);
  c.optional(r, 'pendingMemoryMiB', (v) => c.int('resources.pendingMemoryMiB', v, 1, maxMem));
  c.optional(r, 'pendingVcpus', (v) => c.int('resources.pendingVcpus', v, 1, maxVcpus));
  c.optional(r, 'cpuUnpluggedPid', (v) => c.int('resources.cpuUnpluggedPid', v, 1, 2 ** 31));
  c.optional(r, 'cpuThreads', (v) => {
    const t = c.obj('resources.cpuThreads', v, ['pid', 'created']);
    c.int('resources.cpuThreads.pid', t.pid, 1, 2 ** 31);
    c.int('resources.cpuThreads.created', t.created, 0, 1 << 16);
  });
}

function checkMigration(c: Checker, raw: unknown): void {
  const m = c.obj('migration', raw, ['role', 'peer', 'since', 'uri']);
  if (m.role !== 'source' && m.role !== 'target') c.fail('migration.role', m.role, 'must be source or target');
  c.match('migration.peer', m.peer, NODE_RULE, 'a node name');
  c.match('migration.since', m.since, /^[0-9T:.Z+-]{10,40}$/, 'an ISO time');
  c.optional(m, 'uri', (v) => c.match('migration.uri', v, /^tcp:[A-Za-z0-9.:[\]-]{1,300}$/, 'tcp:HOST:PORT'));
}

const OP_KEYS = ['id', 'kind', 'action', 'uuid', 'state', 'revision', 'settledBy', 'error', 'result', 'request', 'startedAt', 'finishedAt'] as const;

function checkOperations(c: Checker, raw: unknown): void {
  const j = c.obj('operations', raw, ['epoch', 'revision', 'records', 'prunedThrough']);
  c.int('operations.revision', j.revision, 0, Number.MAX_SAFE_INTEGER);
  c.optional(j, 'epoch', (v) => c.match('operations.epoch', v, /^[A-Za-z0-9-]{1,64}$/, 'a uuid'));
  c.optional(j, 'prunedThrough', (v) => c.int('operations.prunedThrough', v, 0, Number.MAX_SAFE_INTEGER));
  c.list('operations.records', j.records, 4096).forEach((rawRec, i) => {
    const f = `operations.records[${i}]`;
    const r = c.obj(f, rawRec, OP_KEYS);
    c.match(`${f}.id`, r.id, OP_ID_RULE, 'an operation id');
    if (!['nic', 'disk', 'resources'].includes(r.kind as string)) c.fail(`${f}.kind`, r.kind, 'must be nic, disk or resources');
    if (!['add', 'remove', 'modify', 'resize'].includes(r.action as string)) c.fail(`${f}.action`, r.action, 'must be add, remove, modify or resize');
    if (typeof r.uuid !== 'string' || (r.uuid !== '' && !UUID_RULE.test(r.uuid))) c.fail(`${f}.uuid`, r.uuid, 'a device uuid or empty');
    if (!['running', 'removal_pending', 'succeeded', 'failed'].includes(r.state as string)) c.fail(`${f}.state`, r.state, 'an operation state');
    c.int(`${f}.revision`, r.revision, 0, Number.MAX_SAFE_INTEGER);
  });
}

/**
 * Every recorded place exists in the instance's PCI tree (pci-topology.ts,
 * from its machine and hvparams): a carried bus is one of its bridges or
 * root ports and the slot one that bus has; a root-bus slot is none a
 * controller of the tree sits on. No two records share a place.
 */
function checkPlacements(c: Checker, data: RuntimeData): void {
  let topology: PciTopology;
  try {
    topology = pciTopology(data);
  } catch (err) {
    return c.fail('hvparams', data.hvparams, errorMessage(err));
  }
  const seen = new Map<string, string>();
  const records: Array<[string, { pci: number | null; bus?: string }]> = [
    ...data.nics.map((n, i): [string, typeof n] => [`nics[${i}]`, n]),
    ...data.block_devices.map((d, i): [string, typeof d] => [`block_devices[${i}]`, d]),
    ...(data.pmem_devices ?? []).map((d, i): [string, typeof d] => [`pmem_devices[${i}]`, d]),
    ...(data.scsi_controller ? [['scsi_controller', data.scsi_controller] as [string, { pci: number; bus?: string }]] : []),
  ];
  for (const [f, rec] of records) {
    if (rec.pci === null) continue;
    const holder = topology.reserved.get(rec.pci);
    const problem = rec.bus !== undefined ? placementProblem(topology, rec.bus, rec.pci) : holder && /bridge|root port/i.test(holder) ? `slot ${rec.pci} of the root bus holds ${holder}` : undefined;
    if (problem) c.fail(`${f}.bus`, rec.bus ?? null, problem);
    const key = `${rec.bus ?? ''}:${rec.pci}`;
    const other = seen.get(key);
    if (other) c.fail(`${f}.pci`, rec.pci, `${other} is at the same place (${rec.bus ?? 'root bus'} slot ${rec.pci})`);
    seen.set(key, f);
  }
}

/** Every field of a (parsed) runtime file by its rule; throws InvalidArgumentError naming the first bad field. */
export function validateRuntime(data: RuntimeData): void {
  const c = new Checker(typeof data.instance === 'string' ? data.instance.slice(0, 64) : '?');
  try {
    assertInstanceName(data.instance);
  } catch {
    c.fail('instance', data.instance, 'an instance name');
  }
  assertFixedCommand(data.kvm_cmd, data.instance);
  checkNics(c, data.nics);
  checkDisks(c, data.block_devices);
  checkScsi(c, data);
  checkPmem(c, data.pmem_devices);
  checkHvparams(data.hvparams, (m) => new InvalidArgumentError(`runtime file of ${data.instance}: ${m}`), false);
  checkPlacements(c, data);
  if (data.resources !== undefined) checkResources(c, data.resources);
  if (data.migration !== undefined) checkMigration(c, data.migration);
  if (data.operations !== undefined) checkOperations(c, data.operations);
}
