/**
 * Throughput: with 1, 2, 4, ... guests on one gnt-noded, every guest runs NIC
 * add/remove pairs through HotplugDevice back to back, all guests at once,
 * for a fixed time. All guests are booted first (and stay up, idle, during
 * the smaller steps). The CPU use of the whole machine is sampled from
 * /proc/stat over each step.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { BENCH } from './config';
import { waitBooted } from './guest';
import type { NodedBench } from './noded-layer';
import { metText, textTable } from './stats';

export interface ThroughputRow {
  guests: number;
  ops: number;
  seconds: number;
  opsPerSec: number;
  /** Busy share of all CPUs during the step, 0..1. */
  cpuBusy: number;
  /** CPU time of the gnt-noded process during the step, in cores (1 = one core all the time). */
  nodedCores: number;
  target: string;
  met: boolean | null;
}

/** Machine-wide busy and total jiffies. */
function cpuTimes(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** utime + stime of one process, in seconds. */
function processCpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, in clock ticks (USER_HZ = 100)
}

function processMeter(pid: number): () => number {
  const a = processCpuSeconds(pid);
  const t = process.hrtime.bigint();
  return () => (processCpuSeconds(pid) - a) / (Number(process.hrtime.bigint() - t) / 1e9);
}

export function cpuMeter(): () => number {
  const a = cpuTimes();
  return () => {
    const b = cpuTimes();
    return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
  };
}

export function steps(max: number): number[] {
  const out: number[] = [];
  for (let n = 1; n <= max; n *= 2) out.push(n);
  return out;
}

export const tpName = (i: number): string => `tp${i + 1}`;

/** Boots all throughput guests at once and waits until every one has booted. */
export async function bootThroughputGuests(nd: NodedBench, count: number): Promise<string[]> {
  const names = Array.from({ length: count }, (_, i) => tpName(i));
  await Promise.all(names.map((n) => nd.startInstance(n)));
  await Promise.all(names.map((n) => waitBooted(nd.consoleLog(n), `${n} under gnt-noded`, 300_000)));
  return names;
}

/** One guest's loop: NIC add, NIC remove, until `until`; returns the operations done. */
async function hotplugLoop(nd: NodedBench, instance: string, until: number): Promise<number> {
  let ops = 0;
  while (Date.now() < until) {
    const uuid = randomUUID();
    await nd.hotplug({ instance, deviceType: 'NIC', action: 'ADD', nic: { uuid, mac: '52:54:00:be:10:01' } });
    await nd.hotplug({ instance, deviceType: 'NIC', action: 'REMOVE', nic: { uuid } });
    ops += 2;
  }
  return ops;
}

async function step(nd: NodedBench, guests: string[]): Promise<Omit<ThroughputRow, 'target' | 'met'>> {
  const cpu = cpuMeter();
  const noded = processMeter(nd.pid);
  const t0 = process.hrtime.bigint();
  const until = Date.now() + BENCH.throughputSeconds * 1000;
  const counts = await Promise.all(guests.map((g) => hotplugLoop(nd, g, until)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const ops = counts.reduce((a, b) => a + b, 0);
  return { guests: guests.length, ops, seconds, opsPerSec: ops / seconds, cpuBusy: cpu(), nodedCores: noded() };
}

export const SCALE_TARGET = 'x2 guests: >= 1.6x ops/s, or CPU >= 85% busy before';

/**
 * Scales until the CPU is full: from one step to the next (twice the guests)
 * ops/s must grow at least 1.6x, unless the CPU was already >= 85% busy in the
 * step before, in which case ops/s must not fall by more than 10%.
 */
export function judge(rows: Array<Omit<ThroughputRow, 'target' | 'met'>>): ThroughputRow[] {
  return rows.map((r, i) => {
    if (i === 0) return { ...r, target: '-', met: null };
    const prev = rows[i - 1];
    const full = prev.cpuBusy >= 0.85;
    const met = full ? r.opsPerSec >= 0.9 * prev.opsPerSec : r.opsPerSec >= 1.6 * prev.opsPerSec;
    return { ...r, target: SCALE_TARGET, met };
  });
}

export async function benchThroughput(nd: NodedBench, names: string[]): Promise<ThroughputRow[]> {
  const rows: Array<Omit<ThroughputRow, 'target' | 'met'>> = [];
  const idle = cpuMeter();
  const nodedIdle = processMeter(nd.pid);
  await new Promise((r) => setTimeout(r, 2000));
  rows.push({ guests: 0, ops: 0, seconds: 2, opsPerSec: 0, cpuBusy: idle(), nodedCores: nodedIdle() });
  for (const n of steps(names.length)) rows.push(await step(nd, names.slice(0, n)));
  const [baseline, ...measured] = rows;
  return [{ ...baseline, target: '(all guests idle)', met: null }, ...judge(measured)];
}

export function throughputTable(rows: readonly ThroughputRow[]): string {
  const head = ['guests', 'ops', 'seconds', 'ops/s', 'CPU busy', 'gnt-noded CPU', 'target', 'met'];
  const body = rows.map((r) => [
    r.guests === 0 ? 'idle' : String(r.guests), String(r.ops), r.seconds.toFixed(1), r.opsPerSec.toFixed(1),
    `${(r.cpuBusy * 100).toFixed(0)}%`, `${(r.nodedCores * 100).toFixed(0)}% of a core`, r.target, metText(r.met),
  ]);
  return textTable(head, body, 0);
}
