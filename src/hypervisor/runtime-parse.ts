/**
 * Runtime file text <-> RuntimeData (runtime-file.ts has the format): every
 * supported format parsed into version 2 with each entry checked, and the
 * canonical serialization.
 */
import { backingFields, type DiskBacking } from './disk-template';
import { RuntimeFileError } from './errors';
import type { DiskCopyMark, MigrationMark } from './migration';
import { journalFrom } from './operations';
import type { ResourceState } from './resize';
import { ioLimitsFrom } from './disk-io-limits';
import type { DiskRecord, HvParams, NicRecord, PmemRecord, RuntimeData, ScsiDiskRecord } from './runtime-file';

export const RUNTIME_VERSION = 2;

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function pciOf(v: unknown): number | null {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 32 ? v : null;
}

function nicFrom(file: string, raw: unknown): NicRecord {
  if (!isObject(raw) || typeof raw.mac !== 'string') throw new RuntimeFileError(file, 'a NIC entry has no "mac"');
  const nicparams = isObject(raw.nicparams) ? raw.nicparams : {};
  const link = typeof raw.link === 'string' ? raw.link : typeof nicparams.link === 'string' ? nicparams.link : undefined;
  const nic: NicRecord = { uuid: typeof raw.uuid === 'string' ? raw.uuid : '', mac: raw.mac, pci: pciOf(raw.pci) };
  if (link) nic.link = link;
  if (typeof raw.bus === 'string') nic.bus = raw.bus;
  if (typeof raw.tap === 'string') nic.tap = raw.tap;
  if (raw.state === 'attaching' || raw.state === 'detaching') nic.state = raw.state;
  if (raw.link_state === 'up' || raw.link_state === 'down') nic.link_state = raw.link_state;
  if (typeof raw.rate_mbit === 'number') nic.rate_mbit = raw.rate_mbit;
  if (typeof raw.queues === 'number') nic.queues = raw.queues;
  if (raw.model === 'virtio' || raw.model === 'e1000' || raw.model === 'rtl8139') nic.model = raw.model;
  return nic;
}

function diskFrom(file: string, raw: unknown): DiskRecord {
  // Ganeti stores (disk, link, uri) tuples; the first element is the disk.
  const d = Array.isArray(raw) ? raw[0] : raw;
  const hostPath = Array.isArray(raw) && typeof raw[1] === 'string' ? raw[1] : isObject(d) ? d.path : undefined;
  if (!isObject(d) || typeof hostPath !== 'string') throw new RuntimeFileError(file, 'a block device entry has no path');
  const disk: DiskRecord = { uuid: typeof d.uuid === 'string' ? d.uuid : '', path: hostPath, pci: pciOf(d.pci) };
  if (typeof d.bus === 'string') disk.bus = d.bus;
  if (d.state === 'attaching' || d.state === 'detaching') disk.state = d.state;
  if (d.created === true) disk.created = true;
  return { ...disk, ...backingFrom(file, d, disk.uuid), ...diskExtrasFrom(d) };
}

/** The template fields of a disk entry (disk-template.ts); absent for file disks. */
function backingFrom(file: string, d: Record<string, unknown>, uuid: string): DiskBacking {
  if (d.template === undefined) return {};
  if (d.template === 'blockdev') return { template: 'blockdev' };
  const rbd = d.rbd;
  if (d.template === 'rbd' && isObject(rbd) && typeof rbd.pool === 'string' && typeof rbd.image === 'string')
    return backingFields({ template: 'rbd', rbd: { pool: rbd.pool, image: rbd.image } });
  throw new RuntimeFileError(file, `disk ${uuid} has an unknown template ${JSON.stringify(d.template)} (or an rbd entry without pool and image)`);
}

/** size_bytes, grow_to and io_limits of a disk entry (virtio-blk or SCSI), only those valid. */
function diskExtrasFrom(raw: Record<string, unknown>): Pick<DiskRecord, 'size_bytes' | 'grow_to' | 'io_limits'> {
  const out: Pick<DiskRecord, 'size_bytes' | 'grow_to' | 'io_limits'> = {};
  for (const k of ['size_bytes', 'grow_to'] as const) {
    const v = raw[k];
    if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) out[k] = v;
  }
  const limits = ioLimitsFrom(raw.io_limits);
  if (limits) out.io_limits = limits;
  return out;
}

function hvparamsFrom(file: string, raw: unknown): HvParams {
  if (!isObject(raw)) throw new RuntimeFileError(file, '"hvparams" is not an object');
  const out: HvParams = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return out;
}

function cmdFrom(file: string, raw: unknown): string[] {
  if (!Array.isArray(raw) || !raw.every((a) => typeof a === 'string'))
    throw new RuntimeFileError(file, '"kvm_cmd" is not a list of strings');
  return raw as string[];
}

function listFrom<T>(file: string, raw: unknown, what: string, item: (f: string, v: unknown) => T): T[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new RuntimeFileError(file, `"${what}" is not a list`);
  return raw.map((v) => item(file, v));
}

/** Parses runtime file text of any supported format into version 2. */
export function parseRuntime(file: string, text: string, instance: string): RuntimeData {
  return parseRuntimeValue(file, parseJson(file, text), instance);
}

export function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RuntimeFileError(file, `not valid JSON (${(err as Error).message})`);
  }
}

/** As parseRuntime, of text already parsed as JSON. */
export function parseRuntimeValue(file: string, raw: unknown, instance: string): RuntimeData {
  if (Array.isArray(raw)) {
    if (raw.length !== 3 && raw.length !== 4)
      throw new RuntimeFileError(file, `a Ganeti-style list must have 3 or 4 entries, not ${raw.length}`);
    return {
      version: RUNTIME_VERSION,
      instance,
      kvm_cmd: cmdFrom(file, raw[0]),
      nics: listFrom(file, raw[1], 'nics', nicFrom),
      hvparams: hvparamsFrom(file, raw[2]),
      block_devices: raw.length === 4 ? listFrom(file, raw[3], 'block_devices', diskFrom) : [],
    };
  }
  if (!isObject(raw)) throw new RuntimeFileError(file, 'neither a version 2 object nor a Ganeti-style list');
  if (raw.version !== RUNTIME_VERSION)
    throw new RuntimeFileError(file, `unsupported version ${String(raw.version)} (this node reads ${RUNTIME_VERSION})`);
  return {
    version: RUNTIME_VERSION,
    instance: typeof raw.instance === 'string' ? raw.instance : instance,
    kvm_cmd: cmdFrom(file, raw.kvm_cmd),
    nics: listFrom(file, raw.nics, 'nics', nicFrom),
    hvparams: hvparamsFrom(file, raw.hvparams ?? {}),
    block_devices: listFrom(file, raw.block_devices, 'block_devices', diskFrom),
    ...extraDevicesFrom(file, raw),
    ...(raw.resources === undefined ? {} : { resources: resourcesFrom(file, raw.resources) }),
    ...(raw.migration === undefined ? {} : { migration: migrationFrom(file, raw.migration) }),
    ...(raw.operations === undefined ? {} : { operations: journalFrom(raw.operations, (m) => new RuntimeFileError(file, m)) }),
    ...agentChannelFrom(file, raw.agent_channel),
  };
}

function agentChannelFrom(file: string, raw: unknown): { agent_channel?: true } {
  if (raw === undefined || raw === false) return {};
  if (raw !== true) throw new RuntimeFileError(file, '"agent_channel" must be true or absent');
  return { agent_channel: true };
}

const intOf = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined);

function scsiDiskFrom(file: string, raw: unknown): ScsiDiskRecord {
  if (!isObject(raw) || typeof raw.uuid !== 'string' || typeof raw.path !== 'string') throw new RuntimeFileError(file, 'a SCSI disk entry has no uuid or path');
  const target = intOf(raw.target);
  const lun = intOf(raw.lun);
  if (target === undefined || lun === undefined) throw new RuntimeFileError(file, `SCSI disk ${raw.uuid} has no target/lun`);
  const d: ScsiDiskRecord = { uuid: raw.uuid, path: raw.path, target, lun };
  if (raw.state === 'attaching' || raw.state === 'detaching') d.state = raw.state;
  if (raw.created === true) d.created = true;
  return { ...d, ...backingFrom(file, raw, raw.uuid), ...diskExtrasFrom(raw) };
}

function pmemFrom(file: string, raw: unknown): PmemRecord {
  if (!isObject(raw) || typeof raw.uuid !== 'string' || typeof raw.path !== 'string') throw new RuntimeFileError(file, 'a pmem entry has no uuid or path');
  const sizeMiB = intOf(raw.sizeMiB);
  if (!sizeMiB) throw new RuntimeFileError(file, `pmem device ${raw.uuid} has no sizeMiB`);
  const d: PmemRecord = { uuid: raw.uuid, path: raw.path, sizeMiB, pci: pciOf(raw.pci) };
  if (typeof raw.bus === 'string') d.bus = raw.bus;
  if (raw.state === 'attaching' || raw.state === 'detaching') d.state = raw.state;
  if (raw.created === true) d.created = true;
  return d;
}

/** The optional device lists of version 2 (SCSI disks, their controller, pmem devices). */
function extraDevicesFrom(file: string, raw: Record<string, unknown>): Partial<RuntimeData> {
  const out: Partial<RuntimeData> = {};
  if (raw.scsi_disks !== undefined) out.scsi_disks = listFrom(file, raw.scsi_disks, 'scsi_disks', scsiDiskFrom);
  if (raw.pmem_devices !== undefined) out.pmem_devices = listFrom(file, raw.pmem_devices, 'pmem_devices', pmemFrom);
  const c = raw.scsi_controller;
  if (c !== undefined) {
    const pci = isObject(c) ? pciOf(c.pci) : null;
    if (!isObject(c) || typeof c.id !== 'string' || pci === null) throw new RuntimeFileError(file, '"scsi_controller" needs an id and a PCI slot');
    out.scsi_controller = { id: c.id, pci, ...(typeof c.bus === 'string' ? { bus: c.bus } : {}) };
  }
  return out;
}

function migrationFrom(file: string, raw: unknown): MigrationMark {
  const ok =
    isObject(raw) &&
    (raw.role === 'source' || raw.role === 'target') &&
    typeof raw.peer === 'string' &&
    typeof raw.since === 'string' &&
    (raw.uri === undefined || typeof raw.uri === 'string');
  if (!ok) throw new RuntimeFileError(file, '"migration" is not a valid migration record');
  const m: MigrationMark = { role: raw.role as MigrationMark['role'], peer: raw.peer as string, since: raw.since as string };
  if (typeof raw.uri === 'string') m.uri = raw.uri;
  if (raw.tls === true) m.tls = true;
  if (raw.diskCopy !== undefined) m.diskCopy = diskCopyFrom(file, raw.diskCopy);
  return m;
}

function diskCopyFrom(file: string, raw: unknown): DiskCopyMark {
  const isStr = (v: unknown): v is string => typeof v === 'string';
  const ok =
    isObject(raw) && isStr(raw.nbd) && Array.isArray(raw.disks) &&
    raw.disks.every((d) => isObject(d) && isStr(d.uuid) && isStr(d.node) && isStr(d.path)) &&
    (raw.files === undefined || (Array.isArray(raw.files) && raw.files.every(isStr))) &&
    (raw.ended === undefined || typeof raw.ended === 'boolean');
  if (!ok) throw new RuntimeFileError(file, '"migration.diskCopy" is not a valid disk copy record');
  const disks = (raw.disks as Array<Record<string, string>>).map((d) => ({ uuid: d.uuid, node: d.node, path: d.path }));
  return { disks, nbd: raw.nbd as string, ...(raw.files ? { files: [...(raw.files as string[])] } : {}), ...(raw.ended ? { ended: true } : {}) };
}

function resourcesFrom(file: string, raw: unknown): ResourceState {
  const ok =
    isObject(raw) &&
    ['bootVcpus', 'maxVcpus', 'bootMemoryMiB', 'maxMemoryMiB'].every((k) => typeof raw[k] === 'number') &&
    ['none', 'acpi', 'virtio-mem'].includes(String(raw.memoryHotplug)) &&
    Array.isArray(raw.cpus) &&
    Array.isArray(raw.dimms);
  if (!ok) throw new RuntimeFileError(file, '"resources" is not a valid vCPU/memory record');
  return raw as unknown as ResourceState;
}

export function serializeRuntime(data: RuntimeData): string {
  return JSON.stringify(canonicalRuntime(data), null, 2) + '\n';
}

/** The fields of `data` in the order of the format, empty optional lists left out. */
export function canonicalRuntime(data: RuntimeData): RuntimeData {
  return {
    version: RUNTIME_VERSION,
    instance: data.instance,
    kvm_cmd: data.kvm_cmd,
    nics: data.nics,
    hvparams: data.hvparams,
    block_devices: data.block_devices,
    ...(data.scsi_disks?.length ? { scsi_disks: data.scsi_disks } : {}),
    ...(data.scsi_controller ? { scsi_controller: data.scsi_controller } : {}),
    ...(data.pmem_devices?.length ? { pmem_devices: data.pmem_devices } : {}),
    ...(data.resources ? { resources: data.resources } : {}),
    ...(data.migration ? { migration: data.migration } : {}),
    ...(data.operations ? { operations: data.operations } : {}),
    ...(data.agent_channel ? { agent_channel: true as const } : {}),
  };
}

