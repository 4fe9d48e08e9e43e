/**
 * Releasing a device's backends right after the device left QEMU's lists.
 *
 * A removal ends when the device has left /machine/peripheral and its bus
 * (qdev.ts deleteDevice): that is when its id and slot are free. QEMU drops
 * the device's hold on its backend (a disk's BlockBackend, a DIMM's memory
 * backend) only when the object is finalized, after an RCU grace period,
 * which is also when it sends the device's own DEVICE_DELETED. Under load a
 * `blockdev-del` or `object-del` sent in between is refused with
 * "... is in use". Such a refusal is not a fault: the release is repeated
 * when the device's own DEVICE_DELETED arrives (or after a short wait),
 * until `timeoutMs`. Every release step is idempotent (already gone counts
 * as done), so repeating the whole release is safe.
 */
import { QmpCommandError } from './errors';
import { isDeletionOf } from './qdev';
import type { Monitor } from './qmp-client';

/** How long a backend may stay held by a device that already left the bus. */
export const RELEASE_IN_USE_TIMEOUT_MS = 5000;
const RETRY_WAIT_MS = 25;

/** QEMU refused to free a backend because a device (being finalized) still holds it. */
export function isInUse(err: unknown): boolean {
  return err instanceof QmpCommandError && /\bin use\b/i.test(err.message);
}

/** Runs `release`; while QEMU says a backend is in use, waits for the device's own DEVICE_DELETED (or a short time) and runs it again. */
export async function releaseWhenFree(mon: Monitor, id: string, release: () => Promise<void>, timeoutMs = RELEASE_IN_USE_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const finalized = mon.waitForEvent((e) => isDeletionOf(id, e), timeoutMs, `finalize of ${id}`);
  let seen = false;
  const early = finalized.promise.then(
    () => {
      seen = true;
    },
    () => undefined, // only a reason to try again early
  );
  try {
    for (;;) {
      try {
        await release();
        return;
      } catch (err) {
        if (!isInUse(err) || Date.now() >= deadline) throw err;
      }
      const pause = sleep(Math.min(RETRY_WAIT_MS, Math.max(0, deadline - Date.now())));
      await (seen ? pause : Promise.race([early, pause]));
    }
  } finally {
    finalized.cancel();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

