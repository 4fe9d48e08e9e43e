/**
 * NIC hotplug (virtio-net-pci on a tap), in libvirt's shape:
 *   prepare  -> host tap, up and on its bridge
 *   attach   -> getfd, netdev_add, device_add, sent together (a pipeline,
 *               hotplug-transaction.ts; each undone if a later one fails)
 *   detach   -> device_del, wait until QEMU no longer lists the device
 *   release  -> netdev_del (QEMU closes the tap fd; the tap disappears);
 *               closefd only for a record whose attach may have stopped
 *               before netdev_add took the named fds
 * The same release path serves an API remove, a guest-initiated eject and
 * reconciliation after a restart.
 */
import * as fs from 'node:fs';
import { normalizeMacWith } from '../common/mac';
import { queuesProblem } from '../common/nic-params';
import { deviceId } from './device-id';
import { InvalidArgumentError } from './errors';
import { inTransaction, type PipelinedStep } from './hotplug-transaction';
import { DEFAULT_UNPLUG_TIMEOUTS } from './unplug-timeouts';
import { deleteDevice, deviceAddStep, ignoreNotFound, pciPlacement } from './qdev';
import type { Monitor } from './qmp-client';
import type { NicRecord } from './runtime-file';
import { assertBridge, connectTap, createTap } from './tap';
import { checkRate, setTapRate } from './tap-rate';

/** The NIC models and their QEMU 10 device names (all hot-pluggable PCI devices). */
export const NIC_MODELS = { virtio: 'virtio-net-pci', e1000: 'e1000', rtl8139: 'rtl8139' } as const;
export type NicModel = keyof typeof NIC_MODELS;
export type LinkState = 'up' | 'down';

/** Queues of a multi-queue NIC: 1 to 8, at most the maximum vCPUs, virtio only (src/common/nic-params.ts says why). */
export { MAX_NIC_QUEUES } from '../common/nic-params';

export const isNicModel = (v: unknown): v is NicModel => typeof v === 'string' && Object.hasOwn(NIC_MODELS, v);

export function checkNicQueues(queues: number, model: NicModel, maxVcpus: number | undefined): void {
  const problem = queuesProblem(queues, model, maxVcpus);
  if (problem) throw new InvalidArgumentError(`${problem}, not ${queues}`);
}

export const nicQueues = (nic: Pick<NicRecord, 'queues'>): number => nic.queues ?? 1;
export const nicModel = (nic: Pick<NicRecord, 'model'>): NicModel => nic.model ?? 'virtio';
export const nicLinkState = (nic: Pick<NicRecord, 'link_state'>): LinkState => nic.link_state ?? 'up';

/** The MAC rule of master and node (src/common/mac.ts): unicast, not all zeros; lower case. */
export function normalizeMac(mac: string): string {
  return normalizeMacWith(mac, (m) => new InvalidArgumentError(m));
}

/** Checks what can be checked before anything is changed. */
export function validateNic(nic: Pick<NicRecord, 'mac' | 'link' | 'model' | 'queues' | 'rate_mbit' | 'link_state'>, maxVcpus?: number): void {
  normalizeMac(nic.mac);
  validateNicParams(nic, maxVcpus);
  if (nic.link) assertBridge(nic.link);
}

/** link_state, rate, queues and model by the node's rules (no host look-up). */
export function validateNicParams(nic: Pick<NicRecord, 'model' | 'queues' | 'rate_mbit' | 'link_state'>, maxVcpus?: number): void {
  if (nic.model !== undefined && !isNicModel(nic.model)) throw new InvalidArgumentError(`NIC model must be one of ${Object.keys(NIC_MODELS).join(', ')}`);
  if (nic.link_state !== undefined && nic.link_state !== 'up' && nic.link_state !== 'down') throw new InvalidArgumentError('link_state must be up or down');
  if (nic.rate_mbit !== undefined) checkRate(nic.rate_mbit);
  checkNicQueues(nicQueues(nic), nicModel(nic), maxVcpus);
}

export const nicId = (nic: NicRecord, slot: number): string => deviceId('nic', nic.uuid, slot, nic.bus);

/**
 * Host side for a boot, a hot-add or a migration target: an open tap (one fd
 * per queue) on its bridge, with its rate limit. The caller closes the fds
 * after QEMU has its own copies.
 */
export async function prepareNicTap(nic: NicRecord): Promise<{ fds: number[]; name: string }> {
  const tap = createTap(nicQueues(nic));
  try {
    connectTap(tap.name, nic.link);
    if (nic.rate_mbit) await setTapRate(tap.name, nic.rate_mbit);
  } catch (err) {
    for (const fd of tap.fds) fs.closeSync(fd);
    throw err;
  }
  return tap;
}

export interface NicDeviceOptions {
  /**
   * Leave out the NIC's option ROM. Needed when QEMU runs in a chroot, where
   * it cannot read the ROM files. Boot-time and hot-added NICs must agree on
   * it, or a migration target's RAM blocks would not match the source's.
   */
  noRom?: boolean;
}

/** The device_add properties of the NIC; the same at boot and at hotplug. */
export function nicDeviceProps(nic: NicRecord, slot: number, options: NicDeviceOptions): Record<string, string | number | boolean> {
  const id = nicId(nic, slot);
  const props: Record<string, string | number | boolean> = { driver: NIC_MODELS[nicModel(nic)], id, netdev: id, mac: nic.mac, ...pciPlacement(nic, slot) };
  const queues = nicQueues(nic);
  if (queues > 1) Object.assign(props, { mq: true, vectors: 2 * queues + 2 });
  if (options.noRom) props.romfile = '';
  return props;
}

const argValue = (v: string | number | boolean): string => (typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v));
const toDeviceArg = (props: Record<string, string | number | boolean>): string =>
  [String(props.driver), ...Object.entries(props).filter(([k]) => k !== 'driver').map(([k, v]) => `${k}=${argValue(v)}`)].join(',');

/** QEMU arguments that create the NIC at boot, its tap queues at child fds `childFds`. */
export function nicBootArgs(nic: NicRecord, slot: number, childFds: number[], options: NicDeviceOptions): string[] {
  const id = nicId(nic, slot);
  const tap = childFds.length > 1 ? `tap,id=${id},fds=${childFds.join(':')},vhost=off` : `tap,id=${id},fd=${childFds[0]}`;
  return ['-netdev', tap, '-device', toDeviceArg(nicDeviceProps(nic, slot, options))];
}

/** The names the NIC's tap fds get in QEMU (getfd): the device id, or id-qN per queue. */
export function nicFdNames(nic: NicRecord, slot: number, queues = nicQueues(nic)): string[] {
  const id = nicId(nic, slot);
  return queues > 1 ? Array.from({ length: queues }, (_, i) => `${id}-q${i}`) : [id];
}

/** QMP set_link on the NIC: the name matches both its device and its netdev (same id), so the guest sees the carrier change. */
export async function setNicLink(mon: Monitor, nic: NicRecord, slot: number, state: LinkState): Promise<void> {
  await mon.execute('set_link', { name: nicId(nic, slot), up: state === 'up' });
}

/**
 * Hot-adds the NIC at `slot` on the prepared tap (prepareNicTap: created,
 * on its bridge and named in the NIC's intent before QEMU is touched, so a
 * crash never leaves a tap that no record names). The caller keeps its fd
 * and closes it afterwards: QEMU holds its own copy from getfd on. All
 * commands go out at once (QEMU runs them in order, each fd with its own
 * getfd); every step QEMU executed is undone if one fails.
 */
export async function attachNic(mon: Monitor, nic: NicRecord, slot: number, options: NicDeviceOptions, tapFds: number[]): Promise<void> {
  const id = nicId(nic, slot);
  const names = nicFdNames(nic, slot, tapFds.length);
  const backend = names.length > 1 ? { type: 'tap', id, fds: names.join(':'), vhost: false } : { type: 'tap', id, fd: id };
  const getfds: PipelinedStep[] = names.map((fdname, i) => ({
    name: `getfd ${fdname}`,
    send: () => mon.execute('getfd', { fdname }, { fds: [tapFds[i]] }),
    undo: () => ignoreNotFound(mon.execute('closefd', { fdname })), // a netdev_add that failed may have taken it already
  }));
  const steps: PipelinedStep[] = [
    ...getfds,
    // netdev_add consumes the named fds: their closefd is no longer an undo.
    { name: 'netdev_add', send: () => mon.execute('netdev_add', backend), undo: () => mon.execute('netdev_del', { id }), takesOver: getfds.map((g) => g.name) },
    deviceAddStep(mon, id, nicDeviceProps(nic, slot, options), DEFAULT_UNPLUG_TIMEOUTS.nic),
  ];
  if (nicLinkState(nic) === 'down') steps.push({ name: 'set_link', send: () => setNicLink(mon, nic, slot, 'down') });
  await inTransaction(`hot-add of NIC ${id}`, (tx) => tx.pipeline(steps));
}

/** Asks the guest to release the NIC and waits for QEMU to delete it. */
export async function detachNic(mon: Monitor, nic: NicRecord, slot: number, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, nicId(nic, slot), timeoutMs);
}

/**
 * Frees the NIC's backend; harmless when it is already gone. A NIC whose
 * attach went through had its named fds taken by netdev_add: only a record
 * still "attaching" (its attach cut off, settled by reconcile) may have left
 * one, and gets a closefd per name.
 */
export async function releaseNic(mon: Monitor, nic: NicRecord, slot: number): Promise<void> {
  const id = nicId(nic, slot);
  await ignoreNotFound(mon.execute('netdev_del', { id }));
  if (nic.state === 'attaching') for (const fdname of nicFdNames(nic, slot)) await ignoreNotFound(mon.execute('closefd', { fdname }));
}

/** Sets every recorded link-down NIC down (a start before the guest runs, a migration target before it resumes). */
export async function applyRecordedLinks(mon: Monitor, nics: NicRecord[]): Promise<void> {
  for (const nic of nics) if (nic.pci !== null && nicLinkState(nic) === 'down') await setNicLink(mon, nic, nic.pci, 'down');
}
