/**
 * NIC hotplug (virtio-net-pci on a tap), in libvirt's shape:
 *   prepare  -> host tap, up and on its bridge
 *   attach   -> getfd, netdev_add, device_add (each undone if a later one fails)
 *   detach   -> device_del, wait until QEMU no longer lists the device
 *   release  -> netdev_del (QEMU closes the tap fd; the tap disappears)
 * The same release path serves an API remove, a guest-initiated eject and
 * reconciliation after a restart.
 */
import * as fs from 'node:fs';
import { normalizeMacWith } from '../common/mac';
import { deviceId } from './device-id';
import { InvalidArgumentError } from './errors';
import { inTransaction } from './hotplug-transaction';
import { deleteDevice, ignoreNotFound, pciPlacement } from './qdev';
import type { Monitor } from './qmp-client';
import type { NicRecord } from './runtime-file';
import { assertBridge, connectTap, createTap } from './tap';

/** The MAC rule of master and node (src/common/mac.ts): unicast, not all zeros; lower case. */
export function normalizeMac(mac: string): string {
  return normalizeMacWith(mac, (m) => new InvalidArgumentError(m));
}

/** Checks what can be checked before anything is changed. */
export function validateNic(nic: Pick<NicRecord, 'mac' | 'link'>): void {
  normalizeMac(nic.mac);
  if (nic.link) assertBridge(nic.link);
}

export const nicId = (nic: NicRecord, slot: number): string => deviceId('nic', nic.uuid, slot, nic.bus);

/** Host side for a boot: an open tap on its bridge. The caller closes the fd after QEMU starts. */
export async function prepareNicTap(nic: NicRecord): Promise<{ fd: number; name: string }> {
  const tap = createTap();
  try {
    connectTap(tap.name, nic.link);
  } catch (err) {
    fs.closeSync(tap.fd);
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
export function nicDeviceProps(nic: NicRecord, slot: number, options: NicDeviceOptions): Record<string, string> {
  const id = nicId(nic, slot);
  const props: Record<string, string> = { driver: 'virtio-net-pci', id, netdev: id, mac: nic.mac, ...pciPlacement(nic, slot) };
  if (options.noRom) props.romfile = '';
  return props;
}

const toDeviceArg = (props: Record<string, string>): string =>
  [props.driver, ...Object.entries(props).filter(([k]) => k !== 'driver').map(([k, v]) => `${k}=${v}`)].join(',');

/** QEMU arguments that create the NIC at boot, its tap at child fd `childFd`. */
export function nicBootArgs(nic: NicRecord, slot: number, childFd: number, options: NicDeviceOptions): string[] {
  const id = nicId(nic, slot);
  return ['-netdev', `tap,id=${id},fd=${childFd}`, '-device', toDeviceArg(nicDeviceProps(nic, slot, options))];
}

/**
 * Hot-adds the NIC at `slot` on the prepared tap (prepareNicTap: created,
 * on its bridge and named in the NIC's intent before QEMU is touched, so a
 * crash never leaves a tap that no record names). The caller keeps its fd
 * and closes it afterwards: QEMU holds its own copy from getfd on. Undoes
 * every step on failure.
 */
export async function attachNic(mon: Monitor, nic: NicRecord, slot: number, options: NicDeviceOptions, tapFd: number): Promise<void> {
  const id = nicId(nic, slot);
  await inTransaction(`hot-add of NIC ${id}`, async (tx) => {
    await tx.step('getfd', () => mon.execute('getfd', { fdname: id }, { fds: [tapFd] }), () => mon.execute('closefd', { fdname: id }));
    await tx.step('netdev_add', () => mon.execute('netdev_add', { type: 'tap', id, fd: id }), () => mon.execute('netdev_del', { id }));
    tx.forget('getfd'); // netdev_add consumed the named fd
    await tx.step('device_add', () => mon.execute('device_add', nicDeviceProps(nic, slot, options)));
  });
}

/** Asks the guest to release the NIC and waits for QEMU to delete it. */
export async function detachNic(mon: Monitor, nic: NicRecord, slot: number, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, nicId(nic, slot), timeoutMs);
}

/** Frees the NIC's backend; harmless when it is already gone. */
export async function releaseNic(mon: Monitor, nic: NicRecord, slot: number): Promise<void> {
  const id = nicId(nic, slot);
  await ignoreNotFound(mon.execute('netdev_del', { id }));
  await ignoreNotFound(mon.execute('closefd', { fdname: id }));
}
