/**
 * Time until the guest itself shows a hot-added device: from the first QMP
 * command of the raw sequence until the test guest's serial console prints a
 * state block (see docs/testing.md) that has it. The guest reports once a
 * second, so these times include up to a second of waiting for its next report.
 */
import { countCpuList, GuestConsole, type GuestState } from '../src/hypervisor/guest-console';
import { BENCH } from './config';
import type { BenchGuest } from './guest';
import type { RawLayer } from './raw-layer';
import { sleep, time, type Recorder } from './stats';

export const GUEST_SEES = 'guest sees it (raw QMP + guest)';
const TIMEOUT_MS = 30_000;

const slotAddr = (slot: number): string => `0000:00:${slot.toString(16).padStart(2, '0')}.0`;

class ConsoleWatch {
  private con: GuestConsole;

  constructor(private readonly guest: BenchGuest) {
    this.con = new GuestConsole(guest.inst.paths.consoleLog);
  }

  /** After a restart the log starts over. */
  reopen(): void {
    this.con = new GuestConsole(this.guest.inst.paths.consoleLog);
  }

  now(): GuestState | undefined {
    return this.con.poll();
  }

  async until(pred: (s: GuestState) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const s = this.con.poll();
      if (s && pred(s)) return;
      if (Date.now() > deadline) throw new Error(`the guest never showed ${what}; last state ${JSON.stringify(s)}`);
      await sleep(10);
    }
  }
}

/** Adds, times until the guest shows it, then undoes it (untimed) and waits until the guest shows that too. */
async function sample(rec: Recorder, op: string, add: () => Promise<void>, seen: () => Promise<void>, undo: () => Promise<void>): Promise<void> {
  rec.add(GUEST_SEES, op, await time(async () => {
    await add();
    await seen();
  }));
  await undo();
}

/** Restarts the guest when its QEMU has no room left for `kind`. */
async function ensureRoom(raw: RawLayer, w: ConsoleWatch, kind: 'cpuAdds' | 'dimms'): Promise<void> {
  if (raw.room()[kind] > 0) return;
  await raw.reset();
  w.reopen();
  await w.until(() => true, 'a first state block');
}

export async function benchGuestVisible(guest: BenchGuest, raw: RawLayer, rec: Recorder): Promise<void> {
  const w = new ConsoleWatch(guest);
  await raw.begin();
  try {
    for (let i = 0; i < BENCH.guestIterations; i++) {
      const hasMac = (s: GuestState): boolean => s.nets.some((n) => n.mac === raw.mac);
      await sample(rec, 'NIC add', () => raw.nicAdd(), () => w.until(hasMac, `NIC ${raw.mac}`),
        async () => { await raw.nicRemove(); await w.until((s) => !hasMac(s), 'the NIC gone'); });
      const hasDisk = (s: GuestState): boolean => s.blks.some((b) => b.pci === slotAddr(raw.slot));
      await sample(rec, 'disk add', () => raw.diskAdd(), () => w.until(hasDisk, `a disk at ${slotAddr(raw.slot)}`),
        async () => { await raw.diskRemove(); await w.until((s) => !hasDisk(s), 'the disk gone'); });
      const online = (s: GuestState): number => countCpuList(s.cpusOnline);
      await ensureRoom(raw, w, 'cpuAdds');
      await sample(rec, 'CPU add', () => raw.cpuAdd(), () => w.until((s) => online(s) === 2, '2 CPUs online'),
        async () => { await raw.cpuRemove(); await w.until((s) => online(s) === 1, '1 CPU online'); });
    }
    for (let i = 0; i < BENCH.guestIterations; i++) {
      await ensureRoom(raw, w, 'dimms');
      const before = w.now()?.memTotalKiB ?? 0;
      await sample(rec, 'DIMM add', () => raw.dimmAdd(), () => w.until((s) => s.memTotalKiB > before, 'more memory'), async () => undefined);
    }
  } finally {
    await raw.end();
  }
}
