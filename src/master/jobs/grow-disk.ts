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

/** The op's disk; refuses an index out of range. */
function diskOf(config: ConfigStore, op: GrowDiskOp): { uuid: string; size: number } {
  const inst = config.getInstance(op.name);
  const d = inst.disks[op.index];
  if (!d) throw new ConfigError(`disk index ${op.index} is out of range: instance ${inst.name} has ${inst.disks.length} disk${inst.disks.length === 1 ? '' : 's'}${inst.disks.length ? ` (0 to ${inst.disks.length - 1})` : ''}`, 'INVALID_ARGUMENT');
  return { uuid: d.uuid, size: d.size_bytes };
}

/**
 * The new total size: AMOUNT, or AMOUNT more than the configuration's size
 * (an adopted disk whose size the configuration does not know yet takes
 * --absolute: its device may have grown already).
 */
export function growTarget(op: GrowDiskOp, disk: { uuid: string; size: number }, nodeSize: number): { uuid: string; from: number; to: number } {
  if (!disk.size && !op.absolute)
    throw new ConfigError(
      `disk ${op.index} of ${op.name} was adopted as it was and the configuration does not know its size${nodeSize ? ` (the device has ${formatSize(nodeSize)} now)` : ''}; give the new total size with --absolute`,
      'INVALID_ARGUMENT',
    );
  const d = { uuid: disk.uuid, size_bytes: disk.size };
  const to = op.absolute ? op.amountBytes : d.size_bytes + op.amountBytes;
  if (!Number.isSafeInteger(to)) throw new ConfigError(`disk ${op.index} of ${op.name}: the new size is too large`, 'INVALID_ARGUMENT');
  return { uuid: d.uuid, from: d.size_bytes, to };
}

/** The disk's size on the node when its runtime file has it (then the node makes the grow, running or not); undefined: it does not. */
async function nodeDiskSize(rpc: NodeRpc, config: ConfigStore, name: string, uuid: string): Promise<number | undefined> {
  const inst = config.getInstance(name);
  try {
    const rt = await rpc.instanceInfo(nodeTarget(inst), name);
    const d = rt.disks.find((x) => x.uuid === uuid);
    return d ? Number(d.sizeBytes) || 0 : undefined;
  } catch (err) {
    if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

export async function runGrowDisk(deps: ModifyDeps, op: GrowDiskOp, ctx: JobContext): Promise<void> {
  const disk = diskOf(deps.config, op);
  const nodeSize = await nodeDiskSize(deps.rpc, deps.config, op.name, disk.uuid);
  const onNode = nodeSize !== undefined;
  const t = growTarget(op, disk, nodeSize ?? 0);
  ctx.log(`disk ${op.index} (${t.uuid}) of ${op.name}: ${formatSize(t.from)} -> ${formatSize(t.to)}`);
  if (!onNode) ctx.log(`node does not have disk ${t.uuid} yet: the configuration's size is what it creates at the next start`);
  const modify: ModifyOp = {
    type: 'instance-modify', name: op.name, nics: [], vcpus: 0, memoryMib: 0,
    disks: [{ action: 'MODIFY', index: op.index, sizeBytes: 0, growToBytes: t.to }],
    hotplug: onNode ? 'HOTPLUG' : 'NONE',
  };
  await runModify(deps, modify, ctx);
}
