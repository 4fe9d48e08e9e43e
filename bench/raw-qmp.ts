/**
 * The floor: a minimal QMP client (no queue, no events beyond what it waits
 * for, no state files) sending the bare command sequence of each hotplug.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { openTap, sendWithFds, unixConnect } from '../src/hypervisor/native';

export class RawQmp {
  private buf = '';
  private waiters: Array<(msg: Record<string, unknown>) => boolean> = [];
  private id = 0;
  private constructor(private readonly fd: number, private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buf.slice(0, nl)) as Record<string, unknown>;
        this.buf = this.buf.slice(nl + 1);
        this.waiters = this.waiters.filter((w) => !w(msg));
      }
    });
  }

  static async connect(path: string): Promise<RawQmp> {
    const fd = unixConnect(path);
    const raw = new RawQmp(fd, new net.Socket({ fd, readable: true, writable: true }));
    await raw.next((m) => 'QMP' in m);
    await raw.cmd('qmp_capabilities');
    return raw;
  }

  private next(match: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.waiters.push((m) => (match(m) ? (resolve(m), true) : false)));
  }

  async cmd(execute: string, args?: Record<string, unknown>, fds: number[] = []): Promise<unknown> {
    const id = ++this.id;
    const reply = this.next((m) => m.id === id);
    sendWithFds(this.fd, Buffer.from(JSON.stringify({ execute, id, arguments: args }) + '\n'), fds);
    const m = await reply;
    if (m.error) throw new Error(`${execute}: ${JSON.stringify(m.error)}`);
    return m.return;
  }

  /** Resolves on the next event that `match` accepts; register it before the command that causes it. */
  event(match: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    return this.next((m) => 'event' in m && match(m));
  }

  /** The next event that `match` accepts, or undefined after `ms` (the waiter is then dropped). */
  eventWithin(match: (m: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown> | undefined> {
    return new Promise((resolve) => {
      const w = (m: Record<string, unknown>): boolean => {
        if (!('event' in m) || !match(m)) return false;
        clearTimeout(timer);
        resolve(m);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(undefined);
      }, ms);
      this.waiters.push(w);
    });
  }

  deleted(id: string): Promise<unknown> {
    return this.next((m) => m.event === 'DEVICE_DELETED' && (m.data as { device?: string }).device === id);
  }

  close(): void {
    this.sock.destroy();
  }
}

const addr = (slot: number): string => `0x${slot.toString(16)}`;

export async function rawNicAdd(q: RawQmp, id: string, slot: number, mac: string): Promise<void> {
  const tap = openTap('gnttap%d', true);
  try {
    await q.cmd('getfd', { fdname: id }, [tap.fd]);
  } finally {
    fs.closeSync(tap.fd);
  }
  await q.cmd('netdev_add', { type: 'tap', id, fd: id });
  await q.cmd('device_add', { driver: 'virtio-net-pci', id, netdev: id, mac, bus: 'pci.0', addr: addr(slot) });
}

export async function rawNicRemove(q: RawQmp, id: string): Promise<void> {
  const gone = q.deleted(id);
  await q.cmd('device_del', { id });
  await gone;
  await q.cmd('netdev_del', { id });
}

export async function rawDiskAdd(q: RawQmp, id: string, slot: number, path: string): Promise<void> {
  const fd = fs.openSync(path, 'r+');
  let set: number;
  try {
    set = ((await q.cmd('add-fd', { opaque: id }, [fd])) as { 'fdset-id': number })['fdset-id'];
  } finally {
    fs.closeSync(fd);
  }
  await q.cmd('blockdev-add', { driver: 'file', 'node-name': id, filename: `/dev/fdset/${set}` });
  await q.cmd('device_add', { driver: 'virtio-blk-pci', id, drive: id, bus: 'pci.0', addr: addr(slot) });
  rawFdsets.set(id, set);
}

const rawFdsets = new Map<string, number>();

export async function rawDiskRemove(q: RawQmp, id: string): Promise<void> {
  const gone = q.deleted(id);
  await q.cmd('device_del', { id });
  await gone;
  await q.cmd('blockdev-del', { 'node-name': id });
  await q.cmd('remove-fd', { 'fdset-id': rawFdsets.get(id) });
}

interface HotpluggableCpu {
  type: string;
  props: Record<string, number>;
  'qom-path'?: string;
}

/** vCPU add: the free slots come from query-hotpluggable-cpus, then one device_add. */
export async function rawCpuAdd(q: RawQmp, id: string): Promise<void> {
  const cpus = (await q.cmd('query-hotpluggable-cpus')) as HotpluggableCpu[];
  const free = cpus.find((c) => !c['qom-path']);
  if (!free) throw new Error('no free vCPU slot');
  await q.cmd('device_add', { driver: free.type, id, ...free.props });
}

/** Events after which an ejected vCPU may be gone: its lapic's DEVICE_DELETED (QEMU 10 names only the QOM path) or ACPI_DEVICE_OST. */
const mayEndCpuUnplug = (id: string) => (m: Record<string, unknown>): boolean =>
  m.event === 'ACPI_DEVICE_OST' ||
  (m.event === 'DEVICE_DELETED' && String((m.data as { path?: string }).path ?? '').startsWith(`/machine/peripheral/${id}`));

/**
 * vCPU remove: device_del, then until QEMU no longer lists the vCPU in
 * /machine/peripheral (the guest has ejected it). QEMU's list is read after
 * every related event and at least every 10 ms.
 */
export async function rawCpuRemove(q: RawQmp, id: string, timeoutMs = 20_000): Promise<void> {
  await q.cmd('device_del', { id });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const next = q.eventWithin(mayEndCpuUnplug(id), 10); // before the look, so that no event falls in between
    const children = (await q.cmd('qom-list', { path: '/machine/peripheral' })) as Array<{ name: string }>;
    if (!children.some((c) => c.name === id)) return;
    if (Date.now() > deadline) throw new Error(`the guest did not eject vCPU ${id}`);
    await next;
  }
}

/** ACPI DIMM add: a RAM backend, then the pc-dimm on it. */
export async function rawDimmAdd(q: RawQmp, id: string, sizeMiB: number): Promise<void> {
  await q.cmd('object-add', { 'qom-type': 'memory-backend-ram', id: `mem-${id}`, size: sizeMiB * 1024 * 1024 });
  await q.cmd('device_add', { driver: 'pc-dimm', id, memdev: `mem-${id}` });
}
