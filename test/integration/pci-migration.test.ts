/**
 * Live migration keeps the PCI tree: a pc instance with devices behind a
 * bridge, and a q35 instance with hot-added devices in root ports, moved
 * between two data directories of this machine (as migration.test.ts does):
 * the target builds the same controllers from the carried hvparams, QEMU has
 * every device at its recorded bus and slot there, and the guest, which did
 * not reboot, sees each at the same address.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { HvParams } from '../../src/hypervisor/runtime-file';
import { bootGuest, makeDiskFile, newUuid, tempDir, BOOT_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { qemuPlaces } from '../support/pci-tree';
import { untilFinished } from '../support/migration';

const MiB = 1024 * 1024;
const HOST = '127.0.0.1';
const SEEN_MS = 120_000;

const layout = (s: GuestState): string =>
  JSON.stringify({ nets: s.nets.map((n) => `${n.mac}@${n.pci}`).sort(), blks: s.blks.map((b) => `${b.sectors}@${b.pci}`).sort() });


function migrationCase(title: string, machine: string, hvparams: HvParams, addDevices: (g: BootedGuest, storage: string) => Promise<void>, expect: (places: string[]) => void): void {
  describe(title, function () {
    this.timeout(600_000);
    let g: BootedGuest;
    let storage: string;
    let dataB: string;
    let onB: KvmInstance | undefined;

    before(async () => {
      storage = tempDir('pci-mig-storage');
      fs.chmodSync(storage, 0o755);
      dataB = tempDir('pci-mig-nodeB');
      g = await bootGuest({ machine, hvparams, storageDir: storage });
    });
    after(async () => {
      await onB?.stop().catch(() => undefined);
      await g?.destroy();
      for (const d of [storage, dataB]) fs.rmSync(d, { recursive: true, force: true });
    });

    it('hot-adds the devices, migrates, and every device is at its place on the target, seen there by the guest', async () => {
      await addDevices(g, storage);
      const source = g.instance;
      const records = [...source.runtime.nics, ...source.runtime.block_devices];
      expect(records.map((r) => `${r.bus ?? ''}:${r.pci}`));
      const seen = await g.console.waitFor((s) => s.nets.length + s.blks.length === records.length, SEEN_MS, `${records.length} devices in the guest`);
      const placesOnA = await qemuPlaces(await source.monitor());
      const tick = g.console.lastTick;

      const { instance: target, uri } = await KvmInstance.receive(dataB, source.runtime, { incoming: true, peer: 'A', listenHost: HOST }, { hostPaths: g.hostPaths });
      onB = target;
      await source.migrateTo(uri!, 'B');
      assert.equal(await untilFinished(source), 'completed');
      await target.finishIncoming();
      await source.release();

      assert.deepEqual(target.runtime.hvparams, source.runtime.hvparams, 'the tree\'s hvparams came along');
      assert.deepEqual(
        [...target.runtime.nics, ...target.runtime.block_devices].map((r) => `${r.bus ?? ''}:${r.pci}`),
        records.map((r) => `${r.bus ?? ''}:${r.pci}`),
      );
      const placesOnB = await qemuPlaces(await target.monitor());
      assert.deepEqual(new Map([...placesOnB].sort()), new Map([...placesOnA].sort()), 'QEMU on B has every device and controller where A had it');
      const onTarget = new GuestConsole(target.paths.consoleLog);
      const after = await onTarget.waitFor((s) => layout(s) === layout(seen), BOOT_TIMEOUT_MS, 'the same layout on B');
      assert.equal(layout(after), layout(seen));
      assert.ok(onTarget.lastTick >= tick, 'the guest did not reboot');
      assert.doesNotMatch(fs.readFileSync(target.paths.consoleLog, 'utf8'), /gnt-guest init/, 'no boot on B');
    });
  });
}

migrationCase(
  'live migration of a pc instance with devices behind a PCI bridge',
  'pc',
  { pci_bridges: 1 },
  async (g, storage) => {
    await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:7b:00:01' });
    await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:7b:00:02', bus: 'pcib1', slot: 3 });
    await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'b0.img', 12 * MiB), bus: 'pcib1', slot: 0 });
  },
  (places) => assert.deepEqual(places, [':4', 'pcib1:3', 'pcib1:0']),
);

migrationCase(
  'live migration of a q35 instance with hot-added devices in root ports',
  'q35',
  {},
  async (g, storage) => {
    await g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:35:7b:01' });
    await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'q0.img', 12 * MiB) });
  },
  (places) => assert.deepEqual(places, ['rp1:0', 'rp2:0']),
);
