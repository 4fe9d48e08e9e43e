/**
 * QEMU device ids: `<type>-<first part of uuid>-<bus>-<slot>`, where <bus>
 * is `pci` for the machine's root bus (Ganeti's form, e.g.
 * `nic-3f2a9c1e-pci-5`) and the id of the bridge or root port otherwise
 * (`nic-3f2a9c1e-pcib1-7`, `disk-3f2a9c1e-rp4-0`; pci-topology.ts makes
 * those ids). They follow from the runtime file alone, so a device can be
 * found and removed after the node daemon restarts.
 */
import { InvalidArgumentError } from './errors';

export type DeviceKind = 'nic' | 'disk';

export const MAX_ID_LENGTH = 32;
const ID_RULE = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** Ids of the buses behind our own controllers (pci-topology.ts): pcibN (pci-bridge), rpN (pcie-root-port). */
export const CONTROLLER_BUS_RULE = /^(pcib|rp)[1-9]\d{0,2}$/;

/** Returns why `id` is not acceptable to QEMU, or undefined if it is. */
export function idProblem(id: string): string | undefined {
  if (id.length === 0) return 'it is empty';
  if (id.length > MAX_ID_LENGTH) return `it is ${id.length} characters long (at most ${MAX_ID_LENGTH})`;
  if (!/^[A-Za-z]/.test(id)) return 'it does not start with a letter';
  if (!ID_RULE.test(id)) return 'it may contain only letters, digits, ".", "_" and "-"';
  return undefined;
}

export function assertValidId(id: string): string {
  const problem = idProblem(id);
  if (problem) throw new InvalidArgumentError(`device id "${id}" is not valid for QEMU: ${problem}`);
  return id;
}

/** The first dash-separated part of a uuid, as the id's middle part. */
export function uuidPart(uuid: string): string {
  const part = uuid.split('-')[0];
  if (!part) throw new InvalidArgumentError(`device uuid "${uuid}" is empty or starts with "-"`);
  return part;
}

/** The id's bus part: `pci` for the root bus (bus absent), else the controller's bus id. */
function busPart(bus: string | undefined): string {
  if (bus === undefined) return 'pci';
  if (!CONTROLLER_BUS_RULE.test(bus)) throw new InvalidArgumentError(`PCI bus ${JSON.stringify(bus.slice(0, 40))} is not one of this node's bridges or root ports (pcibN, rpN)`);
  return bus;
}

/** The id of a device at `slot` of `bus` (absent: the machine's root bus). */
export function deviceId(kind: DeviceKind | 'pmem', uuid: string, slot: number, bus?: string): string {
  if (!Number.isInteger(slot) || slot < 0 || slot > 31) throw new InvalidArgumentError(`PCI slot ${slot} is out of range (0 to 31)`);
  return assertValidId(`${kind}-${uuidPart(uuid)}-${busPart(bus)}-${slot}`);
}

export interface ParsedDeviceId {
  kind: string;
  uuidPart: string;
  slot: number;
  /** The bus part; absent for the root bus. */
  bus?: string;
}

/** Parses an id made by deviceId(); undefined for anything else. */
export function parseDeviceId(id: string): ParsedDeviceId | undefined {
  const m = /^(nic|disk|pmem)-([A-Za-z0-9._]+)-(pci|(?:pcib|rp)[1-9]\d{0,2})-(0|[1-9]\d?)$/.exec(id);
  if (!m || Number(m[4]) > 31) return undefined;
  const parsed: ParsedDeviceId = { kind: m[1], uuidPart: m[2], slot: Number(m[4]) };
  if (m[3] !== 'pci') parsed.bus = m[3];
  return parsed;
}
