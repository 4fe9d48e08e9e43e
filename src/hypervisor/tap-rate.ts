/**
 * A NIC's bandwidth limit on the host side of its tap, with tc: a tbf root
 * qdisc shapes what the tap sends, i.e. the traffic to the guest. `tc` runs
 * by absolute path with an argument array (no shell). The limit from the
 * guest (ingress qdisc + police filter) needs the kernel's act_police
 * module; the node kernel has none (CONFIG_NET_ACT_POLICE unset: "Failed to
 * load TC action module"), so that direction is not limited (see the notes).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { rateProblem } from '../common/nic-params';
import { InvalidArgumentError, errorMessage } from './errors';

export { MAX_RATE_MBIT } from '../common/nic-params';

const TC_CANDIDATES = ['/usr/sbin/tc', '/sbin/tc'];

function tcBinary(): string {
  const found = TC_CANDIDATES.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`tc (iproute2) is not installed on this node (looked at ${TC_CANDIDATES.join(', ')}); a NIC rate limit needs it`);
  return found;
}

function tc(args: string[]): string {
  try {
    return execFileSync(tcBinary(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`tc ${args.join(' ')} failed: ${stderr || errorMessage(err)}`, { cause: err });
  }
}

export function checkRate(mbit: number): void {
  const problem = rateProblem(mbit);
  if (problem) throw new InvalidArgumentError(`${problem}, not ${mbit}`);
}

/** Burst: 10 ms of traffic at the rate, at least 32 KiB (tbf needs one MTU-sized packet and more at high rates). */
const burstBytes = (mbit: number): number => Math.max(32 * 1024, Math.ceil((mbit * 1_000_000) / 8 / 100));

interface QdiscJson {
  kind?: string;
  root?: boolean;
  options?: { rate?: number };
}

/** The tbf limit on the tap in Mbit/s; 0 when it has none. */
export function readTapRate(tap: string): number {
  const out = tc(['-j', 'qdisc', 'show', 'dev', tap]);
  const list = JSON.parse(out.trim() || '[]') as QdiscJson[];
  const tbf = list.find((q) => q.kind === 'tbf' && q.root);
  return tbf?.options?.rate ? Math.round((tbf.options.rate * 8) / 1_000_000) : 0;
}

/** Sets the tap's limit (0: removes it). Idempotent. */
export function setTapRate(tap: string, mbit: number): void {
  checkRate(mbit);
  if (mbit === 0) {
    if (readTapRate(tap) !== 0) tc(['qdisc', 'del', 'dev', tap, 'root']);
    return;
  }
  tc(['qdisc', 'replace', 'dev', tap, 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', String(burstBytes(mbit)), 'latency', '50ms']);
}
