/**
 * The rules of a NIC's live parameters, shared by master and node: link
 * state, rate limit, queues and model. The node applies them (src/hypervisor
 * nic.ts, tap-rate.ts); the master parses and stores them.
 */

export const NIC_MODEL_NAMES = ['virtio', 'e1000', 'rtl8139'] as const;
export type NicModelName = (typeof NIC_MODEL_NAMES)[number];
export const LINK_STATES = ['up', 'down'] as const;
export type LinkStateName = (typeof LINK_STATES)[number];

/**
 * Queues of a multi-queue NIC: 1 to 8, never more than the instance's
 * maximum vCPUs (the guest uses at most one queue pair per online vCPU; more
 * would only cost tap fds and interrupt vectors). virtio only.
 */
export const MAX_NIC_QUEUES = 8;
/** Highest rate limit, Mbit/s (100 Gbit/s). */
export const MAX_RATE_MBIT = 100_000;

/** What is wrong with a rate in Mbit/s, or undefined. 0 means no limit. */
export function rateProblem(mbit: number): string | undefined {
  if (!Number.isInteger(mbit) || mbit < 0 || mbit > MAX_RATE_MBIT) return `rate must be a whole number of Mbit/s from 0 (no limit) to ${MAX_RATE_MBIT}`;
  return undefined;
}

/** What is wrong with a queue count for this model and instance, or undefined. */
export function queuesProblem(queues: number, model: string, maxVcpus: number | undefined): string | undefined {
  if (!Number.isInteger(queues) || queues < 1 || queues > MAX_NIC_QUEUES) return `queues must be a whole number from 1 to ${MAX_NIC_QUEUES}`;
  if (queues > 1 && model !== 'virtio') return `only virtio NICs have more than one queue (model is ${model})`;
  if (maxVcpus !== undefined && queues > maxVcpus) return `queues=${queues} is more than the instance's ${maxVcpus} maximum vCPUs (the guest uses one queue pair per vCPU at most)`;
  return undefined;
}
