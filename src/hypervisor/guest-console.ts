/**
 * Reads what the gnt-hotplug test guest (guest/init) reports on its serial
 * console: blocks of "gnt-guest begin N" ... "gnt-guest end N" describing the
 * PCI functions, NICs, block devices, CPUs and memory the guest itself sees.
 */
import * as fs from 'node:fs';

export interface GuestState {
  seq: number;
  pci: Array<{ addr: string; vendorDevice: string; cls: string }>;
  /** `queues`: receive queues (0 when the report predates it); `carrier`: '1', '0' or '-' (unknown). */
  nets: Array<{ name: string; mac: string; pci: string; queues: number; carrier: string }>;
  /** `scsi`: H:C:T:L of a SCSI disk, '-' for others. */
  blks: Array<{ name: string; sectors: number; pci: string; scsi: string }>;
  cpusPresent: string;
  cpusOnline: string;
  memTotalKiB: number;
}

/** A state block just begun ("gnt-guest begin N"). */
export function emptyState(seq: number): GuestState {
  return { seq, pci: [], nets: [], blks: [], cpusPresent: '', cpusOnline: '', memTotalKiB: 0 };
}

/** Adds one line of a state block (pci, net, blk, cpu, mem) to `state`. */
export function parseLine(state: GuestState, line: string): void {
  const f = line.trim().split(/\s+/);
  switch (f[0]) {
    case 'pci':
      state.pci.push({ addr: f[1], vendorDevice: f[2], cls: f[3] });
      break;
    case 'net':
      state.nets.push({ name: f[1], mac: f[2], pci: f[3] ?? '-', queues: Number(f[4] ?? 0), carrier: f[5] ?? '-' });
      break;
    case 'blk':
      state.blks.push({ name: f[1], sectors: Number(f[2]), pci: f[3] ?? '-', scsi: f[4] ?? '-' });
      break;
    case 'cpu':
      for (const kv of f.slice(1)) {
        const [k, v] = kv.split('=');
        if (k === 'present') state.cpusPresent = v ?? '';
        if (k === 'online') state.cpusOnline = v ?? '';
      }
      break;
    case 'mem':
      state.memTotalKiB = Number(f[1]);
      break;
  }
}

/** Every complete state block in `text`, oldest first. */
export function parseGuestStates(text: string): GuestState[] {
  const out: GuestState[] = [];
  let current: GuestState | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\r/g, '');
    const begin = /gnt-guest begin (\d+)/.exec(line);
    if (begin) {
      current = emptyState(Number(begin[1]));
      continue;
    }
    if (!current) continue;
    if (/gnt-guest end \d+/.test(line)) {
      out.push(current);
      current = undefined;
    } else {
      parseLine(current, line);
    }
  }
  return out;
}

/** Number of CPUs in a sysfs list such as "0-2,4". */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  return n;
}

/** Follows a console log file and answers questions about the latest state. */
export class GuestConsole {
  private offset = 0;
  private pendingText = '';
  private last: GuestState | undefined;
  private ticks = -1;
  private tickScanFrom = 0;

  constructor(readonly file: string) {}

  /** Reads what was appended since the last call. */
  poll(): GuestState | undefined {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch {
      return this.last;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) this.offset = 0; // file replaced
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        this.pendingText += buf.toString('utf8');
      }
    } finally {
      fs.closeSync(fd);
    }
    this.consumeTicks();
    // Parse only up to the last complete block; an unfinished one waits for the next poll
    // (QEMU writes the serial log byte by byte, so a block can arrive in pieces).
    const ends = [...this.pendingText.matchAll(/gnt-guest end \d+\r?\n/g)];
    const lastEnd = ends[ends.length - 1];
    if (lastEnd?.index === undefined) return this.last;
    const cut = lastEnd.index + lastEnd[0].length;
    const states = parseGuestStates(this.pendingText.slice(0, cut));
    this.pendingText = this.pendingText.slice(cut);
    this.tickScanFrom = Math.max(0, this.tickScanFrom - cut);
    if (states.length) this.last = states[states.length - 1];
    return this.last;
  }

  /** Heartbeats in complete lines not scanned yet. */
  private consumeTicks(): void {
    const text = this.pendingText;
    const lastNl = text.lastIndexOf('\n');
    if (lastNl < this.tickScanFrom) return;
    for (const m of text.slice(this.tickScanFrom, lastNl + 1).matchAll(/gnt-guest tick (\d+)/g)) this.ticks = Number(m[1]);
    this.tickScanFrom = lastNl + 1;
  }

  get latest(): GuestState | undefined {
    return this.poll();
  }

  /** The latest heartbeat number seen (-1 before the first). */
  get lastTick(): number {
    this.poll();
    return this.ticks;
  }

  /** Waits until the latest state satisfies `predicate`; the error shows the last state seen. */
  async waitFor(predicate: (s: GuestState) => boolean, timeoutMs: number, what: string): Promise<GuestState> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.poll();
      if (s && predicate(s)) return s;
      if (Date.now() > deadline) {
        throw new Error(`guest console ${this.file}: no state with ${what} within ${timeoutMs} ms; last state: ${JSON.stringify(s)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
