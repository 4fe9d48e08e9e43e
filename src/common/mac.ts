/**
 * The one MAC address rule of master and node: six hex pairs separated by
 * ":", a unicast address (the low bit of the first octet clear), not all
 * zeros. Valid addresses come back in lower case. Pure: the caller wraps a
 * failure in its own error type (UsageError on the master, INVALID_ARGUMENT
 * on the node), so both sides answer with the same words.
 */
import { excerpt } from './excerpt';

const MAC_RULE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Why `mac` is not a valid NIC address, or undefined when it is. */
export function macProblem(mac: string): string | undefined {
  const m = mac.trim().toLowerCase();
  if (!MAC_RULE.test(m)) return `MAC address ${excerpt(mac)} is malformed: write six hex pairs separated by ":", e.g. 52:54:00:12:34:56`;
  if (parseInt(m.slice(0, 2), 16) & 1) return `MAC address ${excerpt(mac)} is a multicast address: a NIC needs a unicast one (first octet even)`;
  if (m === '00:00:00:00:00:00') return `MAC address ${excerpt(mac)} is all zeros`;
  return undefined;
}

/** `mac` in lower case; throws `fail(message)` when it breaks the rule. */
export function normalizeMacWith(mac: string, fail: (message: string) => Error): string {
  const problem = macProblem(mac);
  if (problem) throw fail(problem);
  return mac.trim().toLowerCase();
}
