/**
 * The vCPU/memory resize of a modify job (`-B vcpus=N,memory=SIZE`): one
 * change for both, checked against the instance's limits; live it is one
 * InstanceResize call (the node checks the ACPI step and what it can hold),
 * with --hotplug-if-possible only when the instance runs.
 */
import { ConfigError, type ConfigStore, type InstanceConfig } from '../../config/config-store';
import { NodeRpcError } from '../../node-rpc';
import type { InstanceResizeReply__Output } from '../../../generated/gnt/node/v1/InstanceResizeReply';
import type { InstanceResizeRequest } from '../../../generated/gnt/node/v1/InstanceResizeRequest';
import type { Resources } from '../operations';
import type { ChangeKind, PlanContext, PlannedChange } from './change-kind';

export interface ResourcesChange {
  kind: 'resources';
  action: 'resize';
  vcpus: number;
  memoryMib: number;
  oldVcpus: number;
  oldMemoryMib: number;
}

/** The planned resize; `asked` is what -B gave (0 = unchanged), as the node request carries it. */
export interface ResourcesStep extends PlannedChange<ResourcesChange> {
  asked: Resources;
}

export interface ResourcesTypes {
  change: ResourcesChange;
  step: ResourcesStep;
  request: InstanceResizeRequest;
  reply: InstanceResizeReply__Output;
}

/**
 * Checks -B vcpus/memory against the instance's limits in the configuration
 * (0 = unchanged). The node checks the rest (ACPI step, what it can hold).
 */
export function checkResizeLimits(inst: InstanceConfig, vcpus: number, memoryMib: number): void {
  if (vcpus && (vcpus < 1 || vcpus > inst.maxvcpus))
    throw new ConfigError(
      `instance ${inst.name} can have 1 to ${inst.maxvcpus} vCPUs (maxvcpus ${inst.maxvcpus}); ${vcpus} asked`,
      'INVALID_ARGUMENT',
    );
  if (memoryMib && memoryMib > inst.maxmem_mib)
    throw new ConfigError(
      `instance ${inst.name} can have at most ${inst.maxmem_mib} MiB of memory (maxmem); ${memoryMib} MiB asked`,
      'INVALID_ARGUMENT',
    );
}

function plan({ inst, op }: PlanContext): ResourcesStep[] {
  if (!(op.vcpus > 0 || op.memoryMib > 0)) return [];
  checkResizeLimits(inst, op.vcpus, op.memoryMib);
  const vcpus = op.vcpus || inst.vcpus;
  const memoryMib = op.memoryMib || inst.memory_mib;
  const what = [op.vcpus ? `vCPUs ${inst.vcpus} -> ${vcpus}` : '', op.memoryMib ? `memory ${inst.memory_mib} MiB -> ${memoryMib} MiB` : '']
    .filter(Boolean)
    .join(', ');
  const change: ResourcesChange = { kind: 'resources', action: 'resize', vcpus, memoryMib, oldVcpus: inst.vcpus, oldMemoryMib: inst.memory_mib };
  return [{ kind: 'resources', what, change, asked: { vcpus: op.vcpus, memoryMib: op.memoryMib } }];
}

/** The node's vCPUs and memory after a failed resize, clamped to the limits the schema enforces. */
function commitFailedResize(config: ConfigStore, inst: InstanceConfig, r: Resources): boolean {
  const vcpus = Math.min(Math.max(1, r.vcpus || inst.vcpus), inst.maxvcpus);
  const memoryMib = Math.min(Math.max(1, r.memoryMib || inst.memory_mib), inst.maxmem_mib);
  if (vcpus === inst.vcpus && memoryMib === inst.memory_mib) return false;
  config.setResources(inst.name, vcpus, memoryMib);
  return true;
}

function failedMessage(s: ResourcesStep, error: string, config: ConfigStore, name: string): string {
  const now = config.getInstance(name);
  const unchanged = now.vcpus === s.change.oldVcpus && now.memory_mib === s.change.oldMemoryMib;
  return (
    `live resize (${s.what}) failed: ${error}; ` +
    (unchanged ? 'the configuration is unchanged' : `the node changed part of it: the configuration now has ${now.vcpus} vCPUs and ${now.memory_mib} MiB, as the node`)
  );
}

function liveLine(s: ResourcesStep, r: InstanceResizeReply__Output | undefined, confirmed: boolean): string {
  const plugged = r && Number(r.pluggedMib) >= 0 ? `, virtio-mem plugged ${r.pluggedMib} MiB` : '';
  return `${s.what}: done live${r ? ` (now ${r.vcpus} vCPUs, ${r.memoryMib} MiB${plugged})` : ''}${confirmed ? ' (outcome confirmed by the node)' : ''}`;
}

export const resourcesChanges: ChangeKind<ResourcesTypes> = {
  plan,
  async liveSupported({ rpc, node, inst, log }) {
    const rt = await rpc.instanceInfo(node, inst.name).catch((err: Error) => {
      if (err instanceof NodeRpcError && err.code === 'NOT_FOUND') return undefined;
      throw err;
    });
    const live = rt?.running === true;
    if (!live) log(`live resize not possible: instance ${inst.name} is not running; the change is made in the configuration only`);
    return live;
  },
  commit: (config, inst, s) => config.setResources(inst.name, s.change.vcpus, s.change.memoryMib),
  configOnlyText: (s) => ({ log: `${s.what}: changed in the configuration`, done: `${s.what} in the configuration` }),
  liveStart: (s, inst, node) => `live resize of instance ${inst.name} on node ${node.name}: ${s.what}`,
  request: (s, inst, operationId) => ({ instance: inst.name, vcpus: s.asked.vcpus, memoryMib: s.asked.memoryMib, operationId }),
  send: ({ rpc, node, request }) => rpc.instanceResize(node, request),
  fromReply: () => ({ state: 'succeeded', settledBy: 'request' }),
  replyOfRecord: (rec) => rec?.resize ?? undefined,
  failedMessage: (s, final, { config, inst }) => failedMessage(s, final.error, config, inst.name),
  succeeded: (s, _final, reply, confirmed) => ({ line: liveLine(s, reply, confirmed), notes: reply?.notes ?? [] }),
  guestWait: (s) => [
    ...(s.change.vcpus > s.change.oldVcpus ? [{ kind: 'vcpus' as const, vcpus: s.change.vcpus }] : []),
    ...(s.change.memoryMib > s.change.oldMemoryMib ? [{ kind: 'memory' as const }] : []),
  ],
  describe: (c) => `live resize to ${c.vcpus} vCPUs, ${c.memoryMib} MiB (from ${c.oldVcpus} vCPUs, ${c.oldMemoryMib} MiB)`,
  commitSettled: (config, inst, c) => config.setResources(inst.name, c.vcpus, c.memoryMib),
  markRemovalPending: () => undefined,
  settleFailed(config, inst, _c, _opId, o) {
    if (!o.resources || !commitFailedResize(config, inst, o.resources)) return undefined;
    const now = config.findInstance(inst.name)!;
    return `failed part-way (${o.error}); the configuration takes the node's values: ${now.vcpus} vCPUs, ${now.memory_mib} MiB`;
  },
};
