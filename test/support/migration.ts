/** Helpers for live-migration tests on the hypervisor layer. */
import type { KvmInstance } from '../../src/hypervisor/kvm-instance';

/** Polls the migration's state until it completed, failed or was cancelled; returns that state. */
export async function untilFinished(inst: KvmInstance, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = (await inst.migrationStatus()).progress?.state ?? 'none';
    if (['completed', 'failed', 'cancelled'].includes(state)) return state;
    if (Date.now() > deadline) throw new Error(`migration still ${state} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
