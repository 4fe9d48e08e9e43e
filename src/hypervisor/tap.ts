/**
 * Host side of a NIC: a tap device opened with TUNSETIFF (IFF_TAP, IFF_NO_PI,
 * IFF_VNET_HDR) and, when the NIC has a link, enslaved to that bridge. The tap
 * is not persistent: it disappears when the last fd to it (ours, then QEMU's
 * copy) is closed, so a crash can never leak it.
 */
import * as fs from 'node:fs';
import { InvalidArgumentError, errorMessage } from './errors';
import { bridgeAddIf, linkUp, openTap, type TapHandle } from './native';

/** Kernel name template: the kernel picks the first free number. */
export const TAP_NAME_TEMPLATE = 'gnttap%d';

export function bridgeExists(link: string): boolean {
  return fs.existsSync(`/sys/class/net/${link}/bridge`);
}

export function assertBridge(link: string): void {
  if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(link))
    throw new InvalidArgumentError(`link "${link}" is not a valid network interface name`);
  if (!bridgeExists(link)) throw new InvalidArgumentError(`bridge "${link}" does not exist on this node`);
}

export function tapExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

/** Opens a new tap; the caller owns the fd and must close it. */
export function createTap(): TapHandle {
  try {
    return openTap(TAP_NAME_TEMPLATE, true);
  } catch (err) {
    throw new Error(`cannot create a tap device: ${errorMessage(err)}`, { cause: err });
  }
}

/** Brings the tap up, enslaved to `link` when given (ioctls, no `ip` process). */
export function connectTap(tap: string, link: string | undefined): void {
  try {
    if (link) bridgeAddIf(link, tap);
    linkUp(tap);
  } catch (err) {
    throw new Error(`cannot bring tap ${tap} up${link ? ` on bridge ${link}` : ''}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * After the last fd of a tap was closed (QEMU killed), the kernel removes it
 * a moment later; waits for that, up to `timeoutMs`, so that callers can
 * rely on "no tap left" once they return. A name the kernel already gave to
 * a new tap simply ends the wait at the deadline.
 */
export async function waitTapsGone(names: string[], timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (names.some(tapExists) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}
