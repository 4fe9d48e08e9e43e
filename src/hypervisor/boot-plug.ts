/**
 * What a QEMU started paused (-S) gets over QMP before its guest runs: the
 * recorded DIMMs, the link-down state of NICs and the disks' I/O limits; then
 * it runs, unless it waits for an incoming migration.
 */
import { attachDimm } from './memory';
import { applyRecordedLinks } from './nic';
import type { Monitor } from './qmp-client';
import { applyRecordedIoLimits } from './recorded-io-limits';
import type { RuntimeData } from './runtime-file';

export async function plugBootState(mon: Monitor, data: RuntimeData, run: boolean): Promise<void> {
  for (const dimm of data.resources?.dimms ?? []) await attachDimm(mon, dimm);
  await applyRecordedLinks(mon, data.nics);
  await applyRecordedIoLimits(mon, data);
  if (run) await mon.execute('cont');
}
