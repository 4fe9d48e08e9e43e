/**
 * A NIC's live parameters as the master takes them from a request (NicSpec,
 * NicChange): checked by the shared rules (src/common/nic-params.ts) and
 * normalized to the configuration's form ('up', 0, 1, 'virtio' as defaults).
 */
import { excerpt } from '../common/excerpt';
import { LINK_STATES, NIC_MODEL_NAMES, queuesProblem, rateProblem } from '../common/nic-params';
import type { NicParams } from './config/config-store';
import { UsageError } from './validate';

export function checkLinkState(v: string | undefined, what: string): string {
  v = v ?? '';
  if (v && !(LINK_STATES as readonly string[]).includes(v)) throw new UsageError(`${what}: link_state must be up or down, not ${excerpt(v)}`);
  return v;
}

export function checkModel(v: string | undefined, what: string): string {
  v = v ?? '';
  if (v && !(NIC_MODEL_NAMES as readonly string[]).includes(v)) throw new UsageError(`${what}: model must be one of ${NIC_MODEL_NAMES.join(', ')}, not ${excerpt(v)}`);
  return v;
}

export function checkRateMbit(n: number | undefined, what: string): number {
  n = n ?? 0;
  const problem = rateProblem(n);
  if (problem) throw new UsageError(`${what}: ${problem}, not ${n}`);
  return n;
}

/** NicChange.rate: "" keeps, "0" removes, "N" sets; -1 for keep. */
export function rateChange(v: string | undefined, what: string): number {
  if (v === undefined || v === '') return -1;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${what}: rate must be a whole number of Mbit/s (0: no limit), not ${excerpt(v)}`);
  return checkRateMbit(Number(v), what);
}

export function checkQueues(n: number | undefined, model: string, maxVcpus: number | undefined, what: string): number {
  const q = n || 1;
  const problem = queuesProblem(q, model || 'virtio', maxVcpus);
  if (problem) throw new UsageError(`${what}: ${problem}`);
  return q;
}

/** The parameters of a new NIC (instance add, --net add:...). */
export function newNicParams(p: { linkState?: string; rateMbit?: number; queues?: number; model?: string }, maxVcpus: number | undefined, what: string): NicParams {
  const model = checkModel(p.model, what) || 'virtio';
  return {
    link_state: checkLinkState(p.linkState, what) || 'up',
    rate_mbit: checkRateMbit(p.rateMbit, what),
    queues: checkQueues(p.queues, model, maxVcpus, what),
    model,
  };
}

/** "link_state=down, rate=10 Mbit/s, 2 queues, e1000": what differs from the defaults, for logs and info. */
export function describeNicParams(p: NicParams): string {
  const parts: string[] = [];
  if (p.link_state === 'down') parts.push('link down');
  if (p.rate_mbit) parts.push(`rate ${p.rate_mbit} Mbit/s`);
  if (p.queues > 1) parts.push(`${p.queues} queues`);
  if (p.model !== 'virtio') parts.push(p.model);
  return parts.join(', ');
}
