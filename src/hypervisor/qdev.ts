/**
 * Helpers shared by every device kind: PCI addresses, device deletion that
 * waits for QEMU's DEVICE_DELETED, presence checks, idempotent cleanup.
 */
import { QmpCommandError, QmpTimeoutError } from './errors';
import type { Monitor, QmpEvent } from './qmp-client';

export const pciAddr = (slot: number): string => `0x${slot.toString(16)}`;

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
 */
async function stillPresent(mon: Monitor, id: string): Promise<boolean> {
  return (await deviceExists(mon, id)) || (await onPciBus(mon, id));
}

/** QEMU stamps events with the host's wall clock, as Date.now() reads it. */
const eventTimeMs = (e: QmpEvent): number => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;

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
 * device_del, then wait until QEMU no longer has the device. Its own
 * DEVICE_DELETED, stamped after our device_del, ends the wait at once; any
 * other related event (a child's DEVICE_DELETED, ACPI_DEVICE_OST) or a short
 * poll makes us check that it is gone from /machine/peripheral and from every
 * PCI bus, because not every device kind announces its own end (a vCPU on
 * QEMU 10 reports only its lapic child). A device that is already
 * gone counts as deleted. On timeout the device may still go later; the
 * caller keeps it marked as detaching so that a retry or reconcile ends it.
 */
export async function deleteDevice(mon: Monitor, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let done = false;
  const sentAt = Date.now();
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
    const wait = mon.waitForEvent((e) => isDeletionOf(id, e) || mayEndUnplug(id, e), Math.min(poll, left), `unplug of ${id}`);
    const event = await wait.promise.catch((err: unknown) => {
      if (err instanceof QmpTimeoutError) return undefined; // poll interval elapsed
      throw err; // the monitor went away
    });
    // The device's own DEVICE_DELETED (sent once it has left the bus) ends the
    // wait, but only one stamped after our device_del: a late one from an
    // earlier removal of the same id (a NIC modify removes and re-adds the same
    // id) must not. Anything else is checked against QEMU's lists.
    done = (event !== undefined && isDeletionOf(id, event) && eventTimeMs(event) >= sentAt) || !(await stillPresent(mon, id));
    if (event) poll = EVENT_POLL_MS; // the unplug is under way: look again soon
  }
  if (!done) throw new QmpTimeoutError(`unplug of ${id} (the guest did not eject it)`, 'the monitor', timeoutMs);
}
