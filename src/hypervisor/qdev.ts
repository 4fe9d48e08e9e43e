/**
 * Helpers shared by every device kind: PCI addresses, device deletion that
 * waits for QEMU's DEVICE_DELETED, presence checks, idempotent cleanup.
 */
import { QmpCommandError, QmpTimeoutError } from './errors';
import type { PipelinedStep } from './hotplug-transaction';
import type { Monitor, QmpEvent } from './qmp-client';

export const pciAddr = (slot: number): string => `0x${slot.toString(16)}`;

/** Where a device sits in the PCI tree: a slot of a bus (absent: the machine's root bus). */
export interface PciPlace {
  bus?: string;
  pci: number | null;
}

/**
 * The device_add placement properties of a record: `addr`, and `bus` for a
 * device behind a bridge or root port. A device on the root bus gets no
 * `bus`: QEMU puts it on the first PCI bus it finds, which is the machine's
 * only root bus (pci.0 on pc, pcie.0 on q35), so records of old runtime
 * files (no bus) keep working on both machines. Every device_add and boot
 * -device of a PCI device we place uses this (or pciPlacementArg).
 */
export function pciPlacement(rec: PciPlace, slot = rec.pci as number): { bus?: string; addr: string } {
  return rec.bus === undefined ? { addr: pciAddr(slot) } : { bus: rec.bus, addr: pciAddr(slot) };
}

/** The same as a -device option string part: "bus=pcib1,addr=0x5" or "addr=0x5". */
export function pciPlacementArg(rec: PciPlace, slot = rec.pci as number): string {
  return Object.entries(pciPlacement(rec, slot)).map(([k, v]) => `${k}=${v}`).join(',');
}

const peripheralPath = (id: string): string => `/machine/peripheral/${id}`;

/** True for DEVICE_DELETED of the device itself (not of its virtio backend child). */
export function isDeletionOf(id: string, e: QmpEvent): boolean {
  return e.event === 'DEVICE_DELETED' && (e.data.device === id || e.data.path === peripheralPath(id));
}

const NOT_FOUND = /not found|failed to find|no such|does not exist|cannot find/i;

export function isNotFound(err: unknown): boolean {
  return err instanceof QmpCommandError && (err.qmpClass === 'DeviceNotFound' || NOT_FOUND.test(err.message));
}

/** Awaits a cleanup command, treating "already gone" as success. */
export async function ignoreNotFound(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** The ids of the devices created with an id (the /machine/peripheral children). */
export async function listDeviceIds(mon: Monitor): Promise<Set<string>> {
  const children = await mon.execute<Array<{ name: string; type: string }>>('qom-list', {
    path: '/machine/peripheral',
  });
  return new Set(children.filter((c) => c.type.startsWith('child<')).map((c) => c.name));
}

export async function deviceExists(mon: Monitor, id: string): Promise<boolean> {
  return (await listDeviceIds(mon)).has(id);
}

interface PciBusInfo {
  devices: Array<{ qdev_id: string; pci_bridge?: { devices?: PciBusInfo['devices'] } }>;
}

/** Whether a PCI function with this qdev id is still on a bus. */
async function onPciBus(mon: Monitor, id: string): Promise<boolean> {
  const buses = await mon.execute<PciBusInfo[]>('query-pci');
  const has = (devices: PciBusInfo['devices']): boolean =>
    devices.some((d) => d.qdev_id === id || (d.pci_bridge?.devices ? has(d.pci_bridge.devices) : false));
  return buses.some((b) => has(b.devices));
}

/**
 * Whether QEMU still holds the device anywhere. A PCI device leaves
 * /machine/peripheral a moment before it leaves the bus (its children's
 * DEVICE_DELETED come in between), and its slot is not free until it has.
 * Its own DEVICE_DELETED may come later still (see deleteDevice). Both
 * lists are asked for at once: one round trip (QEMU answers in order).
 */
export async function devicePresent(mon: Monitor, id: string): Promise<boolean> {
  const [listed, onBus] = await Promise.all([deviceExists(mon, id), onPciBus(mon, id)]);
  return listed || onBus;
}

const POLL_MS = 200;
const EVENT_POLL_MS = 20;

/** Events after which a pending unplug may have finished. */
function mayEndUnplug(id: string, e: QmpEvent): boolean {
  if (e.event === 'ACPI_DEVICE_OST') return true; // vCPU and DIMM ejects report here, often without the id
  if (e.event !== 'DEVICE_DELETED') return false;
  const path = typeof e.data.path === 'string' ? e.data.path : '';
  return e.data.device === id || path.startsWith(peripheralPath(id));
}

/**
 * device_del, then wait until QEMU no longer has the device: neither in
 * /machine/peripheral nor on a PCI bus. Events only tell us when to look:
 * QEMU 10 sends a device's own DEVICE_DELETED when the object is finalized,
 * which can be tens of milliseconds after it left the bus and its id became
 * free again, so after a NIC modify (remove and re-add of the same id) the
 * event of the old device arrives while the new one is still plugged, with a
 * timestamp after our device_del. Not every device kind announces its own end
 * either (a vCPU reports only its lapic child). So every related event
 * (DEVICE_DELETED of the device or a child, ACPI_DEVICE_OST) and a short poll
 * lead to a check of QEMU's lists, and only the lists end the wait. A device
 * that is already gone counts as deleted. On timeout the device may still go
 * later; the caller keeps it marked as detaching so that a retry or
 * reconcile ends it.
 */
export async function deleteDevice(mon: Monitor, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let done = false;
  try {
    await mon.execute('device_del', { id });
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  let poll = POLL_MS;
  while (!done) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const wait = mon.waitForEvent((e) => mayEndUnplug(id, e), Math.min(poll, left), `unplug of ${id}`);
    const event = await wait.promise.catch((err: unknown) => {
      if (err instanceof QmpTimeoutError) return undefined; // poll interval elapsed
      throw err; // the monitor went away
    });
    done = !(await devicePresent(mon, id));
    if (event) poll = EVENT_POLL_MS; // the unplug is under way: look again soon
  }
  if (!done) throw new QmpTimeoutError(`unplug of ${id} (the guest did not eject it)`, 'the monitor', timeoutMs);
}

/**
 * The device_add of a hotplug as a pipelined step. Its undo (device_del,
 * then the wait until QEMU no longer lists it, at most `unplugMs`) runs when
 * a later step fails, or when QEMU executed it although an earlier command
 * of its pipeline had failed.
 */
export function deviceAddStep(mon: Monitor, id: string, props: Record<string, unknown>, unplugMs: number): PipelinedStep {
  return { name: 'device_add', send: () => mon.execute('device_add', props), undo: () => deleteDevice(mon, id, unplugMs) };
}

const NODE_IN_USE = /is in use/i;
const NODE_RELEASE_MS = 5000;
const NODE_RETRY_MS = 20;

/**
 * blockdev-del of a device's block node (named by the device id), "already
 * gone" counting as done. A device that has left QEMU's lists still holds
 * its node until QEMU finalizes it (its own DEVICE_DELETED, tens of ms later
 * on a busy host): "is in use" is then retried on that event or every 20 ms,
 * for up to 5 s.
 */
export async function deleteBlockNode(mon: Monitor, id: string): Promise<void> {
  const deadline = Date.now() + NODE_RELEASE_MS;
  for (;;) {
    const finalized = mon.waitForEvent((e) => isDeletionOf(id, e), NODE_RETRY_MS, `release of block node ${id}`);
    // Handled at once: the wait may end (time out) while blockdev-del is still running (an RBD image's close).
    const waited = finalized.promise.then(
      () => undefined,
      (e: unknown) => (e instanceof QmpTimeoutError ? undefined : e),
    );
    try {
      await ignoreNotFound(mon.execute('blockdev-del', { 'node-name': id }));
      return;
    } catch (err) {
      if (!(err instanceof QmpCommandError && NODE_IN_USE.test(err.message)) || Date.now() >= deadline) throw err;
      const gone = await waited;
      if (gone) throw gone; // the monitor went away
    } finally {
      finalized.cancel();
    }
  }
}
