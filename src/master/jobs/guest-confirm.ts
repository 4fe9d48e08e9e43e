/**
 * Hotplug confirmed by the guest (gnt-instance modify --wait-guest): after
 * a live change succeeded, the job asks the node to wait until the guest
 * agent reports the device (GuestWait), and logs how long the guest took.
 * Without an agent it says so and does not wait. A guest that does not
 * report the device in time fails the job, but the change stays applied
 * (it is in QEMU, the node's record and the configuration): nothing is
 * undone, and the message says so.
 */
import type { NodeRpc, NodeTarget } from '../node-rpc';
import type { GuestWaitTarget } from './device-changes/change-kind';
import type { ModifyOp } from './device-changes/change-kind';
import { JobError } from './queue';
import type { GuestWaitReply__Output } from '../../generated/gnt/node/v1/GuestWaitReply';

const DEFAULT_TIMEOUT_MS = 60_000;
/** What one GuestWait call may wait (the node's cap). */
const CALL_MS = 10_000;

export interface GuestConfirmDeps {
  rpc: NodeRpc;
  node: NodeTarget;
  instance: string;
  log(line: string): void;
}

/** Whether this modify waits for the guest: its flag, else the node's default (asked once). */
export async function shouldWaitGuest(op: ModifyOp, rpc: NodeRpc, node: NodeTarget): Promise<boolean> {
  if (op.waitGuest) return op.waitGuest === 'yes';
  try {
    return (await rpc.nodeInfo(node)).waitGuestDefault;
  } catch {
    return false; // the node did not answer: its hotplug calls fail on their own
  }
}

const what = (t: GuestWaitTarget): string =>
  t.kind === 'nic' ? `NIC ${t.mac}` : t.kind === 'disk' ? (t.scsi ? `SCSI disk ${t.scsi}` : `disk at ${t.pci}`) : t.kind === 'vcpus' ? `${t.vcpus} vCPUs online` : 'memory online';

/** One GuestWait call waits at most 10 s on the node: repeated until seen, no agent, or `timeoutMs` in all. */
async function waitRepeated(deps: GuestConfirmDeps, t: GuestWaitTarget, timeoutMs: number): Promise<GuestWaitReply__Output> {
  const started = Date.now();
  let onlinedVcpus = 0;
  let onlinedMemoryBlocks = 0;
  for (;;) {
    const left = timeoutMs - (Date.now() - started);
    const r = await deps.rpc.guestWait(deps.node, { instance: deps.instance, timeoutMs: Math.max(1, Math.min(CALL_MS, left)), ...t });
    onlinedVcpus += r.onlinedVcpus;
    onlinedMemoryBlocks += r.onlinedMemoryBlocks;
    const waitedMs = String(Date.now() - started);
    if (r.seen || r.noAgent || Date.now() - started >= timeoutMs)
      return { ...r, onlinedVcpus, onlinedMemoryBlocks, waitedMs: r.seen ? waitedMs : r.waitedMs, message: r.seen || r.noAgent ? r.message : r.message.replace(/within \d+ ms/, `within ${timeoutMs} ms`) };
  }
}

/** Waits for each target; returns false when no agent answers (the caller stops asking for the rest of the job). */
export async function confirmInGuest(deps: GuestConfirmDeps, targets: GuestWaitTarget[] | string, change: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<boolean> {
  if (typeof targets === 'string') {
    deps.log(`not waiting for the guest to report ${change}: ${targets}`);
    return true;
  }
  for (const t of targets) {
    const r = await waitRepeated(deps, t, timeoutMs);
    const onlined = [r.onlinedVcpus ? `onlined ${r.onlinedVcpus} vCPU(s) through the agent` : '', r.onlinedMemoryBlocks ? `onlined ${r.onlinedMemoryBlocks} memory block(s) through the agent` : '']
      .filter(Boolean)
      .join(', ');
    if (r.noAgent) {
      deps.log(`${r.message}`);
      return false;
    }
    if (!r.seen)
      throw new JobError(`${change} is applied (in QEMU, on the node and in the configuration), but the guest did not confirm it: ${r.message}`, 'DEADLINE_EXCEEDED');
    deps.log(`guest confirmed ${what(t)} after ${r.waitedMs} ms${onlined ? ` (${onlined})` : ''}`);
  }
  return true;
}
