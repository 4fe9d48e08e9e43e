/**
 * vCPU hotplug. QEMU offers the free CPU sockets/cores/threads in
 * `query-hotpluggable-cpus`; a vCPU is added by `device_add` of that entry's
 * type with its topology properties, and removed by `device_del` (the guest
 * ejects it; on QEMU 10 DEVICE_DELETED names only its lapic child, and
 * deleteDevice waits until the vCPU has left QEMU's device list). Ids follow
 * from the topology, so an id is never in use twice at once.
 *
 * The slots are read from QEMU once per monitor connection (at the first
 * vCPU add after a connect, i.e. after a start or a node daemon restart) and
 * then kept by our own adds and removes (`cpuSlots`); the instance's records
 * count as plugged on top. A device_add or device_del QEMU refuses, or one of
 * unknown outcome, drops what is kept, and the next add reads QEMU again.
 */
import { excerpt } from '../common/excerpt';
import { InstanceStateError, InvalidArgumentError } from './errors';
import { deleteDevice } from './qdev';
import type { Monitor } from './qmp-client';

export type CpuProps = Record<string, number>;

export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: CpuProps;
  'qom-path'?: string;
}

/** A hot-added vCPU as the runtime file records it. */
export interface CpuRecord {
  id: string;
  driver: string;
  props: CpuProps;
  /** An intent not yet settled (resource-intents.ts). */
  state?: 'attaching' | 'detaching';
}

const TOPOLOGY = ['socket-id', 'die-id', 'cluster-id', 'core-id', 'thread-id'] as const;
/** The properties query-hotpluggable-cpus gives an x86 vCPU: its topology ids and its NUMA node. */
export const CPU_TOPOLOGY_KEYS: readonly string[] = ['node-id', 'socket-id', 'die-id', 'cluster-id', 'module-id', 'core-id', 'thread-id'];
/** The QEMU types query-hotpluggable-cpus names for x86 vCPUs (e.g. qemu64-x86_64-cpu, host-x86_64-cpu). */
export const CPU_DRIVER_RULE = /^[a-z0-9][a-z0-9.-]{0,47}-x86_64-cpu$/;
export const MAX_TOPOLOGY_ID = 1023;

/**
 * A vCPU record goes into `-device DRIVER,id=ID,PROPS` (a QemuOpts string)
 * and into device_add: only a vCPU type and integer topology ids, so nothing
 * else can be smuggled in.
 */
export function assertCpuRecord(cpu: CpuRecord): void {
  if (!CPU_DRIVER_RULE.test(cpu.driver)) throw new InvalidArgumentError(`vCPU ${excerpt(cpu.id)}: driver ${excerpt(cpu.driver)} is not a vCPU type (NAME-x86_64-cpu)`);
  for (const [k, v] of Object.entries(cpu.props))
    if (!CPU_TOPOLOGY_KEYS.includes(k) || !Number.isInteger(v) || v < 0 || v > MAX_TOPOLOGY_ID)
      throw new InvalidArgumentError(`vCPU ${excerpt(cpu.id)}: property ${excerpt(k)}=${excerpt(v)} is not a topology id (${CPU_TOPOLOGY_KEYS.join(', ')}: 0 to ${MAX_TOPOLOGY_ID})`);
  if (cpu.id !== cpuId(cpu.props)) throw new InvalidArgumentError(`vCPU id ${excerpt(cpu.id)} is not the id of its topology (${cpuId(cpu.props)})`);
}

export function cpuId(props: CpuProps): string {
  const part = (k: string, p: string): string => (props[k] === undefined ? '' : `-${p}${props[k]}`);
  return `vcpu${part('socket-id', 's')}${part('die-id', 'd')}${part('core-id', 'c')}${part('thread-id', 't')}`;
}

function compareTopology(a: CpuProps, b: CpuProps): number {
  for (const k of TOPOLOGY) if ((a[k] ?? 0) !== (b[k] ?? 0)) return (a[k] ?? 0) - (b[k] ?? 0);
  return 0;
}

export async function queryHotpluggableCpus(mon: Monitor): Promise<HotpluggableCpu[]> {
  const cpus = await mon.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
  return [...cpus].sort((a, b) => compareTopology(a.props, b.props));
}

/** QEMU's vCPU slots per monitor connection, kept up to date by attachCpu and detachCpu. */
const slotsByMonitor = new WeakMap<Monitor, HotpluggableCpu[]>();

const copySlots = (cpus: HotpluggableCpu[]): HotpluggableCpu[] => cpus.map((c) => ({ ...c, props: { ...c.props } }));

/** The vCPU slots as QEMU has them: kept from this connection's first query-hotpluggable-cpus and our changes since. */
export async function cpuSlots(mon: Monitor): Promise<HotpluggableCpu[]> {
  const known = slotsByMonitor.get(mon);
  if (known) return copySlots(known);
  const cpus = await queryHotpluggableCpus(mon);
  slotsByMonitor.set(mon, copySlots(cpus));
  return cpus;
}

/** Forgets the kept slots: the next cpuSlots asks QEMU. */
export function forgetCpuSlots(mon: Monitor): void {
  slotsByMonitor.delete(mon);
}

function markSlot(mon: Monitor, cpu: CpuRecord, plugged: boolean): void {
  const slot = slotsByMonitor.get(mon)?.find((c) => cpuId(c.props) === cpu.id);
  if (!slot) return;
  if (plugged) slot['qom-path'] = `/machine/peripheral/${cpu.id}`;
  else delete slot['qom-path'];
}

/** The slots with every recorded vCPU (any state) counted as plugged, whatever was kept. */
export function withRecorded(cpus: HotpluggableCpu[], records: readonly CpuRecord[]): HotpluggableCpu[] {
  const ids = new Set(records.map((r) => r.id));
  return cpus.map((c) => (!c['qom-path'] && ids.has(cpuId(c.props)) ? { ...c, 'qom-path': `/machine/peripheral/${cpuId(c.props)}` } : c));
}

/** Present vCPUs (booted and hot-added). */
export const presentCount = (cpus: HotpluggableCpu[]): number => cpus.filter((c) => c['qom-path']).length;

/** The next `count` free CPU slots, lowest topology first. */
export function freeCpuSlots(instance: string, cpus: HotpluggableCpu[], count: number): CpuRecord[] {
  const free = cpus.filter((c) => !c['qom-path']);
  if (free.length < count)
    throw new InvalidArgumentError(
      `instance ${instance} has room for ${free.length} more vCPUs (maxvcpus ${cpus.length}), not ${count}`,
    );
  return free.slice(0, count).map((c) => ({ id: cpuId(c.props), driver: c.type, props: { ...c.props } }));
}

/** Runs a vCPU change; a failure of any kind drops the kept slots (QEMU is read again at the next add). */
async function changing(mon: Monitor, change: () => Promise<unknown>): Promise<void> {
  try {
    await change();
  } catch (err) {
    forgetCpuSlots(mon);
    throw err;
  }
}

export async function attachCpu(mon: Monitor, cpu: CpuRecord): Promise<void> {
  assertCpuRecord(cpu);
  await changing(mon, () => mon.execute('device_add', { driver: cpu.driver, id: cpu.id, ...cpu.props }));
  markSlot(mon, cpu, true);
}

export async function detachCpu(mon: Monitor, cpu: CpuRecord, timeoutMs: number): Promise<void> {
  await changing(mon, () => deleteDevice(mon, cpu.id, timeoutMs));
  markSlot(mon, cpu, false);
}

export function cpuBootArgs(cpu: CpuRecord): string[] {
  assertCpuRecord(cpu);
  const props = Object.entries(cpu.props).map(([k, v]) => `${k}=${v}`);
  return ['-device', [cpu.driver, `id=${cpu.id}`, ...props].join(',')];
}

/**
 * QEMU before 8.0 (Debian 12's 7.2) corrupts its heap on a vCPU device_add
 * that follows a vCPU device_del in the same process: refuse it plainly.
 */
export function assertCpuReplugSafe(
  instance: string,
  version: { major: number } | undefined,
  unpluggedInThisProcess: boolean,
): void {
  if (unpluggedInThisProcess && version !== undefined && version.major < 8)
    throw new InstanceStateError(
      `instance ${instance} runs QEMU ${version.major}.x, which crashes when a vCPU is added after one was removed; restart the instance first, or upgrade QEMU (8.0 or later)`,
    );
}
