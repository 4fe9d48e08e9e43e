/**
 * Host side of a NIC: a tap device opened with TUNSETIFF (IFF_TAP, IFF_NO_PI,
 * IFF_VNET_HDR) and, when the NIC has a link, enslaved to that bridge. The tap
 * is not persistent: it disappears when the last fd to it (ours, then QEMU's
 * copy) is closed, so a crash can never leak it.
 */
import * as fs from 'node:fs';
import { InvalidArgumentError, errorMessage } from './errors';
import { bridgeAddIf, bridgeDelIf, linkUp, openTap, openTapQueues, type TapHandle } from './native';

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

/** A tap with its queue fds (one unless the NIC is multi-queue). */
export interface TapQueuesHandle {
  fds: number[];
  name: string;
}

/** Opens a new tap with `queues` queues (IFF_MULTI_QUEUE when more than one); the caller owns the fds and must close them. */
export function createTap(queues = 1): TapQueuesHandle {
  try {
    if (queues <= 1) {
      const tap: TapHandle = openTap(TAP_NAME_TEMPLATE, true);
      return { fds: [tap.fd], name: tap.name };
    }
    return openTapQueues(TAP_NAME_TEMPLATE, true, queues);
  } catch (err) {
    throw new Error(`cannot create a tap device${queues > 1 ? ` with ${queues} queues` : ''}: ${errorMessage(err)}`, { cause: err });
  }
}

/** The bridge the tap is enslaved to now, or undefined. */
export function tapBridge(tap: string): string | undefined {
  try {
    return fs.readlinkSync(`/sys/class/net/${tap}/master`).split('/').pop();
  } catch {
    return undefined;
  }
}

/**
 * Moves a running tap from bridge `from` to bridge `to` (either may be
 * none); the tap and QEMU's fds stay. On failure the tap is put back on
 * `from` and the error names what failed.
 */
export function moveTap(tap: string, from: string | undefined, to: string | undefined): void {
  if (from === to) return;
  if (to) assertBridge(to);
  if (from && tapBridge(tap) === from) bridgeDelIf(from, tap);
  try {
    if (to) bridgeAddIf(to, tap);
  } catch (err) {
    let back = '';
    try {
      if (from) bridgeAddIf(from, tap);
    } catch (e) {
      back = `; putting it back on ${from} failed too: ${errorMessage(e)}`;
    }
    throw new Error(`cannot move tap ${tap} to bridge ${to}: ${errorMessage(err)}${back}`, { cause: err });
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
