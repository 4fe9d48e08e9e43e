/**
 * The `gnt-instance grow-disk [--absolute] INSTANCE N AMOUNT` job: the new
 * total size (the configuration's size plus AMOUNT, or AMOUNT itself) is
 * one disk MODIFY of a modify job (device-changes/disk.ts), so it has an
 * operation id, is settled exactly once and converges after a kill as every
 * other change. The node grows the backing store and, when QEMU runs,
 * resizes the block node live; a stopped instance's node grows the store
 * and its record only. A node that does not have the disk yet (never
 * started, or the disk was added in the configuration only) gets nothing:
 * the configuration's size is what the node creates at the next start.
 */
import type { ConfigStore } from '../config/config-store';
import { ConfigError } from '../config/config-store';
import type { NodeRpc } from '../node-rpc';
import { NodeRpcError } from '../node-rpc';
import { formatSize } from '../validate';
import type { ModifyOp } from './device-changes/change-kind';
import { runModify, type ModifyDeps } from './modify';
import type { GrowDiskOp } from './ops';
import type { JobContext } from './queue';
import { nodeTarget } from './spec';

/** The new total size of the op's disk; refuses an index out of range. */
export function growTarget(config: ConfigStore, op: GrowDiskOp): { uuid: string; from: number; to: number } {
  const inst = config.getInstance(op.name);
  const d = inst.disks[op.index];
  if (!d) throw new ConfigError(`disk index ${op.index} is out of range: instance ${inst.name} has ${inst.disks.length} disk${inst.disks.length === 1 ? '' : 's'}${inst.disks.length ? ` (0 to ${inst.disks.length - 1})` : ''}`, 'INVALID_ARGUMENT');
  const to = op.absolute ? op.amountBytes : d.size_bytes + op.amountBytes;
  if (!Number.isSafeInteger(to)) throw new ConfigError(`disk ${op.index} of ${inst.name}: the new size is too large`, 'INVALID_ARGUMENT');
  return { uuid: d.uuid, from: d.size_bytes, to };
}

/** Whether the node has the disk in its runtime file (then it makes the grow, running or not). */
async function nodeHasDisk(rpc: NodeRpc, config: ConfigStore, name: string, uuid: string): Promise<boolean> {
  const inst = config.getInstance(name);
  try {
    const rt = await rpc.instanceInfo(nodeTarget(inst), name);
    return rt.disks.some((d) => d.uuid === uuid);
  } catch (err) {
    if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return false;
    throw err;
  }
}

export async function runGrowDisk(deps: ModifyDeps, op: GrowDiskOp, ctx: JobContext): Promise<void> {
  const t = growTarget(deps.config, op);
  ctx.log(`disk ${op.index} (${t.uuid}) of ${op.name}: ${formatSize(t.from)} -> ${formatSize(t.to)}`);
  const onNode = await nodeHasDisk(deps.rpc, deps.config, op.name, t.uuid);
  if (!onNode) ctx.log(`node does not have disk ${t.uuid} yet: the configuration's size is what it creates at the next start`);
  const modify: ModifyOp = {
    type: 'instance-modify', name: op.name, nics: [], vcpus: 0, memoryMib: 0,
    disks: [{ action: 'MODIFY', index: op.index, sizeBytes: 0, growToBytes: t.to }],
    hotplug: onNode ? 'HOTPLUG' : 'NONE',
  };
  await runModify(deps, modify, ctx);
}
