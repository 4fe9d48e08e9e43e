import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import type { ScsiDiskRecord } from '../../src/hypervisor/runtime-file';
import { SCSI_CONTROLLER_ID, scsiDiskId } from '../../src/hypervisor/scsi-disk';
import { bootGuest, makeDiskFile, newUuid, openFds, slotAddr, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

const MiB = 1024 * 1024;
const DISKS = 100;
/** Each disk its own size (1..DISKS MiB), so the guest's sector counts tell them apart. */
const sizeOf = (i: number): number => (i + 1) * MiB;
const hctl = (d: ScsiDiskRecord): string => `${d.target}:${d.lun}`;

/** The guest's SCSI disks as "T:L=sectors" (its H:C:T:L, controller and channel dropped). */
function guestScsi(blks: Array<{ scsi: string; sectors: number }>): string[] {
  return blks.filter((b) => b.scsi !== '-').map((b) => `${b.scsi.split(':').slice(2).join(':')}=${b.sectors}`).sort();
}
const recordedScsi = (disks: ScsiDiskRecord[], sizes: Map<string, number>): string[] =>
  disks.map((d) => `${hctl(d)}=${(sizes.get(d.uuid) as number) / 512}`).sort();

describe('virtio-scsi disks against the real guest', function () {
  let g: BootedGuest;
  let storage: string;
  const sizes = new Map<string, number>();

  before(async () => {
    storage = tempDir('scsi-storage');
    g = await bootGuest({ storageDir: storage });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  it(`hot-adds ${DISKS} SCSI disks on one controller (one PCI slot), every one seen by the guest at its address with its size`, async function () {
    this.timeout(900_000);
    const slotsBefore = (await g.instance.slotMap(await g.instance.monitor())).usage().used;
    const fdsBefore = openFds();
    const t0 = Date.now();
    for (let i = 0; i < DISKS; i++) {
      const uuid = newUuid();
      const file = makeDiskFile(storage, `scsi-${i}.img`, sizeOf(i));
      sizes.set(uuid, sizeOf(i));
      const d = await g.instance.hotAddScsiDisk({ uuid, path: file });
      assert.equal(scsiDiskId(d).length <= 32, true);
    }
    const addMs = Date.now() - t0;
    const rt = g.instance.runtime;
    const disks = rt.scsi_disks ?? [];
    assert.equal(disks.length, DISKS);
    assert.equal(new Set(disks.map(hctl)).size, DISKS, 'every disk has its own address');
    const ctrl = rt.scsi_controller;
    assert.ok(ctrl, 'the controller is recorded');
    const slotsAfter = (await g.instance.slotMap(await g.instance.monitor())).usage().used;
    assert.equal(slotsAfter, slotsBefore + 1, 'the disks took one PCI slot (the controller) between them');
    const want = recordedScsi(disks, sizes);
    const seen = await g.console.waitFor((s) => guestScsi(s.blks).length === DISKS, 120_000, `${DISKS} SCSI disks in the guest`);
    assert.deepEqual(guestScsi(seen.blks), want);
    assert.ok(seen.pci.some((p) => p.addr === slotAddr(ctrl.pci) && p.vendorDevice === '1af4:1004'), 'the controller at its recorded slot');
    assert.deepEqual(openFds(), fdsBefore, 'our copies of the disk fds are closed');
    console.log(`      ${DISKS} SCSI hot-adds took ${addMs} ms`);
  });

  it('keeps the SCSI layout (controller slot, every address) across stop and start', async function () {
    this.timeout(300_000);
    const before = g.instance.runtime;
    await g.restart();
    const seen = await g.console.waitFor((s) => guestScsi(s.blks).length === DISKS, BOOT_TIMEOUT_MS * 2, `${DISKS} SCSI disks after the restart`);
    assert.deepEqual(guestScsi(seen.blks), recordedScsi(before.scsi_disks ?? [], sizes));
    assert.deepEqual(g.instance.runtime.scsi_controller, before.scsi_controller);
    assert.ok(seen.pci.some((p) => p.addr === slotAddr(before.scsi_controller!.pci) && p.vendorDevice === '1af4:1004'));
  });

  it(`removes the ${DISKS} SCSI disks by uuid; the guest loses every one, QEMU keeps no block node or fdset`, async function () {
    this.timeout(900_000);
    const disks = g.instance.runtime.scsi_disks ?? [];
    const t0 = Date.now();
    for (const d of disks) await g.instance.hotRemoveDisk(d.uuid);
    const removeMs = Date.now() - t0;
    assert.deepEqual(g.instance.runtime.scsi_disks ?? [], []);
    await g.console.waitFor((s) => guestScsi(s.blks).length === 0, 120_000, 'no SCSI disk left in the guest');
    const mon = await g.instance.monitor();
    const nodes = await mon.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
    const ids = new Set(disks.map(scsiDiskId));
    assert.ok(!nodes.some((n) => ids.has(n['node-name'])), 'block nodes deleted');
    const sets = await mon.execute<Array<{ fds: Array<{ opaque?: string }> }>>('query-fdsets');
    assert.ok(!sets.some((s) => s.fds.some((f) => f.opaque !== undefined && ids.has(f.opaque))), 'fdsets removed');
    assert.ok(g.instance.runtime.scsi_controller, 'the controller stays while the instance runs');
    assert.equal((await mon.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' })).some((c) => c.name === SCSI_CONTROLLER_ID), true);
    console.log(`      ${DISKS} SCSI hot-removes took ${removeMs} ms`);
  });

  it('a controller the guest ejects takes its LUNs with it as guest-side removals; the next SCSI add brings it back at its slot', async function () {
    this.timeout(120_000);
    for (let i = 0; i < 2; i++) await g.instance.hotAddScsiDisk({ uuid: newUuid(), path: makeDiskFile(storage, `eject-${i}.img`, sizeOf(i)) });
    await g.console.waitFor((s) => guestScsi(s.blks).length === 2, SEEN_TIMEOUT_MS, 'two SCSI disks');
    const slot = g.instance.runtime.scsi_controller!.pci;
    const removed: string[] = [];
    g.instance.on('device-removed', (e: { kind: string; uuid: string }) => removed.push(e.kind));
    // device_del asks the guest, which ejects the slot through ACPI: the same path as an eject of its own.
    await (await g.instance.monitor()).execute('device_del', { id: SCSI_CONTROLLER_ID });
    await g.console.waitFor((s) => guestScsi(s.blks).length === 0 && !s.pci.some((p) => p.addr === slotAddr(slot)), SEEN_TIMEOUT_MS, 'the controller and its disks gone');
    const deadline = Date.now() + SEEN_TIMEOUT_MS;
    while ((g.instance.runtime.scsi_disks ?? []).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(g.instance.runtime.scsi_disks ?? [], [], 'both records ended as guest-side removals');
    assert.deepEqual(removed, ['scsi-disk', 'scsi-disk']);
    assert.equal(g.instance.runtime.scsi_controller?.pci, slot, 'the controller keeps its recorded slot');
    const d = await g.instance.hotAddScsiDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'eject-back.img', 3 * MiB) });
    const seen = await g.console.waitFor((s) => guestScsi(s.blks).length === 1, SEEN_TIMEOUT_MS, 'the new SCSI disk');
    assert.deepEqual(guestScsi(seen.blks), [`${d.target}:${d.lun}=${(3 * MiB) / 512}`]);
    assert.ok(seen.pci.some((p) => p.addr === slotAddr(slot) && p.vendorDevice === '1af4:1004'), 'the controller back at its slot');
  });
});
