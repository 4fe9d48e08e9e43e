/**
 * Time until the guest itself shows a hot-added device, from the first QMP
 * command of the raw sequence, two ways in the same sample: until the test
 * guest's immediate report ("gnt-guest event" line, guest/gnt-uevent.c) that
 * names the device, and until the next full state block that has it (see
 * docs/testing.md). The event line is printed when the guest's kernel has
 * the device (a NIC registered with its MAC, a disk with its size, a vCPU
 * online, memory online); the block follows when init's report loop has run
 * once more.
 */
import { countCpuList, GuestConsole, type GuestState } from '../src/hypervisor/guest-console';
import { blkAdd, GuestEventLog, netAdd, type GuestEvent } from '../test/support/guest-events';
import { BENCH } from './config';
import type { BenchGuest } from './guest';
import type { RawLayer } from './raw-layer';
import { sleep, type Recorder } from './stats';

export const GUEST_EVENT = 'guest reports it (raw QMP + event)';
export const GUEST_BLOCK = 'guest state block (raw QMP + block)';
const TIMEOUT_MS = 30_000;
/** How often the console log is read while waiting (a read of what was appended is a few microseconds). */
const POLL_MS = 2;

const slotAddr = (slot: number): string => `0000:00:${slot.toString(16).padStart(2, '0')}.0`;

class ConsoleWatch {
  private con: GuestConsole;
  private log: GuestEventLog;

  constructor(private readonly guest: BenchGuest) {
    this.con = new GuestConsole(guest.inst.paths.consoleLog);
    this.log = new GuestEventLog(guest.inst.paths.consoleLog);
  }

  /** After a restart the log starts over. */
  reopen(): void {
    this.con = new GuestConsole(this.guest.inst.paths.consoleLog);
    this.log = new GuestEventLog(this.guest.inst.paths.consoleLog);
  }

  now(): GuestState | undefined {
    return this.con.poll();
  }

  /** The index of the next event: what a wait after a change starts from. */
  mark(): number {
    this.log.poll();
    return this.log.events.length;
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

  /** Waits for both the event line and the state block; resolves with when each was seen (ms since `t0`, hrtime). */
  async both(t0: bigint, mark: number, ev: (e: GuestEvent) => boolean, block: (s: GuestState) => boolean, what: string): Promise<{ eventMs: number; blockMs: number }> {
    const deadline = Date.now() + TIMEOUT_MS;
    let eventMs: number | undefined;
    let blockMs: number | undefined;
    const since = (): number => Number(process.hrtime.bigint() - t0) / 1e6;
    for (;;) {
      if (eventMs === undefined && this.log.since(mark).some(ev)) eventMs = since();
      const s = this.con.poll();
      if (blockMs === undefined && s && block(s)) blockMs = since();
      if (eventMs !== undefined && blockMs !== undefined) return { eventMs, blockMs };
      if (Date.now() > deadline) throw new Error(`the guest never showed ${what} (event ${eventMs ?? 'missing'}, block ${blockMs ?? 'missing'}); last state ${JSON.stringify(s)}`);
      await sleep(POLL_MS);
    }
  }
}

interface Kind {
  op: string;
  add: () => Promise<void>;
  event: (e: GuestEvent) => boolean;
  block: (s: GuestState) => boolean;
  what: string;
  /** Untimed: takes the device away again and waits until the guest shows it gone. */
  undo: () => Promise<void>;
}

/** One sample of both lines: from the first QMP command of the add. */
async function sample(rec: Recorder, w: ConsoleWatch, k: Kind): Promise<void> {
  const mark = w.mark();
  const t0 = process.hrtime.bigint();
  await k.add();
  const { eventMs, blockMs } = await w.both(t0, mark, k.event, k.block, k.what);
  rec.add(GUEST_EVENT, k.op, eventMs);
  rec.add(GUEST_BLOCK, k.op, blockMs);
  await k.undo();
}

/** Restarts the guest when its QEMU has no room left for `kind`. */
async function ensureRoom(raw: RawLayer, w: ConsoleWatch, kind: 'cpuAdds' | 'dimms'): Promise<void> {
  if (raw.room()[kind] > 0) return;
  await raw.reset();
  w.reopen();
  await w.until(() => true, 'a first state block');
}

function kinds(raw: RawLayer, w: ConsoleWatch): { nic: Kind; disk: Kind; cpu: Kind } {
  const hasMac = (s: GuestState): boolean => s.nets.some((n) => n.mac === raw.mac);
  const hasDisk = (s: GuestState): boolean => s.blks.some((b) => b.pci === slotAddr(raw.slot));
  const online = (s: GuestState): number => countCpuList(s.cpusOnline);
  return {
    nic: {
      op: 'NIC add', add: () => raw.nicAdd(), event: (e) => netAdd(e)?.mac === raw.mac, block: hasMac, what: `NIC ${raw.mac}`,
      undo: async () => { await raw.nicRemove(); await w.until((s) => !hasMac(s), 'the NIC gone'); },
    },
    disk: {
      op: 'disk add', add: () => raw.diskAdd(), event: (e) => blkAdd(e)?.pci === slotAddr(raw.slot), block: hasDisk, what: `a disk at ${slotAddr(raw.slot)}`,
      undo: async () => { await raw.diskRemove(); await w.until((s) => !hasDisk(s), 'the disk gone'); },
    },
    cpu: {
      op: 'CPU add', add: () => raw.cpuAdd(), event: (e) => e.kind === 'cpu-online', block: (s) => online(s) === 2, what: '2 CPUs online',
      undo: async () => { await raw.cpuRemove(); await w.until((s) => online(s) === 1, '1 CPU online'); },
    },
  };
}

export async function benchGuestVisible(guest: BenchGuest, raw: RawLayer, rec: Recorder): Promise<void> {
  const w = new ConsoleWatch(guest);
  const k = kinds(raw, w);
  await raw.begin();
  try {
    for (let i = 0; i < BENCH.guestIterations; i++) {
      await sample(rec, w, k.nic);
      await sample(rec, w, k.disk);
      await ensureRoom(raw, w, 'cpuAdds');
      await sample(rec, w, k.cpu);
    }
    for (let i = 0; i < BENCH.guestIterations; i++) {
      await ensureRoom(raw, w, 'dimms');
      const before = w.now()?.memTotalKiB ?? 0;
      await sample(rec, w, {
        op: 'DIMM add', add: () => raw.dimmAdd(), event: (e) => e.kind === 'mem' && Number(e.fields[0]) > before,
        block: (s) => s.memTotalKiB > before, what: 'more memory', undo: async () => undefined,
      });
    }
  } finally {
    await raw.end();
  }
}
