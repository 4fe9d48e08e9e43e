/**
 * The test guest's immediate report: the "gnt-guest event <ms> <kind> ..."
 * lines that guest/gnt-uevent.c prints on the console the moment the guest's
 * kernel has a change (format at the top of guest/init). The state blocks
 * (src/hypervisor/guest-console.ts) stay the full picture; these lines say
 * when the guest saw each change, and follow a file as QEMU appends to it.
 */
import * as fs from 'node:fs';

export interface GuestEvent {
  /** The guest's CLOCK_BOOTTIME in ms when it reported the change. */
  ms: number;
  /** net-add, net-remove, net-carrier, blk-add, blk-remove, blk-resize, pci-add, pci-remove, cpu-add, cpu-online, cpu-offline, cpu-remove, mem, overflow. */
  kind: string;
  fields: string[];
  /** Byte offset of the line in the console log (orders events against state blocks). */
  offset: number;
}

const EVENT = /gnt-guest event (\d+) (\S+)(.*)$/;

/** The event on one console line, if it has one (QEMU's log may carry \r and kernel text before it). */
export function parseGuestEvent(line: string, offset = 0): GuestEvent | undefined {
  const m = EVENT.exec(line.replace(/\r/g, ''));
  if (!m) return undefined;
  return { ms: Number(m[1]), kind: m[2], fields: m[3].trim().split(/\s+/).filter(Boolean), offset };
}

/** Accessors for the kinds the tests and the bench wait for. */
export const netAdd = (e: GuestEvent): { name: string; mac: string; pci: string } | undefined =>
  e.kind === 'net-add' ? { name: e.fields[0], mac: e.fields[1], pci: e.fields[2] } : undefined;
export const blkAdd = (e: GuestEvent): { name: string; sectors: number; pci: string; scsi: string } | undefined =>
  e.kind === 'blk-add' ? { name: e.fields[0], sectors: Number(e.fields[1]), pci: e.fields[2], scsi: e.fields[3] } : undefined;

/** Follows a console log and collects its event lines, oldest first. */
export class GuestEventLog {
  readonly events: GuestEvent[] = [];
  private offset = 0;
  private partial = '';

  constructor(readonly file: string) {}

  /** Reads what was appended since the last call; returns the events it found. */
  poll(): GuestEvent[] {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch {
      return [];
    }
    let chunk = '';
    let start = this.offset;
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) start = this.reset(); // a restart empties the log
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        chunk = buf.toString('latin1');
      }
    } finally {
      fs.closeSync(fd);
    }
    if (!chunk) return [];
    const text = this.partial + chunk;
    let at = start - this.partial.length;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    const found: GuestEvent[] = [];
    for (const line of lines) {
      const e = parseGuestEvent(line, at);
      if (e) found.push(e);
      at += line.length + 1;
    }
    this.events.push(...found);
    return found;
  }

  /** Starts over at the beginning of the file (its old events stay in `events`). */
  private reset(): number {
    this.offset = 0;
    this.partial = '';
    return 0;
  }

  /** Events seen from index `from` on (use `events.length` before a change as a mark). */
  since(from: number): GuestEvent[] {
    this.poll();
    return this.events.slice(from);
  }

  /** Waits for the first event from index `from` on that `match` accepts. */
  async waitFor(match: (e: GuestEvent) => boolean, from: number, timeoutMs: number, what: string, pollMs = 5): Promise<GuestEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.since(from).find(match);
      if (hit) return hit;
      if (Date.now() > deadline) {
        const seen = this.events.slice(from).map((e) => `${e.kind} ${e.fields.join(' ')}`);
        throw new Error(`guest console ${this.file}: no event with ${what} within ${timeoutMs} ms; events since the mark: ${JSON.stringify(seen)}`);
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}
