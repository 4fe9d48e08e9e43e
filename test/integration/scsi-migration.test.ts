/**
 * Live migration of an instance with SCSI disks (one given at create, more
 * hot-added), a pmem device and a NIC placed behind a PCI bridge (pc) or in
 * a root port (q35), between two data directories of this machine (shared
 * storage), as migration.test.ts: every SCSI disk at the same H:C:T:L, the
 * controller, the pmem device and the NIC at the same bus and slot.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { bootGuest, makeDiskFile, newUuid, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { untilFinished } from '../support/migration';

const MiB = 1024 * 1024;
const HOST = '127.0.0.1';

/** Every block device with its size and its PCI or SCSI address; every NIC at its address; every PCI function. */
const layout = (s: GuestState): string =>
  JSON.stringify({
    blks: s.blks.map((b) => `${b.name.replace(/\d+$|[a-z]$/, '')}:${b.sectors}@${b.pci}/${b.scsi}`).sort(),
    nets: s.nets.map((n) => `${n.mac}@${n.pci}`).sort(),
    pci: s.pci.map((p) => `${p.addr}=${p.vendorDevice}`).sort(),
  });


for (const machine of ['pc', 'q35'] as const)
describe(`live migration of SCSI disks, a pmem device and a NIC off the root bus on ${machine} (hypervisor layer, real guest)`, function () {
  let g: BootedGuest;
  let storage: string;
  let dataB: string;
  let onB: KvmInstance | undefined;
  let seen: GuestState;

  before(async () => {
    storage = tempDir('scsi-mig-storage');
    dataB = tempDir('scsi-mig-nodeB');
    g = await bootGuest({ machine, storageDir: storage, disks: [{ uuid: newUuid(), path: makeDiskFile(storage, 'boot-scsi.img', 16 * MiB), diskBus: 'scsi' }] });
  });
  after(async () => {
    await onB?.abortMigration().catch(() => undefined);
    await onB?.stop().catch(() => undefined);
    await g?.destroy();
    for (const d of [storage, dataB]) fs.rmSync(d, { recursive: true, force: true });
  });

  it('boots with the SCSI disk of its spec on a controller created at start, then hot-adds SCSI disks, a pmem device and a NIC off the root bus', async () => {
    const boot = await g.console.waitFor((s) => s.blks.some((b) => b.scsi === '0:0:0:0'), SEEN_TIMEOUT_MS, 'the SCSI disk of the spec');
    assert.equal(boot.blks.find((b) => b.scsi === '0:0:0:0')?.sectors, (16 * MiB) / 512);
    const ctrl = g.instance.runtime.scsi_controller;
    assert.ok(ctrl, 'the controller was recorded at create');
    // A controller made at start is fixed on the root bus (on q35 an integrated endpoint of pcie.0 the guest cannot eject).
    assert.equal(ctrl.bus, undefined);
    // pc: a NIC asked for behind the first bridge; q35: the next free root port.
    const nic = await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:5c:00:01', ...(machine === 'pc' ? { bus: 'pcib1', slot: 3 } : {}) });
    if (machine === 'pc') assert.equal(nic.bus, 'pcib1');
    else assert.match(nic.bus ?? '', /^rp\d+$/);
    for (let i = 1; i <= 3; i++) await g.instance.hotAddScsiDisk({ uuid: newUuid(), path: makeDiskFile(storage, `hot-scsi-${i}.img`, (16 + i) * MiB) });
    const pmemFile = path.join(storage, 'pmem.img');
    await g.instance.hotAddPmem({ uuid: newUuid(), path: pmemFile, created: true, sizeMiB: 128 }, () => {
      makeDiskFile(storage, 'pmem.img', 128 * MiB);
      return () => fs.rmSync(pmemFile, { force: true });
    });
    seen = await g.console.waitFor(
      (s) => s.blks.filter((b) => b.scsi !== '-').length === 4 && s.blks.some((b) => b.name.startsWith('pmem')) && s.nets.some((n) => n.mac === nic.mac && !n.pci.startsWith('0000:00:')),
      SEEN_TIMEOUT_MS,
      'four SCSI disks, a pmem device and the NIC behind a bridge or root port',
    );
  });

  it('migrates to node B: the guest sees every SCSI disk at the same address and the pmem device at the same slot', async function () {
    this.timeout(300_000);
    const source = g.instance;
    const carried = source.runtime;
    const { instance: target, uri } = await KvmInstance.receive(dataB, carried, { incoming: true, peer: 'A', listenHost: HOST }, { hostPaths: g.hostPaths });
    onB = target;
    await source.migrateTo(uri!, 'B');
    assert.equal(await untilFinished(source), 'completed');
    await target.finishIncoming();
    await source.release();
    assert.deepEqual(target.runtime.scsi_disks, carried.scsi_disks);
    assert.deepEqual(target.runtime.scsi_controller, carried.scsi_controller);
    assert.deepEqual(target.runtime.pmem_devices, carried.pmem_devices);
    assert.deepEqual(target.runtime.nics, carried.nics.map((n) => ({ ...n, tap: target.runtime.nics.find((t) => t.uuid === n.uuid)?.tap })));
    const onTarget = new GuestConsole(target.paths.consoleLog);
    const after = await onTarget.waitFor((s) => layout(s) === layout(seen), BOOT_TIMEOUT_MS, 'the same layout on B');
    assert.equal(layout(after), layout(seen));
    assert.doesNotMatch(fs.readFileSync(target.paths.consoleLog, 'utf8'), /gnt-guest init/, 'no boot on B');
    // and B can go on: one more SCSI disk, and a removal of one hot-added on A
    const more = await target.hotAddScsiDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'on-b.img', 40 * MiB) });
    await onTarget.waitFor((s) => s.blks.some((b) => b.scsi === `0:0:${more.target}:${more.lun}` && b.sectors === (40 * MiB) / 512), SEEN_TIMEOUT_MS, 'the disk added on B');
    const first = (target.runtime.scsi_disks ?? [])[1];
    await target.hotRemoveDisk(first.uuid);
    await onTarget.waitFor((s) => !s.blks.some((b) => b.scsi === `0:0:${first.target}:${first.lun}`), SEEN_TIMEOUT_MS, 'the removed disk gone on B');
  });
});
