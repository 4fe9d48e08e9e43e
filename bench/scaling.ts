/**
 * Cost as work grows, part 1: one NIC add (timed; its remove untimed) on a
 * guest that already has 0, 8, 16 and 24 devices (NICs, each on its own tap),
 * as the raw QMP floor and through gnt-noded. Devices are added between the
 * levels and stay.
 */
import { randomUUID } from 'node:crypto';
import { BENCH } from './config';
import { NODED, type NodedBench, type NodedLayer } from './noded-layer';
import { RAW_SLOT, type RawLayer } from './raw-layer';
import { rawNicAdd } from './raw-qmp';
import { RAW, sleep, type Recorder } from './stats';

export const LEVELS = [0, 8, 16, 24];
export const scalingOp = (devices: number): string => `NIC add, ${devices} devices present`;

/** Slots for the raw floor's standing devices: every free slot but the one the samples use. */
const rawSlots = (): number[] => Array.from({ length: 28 }, (_, i) => i + 4).filter((s) => s !== RAW_SLOT);

async function sampleLevel(rec: Recorder, devices: number, raw: RawLayer, noded: NodedLayer): Promise<void> {
  for (let i = 0; i < BENCH.scalingIterations; i++) {
    await rec.time(RAW, scalingOp(devices), () => raw.nicAdd());
    await sleep(BENCH.settleMs);
    await raw.nicRemove();
    await rec.time(NODED, scalingOp(devices), () => noded.nicAdd());
    await sleep(BENCH.settleMs);
    await noded.nicRemove();
  }
}

async function grow(from: number, to: number, raw: RawLayer, nd: NodedBench, instance: string): Promise<void> {
  const q = await raw.qmp();
  const slots = rawSlots();
  for (let k = from; k < to; k++) {
    const mac = `52:54:00:ac:00:${k.toString(16).padStart(2, '0')}`;
    await rawNicAdd(q, `nic-acc${k}-pci-${slots[k]}`, slots[k], mac);
    await nd.hotplug({ instance, deviceType: 'NIC', action: 'ADD', nic: { uuid: randomUUID(), mac } });
  }
  await sleep(1000); // let both guests probe what was added
}

export async function benchScaling(rec: Recorder, raw: RawLayer, nd: NodedBench, noded: NodedLayer): Promise<void> {
  await raw.begin();
  try {
    let have = 0;
    for (const level of LEVELS) {
      await grow(have, level, raw, nd, noded.instance);
      have = level;
      await sampleLevel(rec, level, raw, noded);
    }
  } finally {
    await raw.end();
  }
}
