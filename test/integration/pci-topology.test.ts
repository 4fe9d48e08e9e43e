import { strict as assert } from 'node:assert';
import { NoFreePciSlotError } from '../../src/hypervisor/errors';
import { nicId } from '../../src/hypervisor/nic';
import { diskId } from '../../src/hypervisor/disk';
import type { DiskRecord, NicRecord } from '../../src/hypervisor/runtime-file';
import { bootGuest, makeDiskFile, newUuid, BOOT_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { busNumbers, guestAddr, qemuPlaces } from '../support/pci-tree';
import * as fs from 'node:fs';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';

const MiB = 1024 * 1024;
const DEVICES = 60;
/** The guest reports every 10 s and sees 60 hotplugs one by one under TCG: be generous. */
const ALL_SEEN_MS = 600_000;

const place = (r: NicRecord | DiskRecord): string => `${r.bus ?? ''}:${r.pci}`;

describe('PCI bridges on pc: 60 hot-added devices, every one seen by the guest, the same layout after restart', function () {
  this.timeout(1_800_000);
  let g: BootedGuest;
  let con: GuestConsole;

  before(async () => {
    g = await bootGuest({ memoryMiB: 256 });
    con = g.console;
  });
  after(async () => {
    await g?.destroy();
  });

  const macOf = (i: number): string => `52:54:00:aa:00:${i.toString(16).padStart(2, '0')}`;
  const sizeOf = (i: number): number => (i + 1) * MiB;

  /** Every NIC by MAC and every disk by size at the address the tree gives it. */
  async function assertGuestSeesAll(what: string): Promise<GuestState> {
    const mon = await g.instance.monitor();
    const numbers = await busNumbers(mon);
    const nics = g.instance.runtime.nics.map((n) => ({ mac: n.mac, addr: guestAddr(numbers, n.bus, n.pci as number) }));
    const disks = g.instance.runtime.block_devices.map((d) => ({ addr: guestAddr(numbers, d.bus, d.pci as number), sectors: Number(d.path.match(/d(\d+)\.img$/)?.[1]) + 1 }));
    const seen = await con.waitFor(
      (s) =>
        nics.every((n) => s.nets.some((x) => x.mac === n.mac && x.pci === n.addr)) &&
        disks.every((d) => s.blks.some((x) => x.pci === d.addr && x.sectors === d.sectors * 2048)),
      ALL_SEEN_MS,
      `${what}: all ${nics.length} NICs and ${disks.length} disks at their addresses`,
    );
    // Every device is a PCI function at that address in the guest too.
    for (const a of [...nics, ...disks].map((x) => x.addr)) assert.ok(seen.pci.some((p) => p.addr === a), `guest lists PCI ${a}`);
    // QEMU has every device where the runtime file says.
    const live = await qemuPlaces(mon);
    for (const n of g.instance.runtime.nics) assert.equal(live.get(nicId(n, n.pci as number)), place(n));
    for (const d of g.instance.runtime.block_devices) assert.equal(live.get(diskId(d, d.pci as number)), place(d));
    return seen;
  }

  it('places them on bus 0 first, then behind pcib1 and pcib2, and the guest sees all of them', async () => {
    assert.equal(g.instance.runtime.hvparams.pci_bridges, 2, 'the layout records the default');
    const t0 = Date.now();
    for (let i = 0; i < DEVICES; i++) {
      if (i % 2 === 0) await g.instance.hotAddNic({ uuid: newUuid(), mac: macOf(i) });
      else await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(g.dataDir, `d${i}.img`, sizeOf(i)) });
    }
    const addMs = Date.now() - t0;
    const all = [...g.instance.runtime.nics, ...g.instance.runtime.block_devices];
    assert.equal(all.length, DEVICES);
    assert.equal(new Set(all.map(place)).size, DEVICES, 'every device at its own place');
    const onRoot = all.filter((r) => r.bus === undefined).length;
    assert.equal(onRoot, 26, 'bus 0 takes slots 4 to 29 (30 and 31 hold the bridges)');
    assert.equal(all.filter((r) => r.bus === 'pcib1').length, 32, 'pcib1 full, slot 0 included');
    assert.equal(all.filter((r) => r.bus === 'pcib2').length, DEVICES - 26 - 32);
    const t1 = Date.now();
    await assertGuestSeesAll('after the hot-adds');
    console.log(`      ${DEVICES} hot-adds took ${addMs} ms; the guest showed all of them ${Date.now() - t1} ms later`);
  });

  it('keeps every device at its bus and slot across stop and start, seen by the guest there', async () => {
    const before = new Map([...g.instance.runtime.nics, ...g.instance.runtime.block_devices].map((r) => [r.uuid, place(r)]));
    await g.instance.stop();
    const t0 = Date.now();
    fs.writeFileSync(g.instance.paths.consoleLog, ''); // the new boot's reports only
    await g.instance.start();
    con = new GuestConsole(g.instance.paths.consoleLog);
    await con.waitFor(() => true, BOOT_TIMEOUT_MS * 3, 'a state block after the restart');
    const after = new Map([...g.instance.runtime.nics, ...g.instance.runtime.block_devices].map((r) => [r.uuid, place(r)]));
    assert.deepEqual(after, before);
    await assertGuestSeesAll('after stop and start');
    console.log(`      restart with ${DEVICES} devices: all seen ${Date.now() - t0} ms after start`);
  });

  it('refuses with "no free PCI slot" only when every bus is full, counting all buses', async () => {
    const t0 = Date.now();
    let added = 0;
    for (;;) {
      try {
        await g.instance.hotAddNic({ uuid: newUuid(), mac: `52:54:00:bb:00:${added.toString(16).padStart(2, '0')}` });
        added++;
      } catch (err) {
        assert.ok(err instanceof NoFreePciSlotError, String(err));
        assert.equal(err.message, `no free PCI slot on instance ${g.instance.name} (90 of 90 used: on 3 buses: pci.0 26 of 26, pcib1 32 of 32, pcib2 32 of 32); remove a device first`);
        break;
      }
      assert.ok(added <= 30, 'at most 30 more fit');
    }
    assert.equal(added, 30);
    console.log(`      30 more hot-adds until full: ${Date.now() - t0} ms`);
  });
});
