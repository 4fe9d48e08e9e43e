/**
 * How long a guest has to release a device before its removal is reported
 * as pending, per device kind. Disks get longer than NICs: a guest flushes
 * and detaches a block device before it lets go. The node sets defaults
 * (gnt-noded --unplug-timeout nic=10,disk=60), an instance may override
 * them with its hvparams unplug_timeout_nic, unplug_timeout_disk,
 * unplug_timeout_cpu and unplug_timeout_memory; all in seconds.
 */
import { InvalidArgumentError } from './errors';

export type UnplugKind = 'nic' | 'disk' | 'cpu' | 'memory';
export type UnplugTimeouts = Partial<Record<UnplugKind, number>>;

export const UNPLUG_KINDS: readonly UnplugKind[] = ['nic', 'disk', 'cpu', 'memory'];

/** Milliseconds. */
export const DEFAULT_UNPLUG_TIMEOUTS: Readonly<Record<UnplugKind, number>> = {
  nic: 15_000,
  disk: 30_000,
  cpu: 15_000,
  memory: 30_000,
};

const MAX_SECONDS = 3600;

/** Parses "nic=10,disk=60" (seconds, decimals allowed) into milliseconds per kind. */
export function parseUnplugTimeouts(text: string, what: string): UnplugTimeouts {
  const out: UnplugTimeouts = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [kind, value, extra] = part.split('=');
    if (!UNPLUG_KINDS.includes(kind as UnplugKind) || value === undefined || extra !== undefined)
      throw new InvalidArgumentError(`${what}: "${part}" is not KIND=SECONDS with KIND one of ${UNPLUG_KINDS.join(', ')}`);
    out[kind as UnplugKind] = secondsToMs(value, `${what}: the ${kind} unplug timeout`);
  }
  return out;
}

function secondsToMs(value: string, what: string): number {
  const seconds = Number(value);
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_SECONDS)
    throw new InvalidArgumentError(`${what} must be a number of seconds above 0 and at most ${MAX_SECONDS}, not "${value}"`);
  return Math.round(seconds * 1000);
}

/** An instance's own timeouts, from hvparams unplug_timeout_KIND (seconds). */
export function unplugTimeoutsFromHvparams(hv: Record<string, string | number | boolean>, instance: string): UnplugTimeouts {
  const out: UnplugTimeouts = {};
  for (const kind of UNPLUG_KINDS) {
    const v = hv[`unplug_timeout_${kind}`];
    if (v !== undefined) out[kind] = secondsToMs(String(v), `hvparam unplug_timeout_${kind} of ${instance}`);
  }
  return out;
}

/**
 * The timeout for one kind: the instance's override, else the node's, else
 * a single legacy value for every kind, else the default.
 */
export function unplugTimeoutFor(kind: UnplugKind, instance: UnplugTimeouts, node: UnplugTimeouts, legacyMs?: number): number {
  return instance[kind] ?? node[kind] ?? legacyMs ?? DEFAULT_UNPLUG_TIMEOUTS[kind];
}
