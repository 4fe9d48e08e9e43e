/**
 * A NIC's bandwidth limit on the host side of its tap, with tc: a tbf root
 * qdisc shapes what the tap sends, i.e. the traffic to the guest. `tc` runs
 * by absolute path with an argument array (no shell). The limit from the
 * guest (ingress qdisc + police filter) needs the kernel's act_police
 * module; the node kernel has none (CONFIG_NET_ACT_POLICE unset: "Failed to
 * load TC action module"), so that direction is not limited (see the notes).
 * Setting a limit (a hot-add, a modify, a repair) runs tc asynchronously, so
 * that the node's event loop serves other instances meanwhile; reading one
 * (verify's host inventory) stays synchronous.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { rateProblem } from '../common/nic-params';
import { InvalidArgumentError, errorMessage } from './errors';

export { MAX_RATE_MBIT } from '../common/nic-params';

const TC_CANDIDATES = ['/usr/sbin/tc', '/sbin/tc'];
const TC_TIMEOUT_MS = 10_000;
const execFileAsync = promisify(execFile);

function tcBinary(): string {
  const found = TC_CANDIDATES.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`tc (iproute2) is not installed on this node (looked at ${TC_CANDIDATES.join(', ')}); a NIC rate limit needs it`);
  return found;
}

function tcFailed(args: string[], err: unknown): Error {
  const stderr = String((err as { stderr?: string | Buffer }).stderr ?? '').trim();
  return new Error(`tc ${args.join(' ')} failed: ${stderr || errorMessage(err)}`, { cause: err });
}

function tcSync(args: string[]): string {
  try {
    return execFileSync(tcBinary(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: TC_TIMEOUT_MS });
  } catch (err) {
    throw tcFailed(args, err);
  }
}

async function tc(args: string[]): Promise<string> {
  const bin = tcBinary();
  try {
    return (await execFileAsync(bin, args, { encoding: 'utf8', timeout: TC_TIMEOUT_MS })).stdout;
  } catch (err) {
    throw tcFailed(args, err);
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

function rateOf(out: string): number {
  const list = JSON.parse(out.trim() || '[]') as QdiscJson[];
  const tbf = list.find((q) => q.kind === 'tbf' && q.root);
  return tbf?.options?.rate ? Math.round((tbf.options.rate * 8) / 1_000_000) : 0;
}

const showArgs = (tap: string): string[] => ['-j', 'qdisc', 'show', 'dev', tap];

/** The tbf limit on the tap in Mbit/s; 0 when it has none (synchronous: verify's inventory and tests). */
export function readTapRate(tap: string): number {
  return rateOf(tcSync(showArgs(tap)));
}

/** The same, without blocking the event loop. */
export async function queryTapRate(tap: string): Promise<number> {
  return rateOf(await tc(showArgs(tap)));
}

/** Sets the tap's limit (0: removes it). Idempotent. */
export async function setTapRate(tap: string, mbit: number): Promise<void> {
  checkRate(mbit);
  if (mbit === 0) {
    if ((await queryTapRate(tap)) !== 0) await tc(['qdisc', 'del', 'dev', tap, 'root']);
    return;
  }
  await tc(['qdisc', 'replace', 'dev', tap, 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', String(burstBytes(mbit)), 'latency', '50ms']);
}
