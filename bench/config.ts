/** Sample counts and other knobs, from the environment (GNT_BENCH_*). */
import * as path from 'node:path';

const num = (name: string, dflt: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, not "${v}"`);
  return n;
};

export const REPO = path.resolve(__dirname, '../..');
export const GUEST_DIR = path.join(REPO, '.cache/guest');

export const BENCH = {
  /** Samples per latency line, split over `rounds` interleaved rounds of all layers. */
  iterations: num('GNT_BENCH_ITERATIONS', 24),
  rounds: Math.max(1, num('GNT_BENCH_ROUNDS', 4)),
  /** Samples per DIMM add line (4 fit in one boot; then the guest is restarted). */
  dimmIterations: num('GNT_BENCH_DIMM_ITERATIONS', 12),
  /** Samples per "the guest reports it" line (its event line and its next state block, in the same sample). */
  guestIterations: num('GNT_BENCH_GUEST_ITERATIONS', 16),
  /** Seconds of concurrent hotplug per throughput step. */
  throughputSeconds: num('GNT_BENCH_THROUGHPUT_SECONDS', 8),
  /** Guests booted for the throughput steps (1, 2, 4, ... up to this). */
  throughputGuests: num('GNT_BENCH_THROUGHPUT_GUESTS', 16),
  /** Samples per line of the "cost as work grows" section. */
  scalingIterations: num('GNT_BENCH_SCALING_ITERATIONS', 10),
  /** Samples per gnt-instance list line. */
  listIterations: num('GNT_BENCH_LIST_ITERATIONS', 10),
  /** Untimed pause after an add before its remove, so that the guest has probed the device. */
  settleMs: num('GNT_BENCH_SETTLE_MS', 150),
};

/** GNT_BENCH_PROFILE_DIR=DIR: node flags that make the daemons write V8 CPU profiles there (see docs/performance.md). */
export function profileArgs(): string[] {
  const dir = process.env.GNT_BENCH_PROFILE_DIR;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

export const KERNEL_ARGS = 'console=ttyS0 quiet loglevel=1 panic=-1';
export const GUEST = { kernel: path.join(GUEST_DIR, 'vmlinuz'), initrd: path.join(GUEST_DIR, 'initrd.gz') };
/**
 * Every bench guest: 256 MiB and 1 vCPU, growing to 2 vCPUs (a 2-CPU node
 * allows no more) and by up to 4 DIMMs of 128 MiB (QEMU's default 4 memory
 * slots). maxvcpus is 16 because multi-threaded TCG gives each vCPU ever
 * plugged a translation context of its own and never frees it: a QEMU process
 * takes only maxvcpus - vcpus vCPU adds in its life (one more aborts it in
 * tcg_register_thread), so the guest is restarted after 15.
 */
export const SHAPE = { memoryMiB: 256, maxMemoryMiB: 768, vcpus: 1, maxVcpus: 16, dimmMiB: 128, dimmsPerBoot: 4, cpuAddsPerBoot: 15 };
