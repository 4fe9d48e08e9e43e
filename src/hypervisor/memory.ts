/**
 * Memory hotplug, two ways:
 *  - ACPI DIMMs: `object-add memory-backend-ram` + `device_add pc-dimm` (sent together), in
 *    128 MiB multiples; removal needs the guest to give the memory back
 *    (only possible for memory it onlined as movable).
 *  - virtio-mem: one virtio-mem-pci device created at boot with a backend of
 *    `maxmem - memory`; growing and shrinking change its `requested-size` and
 *    the guest plugs or unplugs blocks; `size` says what it really plugged.
 */
import { InvalidArgumentError } from './errors';
import { inTransaction } from './hotplug-transaction';
import { deleteDevice, deviceAddStep, ignoreNotFound, pciPlacementArg } from './qdev';
import type { Monitor, QmpEvent } from './qmp-client';
import { DEFAULT_UNPLUG_TIMEOUTS } from './unplug-timeouts';

export const ACPI_STEP_MIB = 128;
export const VIRTIO_MEM_BLOCK_MIB = 2;
const MiB = 1024 * 1024;

/** A hot-added DIMM as the runtime file records it. */
export interface DimmRecord {
  id: string;
  sizeMiB: number;
  /** An intent not yet settled (resource-intents.ts). */
  state?: 'attaching' | 'detaching';
}

export interface VirtioMemRecord {
  id: string;
  /** Backend size: the most the device can ever plug. */
  maxMiB: number;
  /** What was asked for last; the guest may have plugged less. */
  requestedMiB: number;
  pci: number;
}

export const backendId = (deviceId: string): string => `mem-${deviceId}`;

export function assertAcpiStep(sizeMiB: number): void {
  if (!Number.isInteger(sizeMiB) || sizeMiB <= 0 || sizeMiB % ACPI_STEP_MIB !== 0)
    throw new InvalidArgumentError(
      `ACPI memory hotplug works in multiples of ${ACPI_STEP_MIB} MiB; ${sizeMiB} MiB is not one (use virtio-mem for finer steps)`,
    );
}

/** The lowest `dimmN` id not in use. */
export function nextDimmId(present: Iterable<string>): string {
  const used = new Set(present);
  for (let n = 0; ; n++) if (!used.has(`dimm${n}`)) return `dimm${n}`;
}

export async function attachDimm(mon: Monitor, dimm: DimmRecord): Promise<void> {
  const backend = backendId(dimm.id);
  // Both go out at once (hotplug-transaction.ts): QEMU runs them in order.
  await inTransaction(`hot-add of ${dimm.sizeMiB} MiB DIMM ${dimm.id}`, (tx) =>
    tx.pipeline([
      {
        name: 'object-add',
        send: () => mon.execute('object-add', { 'qom-type': 'memory-backend-ram', id: backend, size: dimm.sizeMiB * MiB }),
        undo: () => mon.execute('object-del', { id: backend }),
      },
      deviceAddStep(mon, dimm.id, { driver: 'pc-dimm', id: dimm.id, memdev: backend }, DEFAULT_UNPLUG_TIMEOUTS.memory),
    ]),
  );
}

export async function detachDimm(mon: Monitor, dimm: DimmRecord, timeoutMs: number): Promise<void> {
  await deleteDevice(mon, dimm.id, timeoutMs);
  await ignoreNotFound(mon.execute('object-del', { id: backendId(dimm.id) }));
}

export function virtioMemBootArgs(vm: VirtioMemRecord): string[] {
  const backend = backendId(vm.id);
  return [
    '-object', `memory-backend-ram,id=${backend},size=${vm.maxMiB}M`,
    '-device',
    `virtio-mem-pci,id=${vm.id},memdev=${backend},requested-size=${vm.requestedMiB}M,block-size=${VIRTIO_MEM_BLOCK_MIB}M,${pciPlacementArg({ pci: vm.pci })}`, // on the root bus: fixed, never ejected (an integrated endpoint of pcie.0 on q35)
  ];
}

export function assertVirtioMemSize(vm: VirtioMemRecord, requestedMiB: number): void {
  if (!Number.isInteger(requestedMiB) || requestedMiB < 0 || requestedMiB > vm.maxMiB)
    throw new InvalidArgumentError(`virtio-mem of this instance can plug 0 to ${vm.maxMiB} MiB, not ${requestedMiB} MiB`);
  if (requestedMiB % VIRTIO_MEM_BLOCK_MIB !== 0)
    throw new InvalidArgumentError(`virtio-mem plugs memory in ${VIRTIO_MEM_BLOCK_MIB} MiB blocks; ${requestedMiB} MiB is not a multiple`);
}

export async function virtioMemPluggedMiB(mon: Monitor, vm: VirtioMemRecord): Promise<number> {
  const bytes = await mon.execute<number>('qom-get', { path: `/machine/peripheral/${vm.id}`, property: 'size' });
  return bytes / MiB;
}

/**
 * Asks for `requestedMiB` and waits until the guest has plugged exactly that,
 * or its plugged size has stopped moving for `settleMs` (a guest that cannot
 * give memory back stops short). Returns what is plugged.
 */
export async function resizeVirtioMem(
  mon: Monitor,
  vm: VirtioMemRecord,
  requestedMiB: number,
  timeoutMs: number,
  settleMs = 1500,
): Promise<number> {
  assertVirtioMemSize(vm, requestedMiB);
  await mon.execute('qom-set', { path: `/machine/peripheral/${vm.id}`, property: 'requested-size', value: requestedMiB * MiB });
  const deadline = Date.now() + timeoutMs;
  let last = await virtioMemPluggedMiB(mon, vm);
  let lastChange = Date.now();
  while (last !== requestedMiB && Date.now() < deadline && Date.now() - lastChange < settleMs) {
    const wait = mon.waitForEvent((e: QmpEvent) => e.event === 'MEMORY_DEVICE_SIZE_CHANGE' && e.data.id === vm.id, 250, 'virtio-mem size change');
    await wait.promise.catch(() => undefined);
    const now = await virtioMemPluggedMiB(mon, vm);
    if (now !== last) lastChange = Date.now();
    last = now;
  }
  return last;
}
