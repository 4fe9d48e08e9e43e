/**
 * The operations every layer is measured on, and the one loop that times
 * them, so that each layer runs exactly the same sequence.
 */
import { BENCH } from './config';
import { sleep, type Recorder } from './stats';

export const OPS = ['NIC add', 'NIC remove', 'disk add', 'disk remove', 'CPU add', 'CPU remove', 'DIMM add'] as const;
/** The operations judged as removes (their floor ends when QEMU no longer has the device). */
export const REMOVES = ['NIC remove', 'disk remove', 'CPU remove'] as const;
export type Op = (typeof OPS)[number];

export interface LayerOps {
  readonly layer: string;
  /** Before a round of this layer (e.g. take the monitor). */
  begin?(): Promise<void>;
  /** After a round (e.g. give the monitor back). */
  end?(): Promise<void>;
  nicAdd(): Promise<void>;
  /** Removes the NIC the last nicAdd made, waiting until the guest has let go of it. */
  nicRemove(): Promise<void>;
  diskAdd(): Promise<void>;
  diskRemove(): Promise<void>;
  cpuAdd(): Promise<void>;
  /** Takes the vCPU away again (1 -> the boot count), until QEMU no longer lists it. */
  cpuRemove(): Promise<void>;
  /** Adds one 128 MiB DIMM. */
  dimmAdd(): Promise<void>;
  /** What this guest's QEMU can still take before it must be restarted (see SHAPE). */
  room(): { cpuAdds: number; dimms: number };
  /** Restarts the guest with its boot vCPUs and memory (ACPI memory cannot shrink live). */
  reset(): Promise<void>;
}

/** Restarts the guest (untimed) outside a round. */
async function resetBetween(ops: LayerOps): Promise<void> {
  await ops.end?.();
  await ops.reset();
  await ops.begin?.();
}

/** NIC, disk and vCPU: `n` add/remove pairs, each timed; removes follow a short untimed pause. */
export async function benchDevices(ops: LayerOps, n: number, rec: Recorder): Promise<void> {
  await ops.begin?.();
  try {
    for (let i = 0; i < n; i++) {
      await rec.time(ops.layer, 'NIC add', () => ops.nicAdd());
      await sleep(BENCH.settleMs);
      await rec.time(ops.layer, 'NIC remove', () => ops.nicRemove());
      await rec.time(ops.layer, 'disk add', () => ops.diskAdd());
      await sleep(BENCH.settleMs);
      await rec.time(ops.layer, 'disk remove', () => ops.diskRemove());
      if (ops.room().cpuAdds === 0) await resetBetween(ops);
      await rec.time(ops.layer, 'CPU add', () => ops.cpuAdd());
      await sleep(BENCH.settleMs);
      await rec.time(ops.layer, 'CPU remove', () => ops.cpuRemove());
    }
  } finally {
    await ops.end?.();
  }
}

/** `n` DIMM adds; the guest is restarted (untimed) whenever it is full, and before the first if it is not fresh. */
export async function benchDimms(ops: LayerOps, n: number, rec: Recorder, fresh: boolean): Promise<void> {
  if (!fresh) await ops.reset();
  await ops.begin?.();
  try {
    for (let i = 0; i < n; i++) {
      if (ops.room().dimms === 0) await resetBetween(ops);
      await rec.time(ops.layer, 'DIMM add', () => ops.dimmAdd());
      await sleep(BENCH.settleMs);
    }
  } finally {
    await ops.end?.();
  }
}
