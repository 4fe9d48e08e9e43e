/**
 * Helpers shared by every device kind: PCI addresses, device deletion that
 * waits for QEMU's DEVICE_DELETED, presence checks, idempotent cleanup.
 */
import { QmpCommandError } from './errors';
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

/**
 * device_del and wait for DEVICE_DELETED (the guest's eject). A device that is
 * already gone counts as deleted. On timeout the device may still go later;
 * the caller keeps it marked as detaching so that a retry or reconcile ends it.
 */
export async function deleteDevice(mon: Monitor, id: string, timeoutMs: number): Promise<void> {
  const wait = mon.waitForEvent((e) => isDeletionOf(id, e), timeoutMs, `DEVICE_DELETED of ${id} (guest eject)`);
  wait.promise.catch(() => undefined); // awaited below on every path; never an unhandled rejection
  try {
    await mon.execute('device_del', { id });
  } catch (err) {
    wait.cancel();
    await wait.promise;
    if (isNotFound(err)) return;
    throw err;
  }
  try {
    await wait.promise;
  } catch (err) {
    // The event may have been missed while disconnected; trust QEMU's own view.
    if (!(await deviceExists(mon, id).catch(() => true))) return;
    throw err;
  }
}
