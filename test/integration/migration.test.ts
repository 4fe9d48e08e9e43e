/**
 * Live migration in the hypervisor layer, between two data directories of
 * this machine (two "nodes" sharing the disk storage), with the real guest:
 * the target is started from the source's runtime file, paused, and the
 * guest must come out the other side still running, with every hot-added
 * device at the same PCI slot.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { bootGuest, makeDiskFile, netInterfaces, newUuid, sh, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { untilFinished } from '../support/migration';

const MiB = 1024 * 1024;
const NODE = { freeMemoryMiB: 16384, cpus: 8 };
const BRIDGE = 'gntmig0';
const HOST = '127.0.0.1';

const taps = (): string[] => netInterfaces().filter((n) => n.startsWith('gnttap'));

/** What must survive a migration: every device with its PCI address, CPUs and memory. */
const layout = (s: GuestState): string =>
  JSON.stringify({
    nets: s.nets.map((n) => `${n.mac}@${n.pci}`).sort(),
    blks: s.blks.map((b) => `${b.sectors}@${b.pci}`).sort(),
    cpus: s.cpusOnline,
    mem: s.memTotalKiB,
  });


async function untilState(inst: KvmInstance, state: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await inst.migrationStatus()).progress?.state === state) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`migration never reached ${state}`);
}

describe('live migration between two nodes of this machine (hypervisor layer, real guest)', function () {
  let g: BootedGuest;
  let storage: string;
  let dataB: string;
  let source: KvmInstance;
  let onB: KvmInstance | undefined;
  let seen: GuestState;
  let lastTickOnA: number;

  before(async () => {
    sh('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    storage = tempDir('shared-storage');
    dataB = tempDir('nodeB');
    g = await bootGuest({
      storageDir: storage,
      nics: [{ uuid: newUuid(), mac: '52:54:00:6d:00:01', link: BRIDGE }],
      disks: [{ uuid: newUuid(), path: makeDiskFile(storage, 'boot.img', 16 * MiB) }],
    });
    source = g.instance;
  });
  after(async () => {
    for (const i of [onB, source]) await i?.abortMigration().catch(() => undefined);
    await onB?.stop().catch(() => undefined);
    await g?.destroy();
    for (const d of [storage, dataB]) fs.rmSync(d, { recursive: true, force: true });
    sh('ip', ['link', 'del', BRIDGE]);
  });

  it('hot-adds a NIC, a disk, vCPUs and memory on node A', async () => {
    const bootMem = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
    await source.hotAddNic({ uuid: newUuid(), mac: '52:54:00:6d:00:02', link: BRIDGE });
    await source.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'hot.img', 24 * MiB) });
    await source.resize({ vcpus: 2, memoryMiB: 384 }, NODE);
    seen = await g.console.waitFor(
      (s) => s.nets.length === 2 && s.blks.length === 2 && s.cpusOnline === '0-1' && s.memTotalKiB >= bootMem + 120 * 1024,
      SEEN_TIMEOUT_MS,
      'two NICs, two disks, 2 CPUs, 384 MiB',
    );
  });

  it('refuses a target whose bridge is missing, leaving nothing on the target', async () => {
    const carried: RuntimeData = source.runtime;
    carried.nics[1].link = 'gntnobridge';
    const before = taps();
    await assert.rejects(
      KvmInstance.receive(dataB, carried, { incoming: true, peer: 'A', listenHost: HOST }, { hostPaths: g.hostPaths }),
      /bridge "gntnobridge" does not exist/,
    );
    assert.deepEqual(fs.readdirSync(dataB), [], 'no instance directory on the target');
    assert.deepEqual(taps(), before, 'no tap left on the target');
  });

  it('a target whose start fails after QEMU is up (a wildcard listen address) removes QEMU, taps and files', async () => {
    const before = taps();
    await assert.rejects(
      KvmInstance.receive(dataB, source.runtime, { incoming: true, peer: 'A', listenHost: '0.0.0.0' }, { hostPaths: g.hostPaths }),
      /must be one concrete address of this node, not a wildcard/,
    );
    assert.deepEqual(fs.readdirSync(dataB), []);
    assert.deepEqual(taps(), before);
    assert.equal(source.migration, undefined, 'the source was not touched');
  });

  it('migrates to node B: the guest keeps running and sees the same devices at the same slots', async () => {
    lastTickOnA = g.console.lastTick;
    const { instance: target, uri } = await KvmInstance.receive(dataB, source.runtime, { incoming: true, peer: 'A', listenHost: HOST }, { hostPaths: g.hostPaths });
    onB = target;
    assert.match(uri ?? '', /^tcp:127\.0\.0\.1:\d+$/);
    assert.equal((await target.migrationStatus()).runState, 'inmigrate');
    await source.migrateTo(uri!, 'B');
    assert.equal(await untilFinished(source), 'completed');
    assert.equal((await source.migrationStatus()).runState, 'postmigrate');
    await target.finishIncoming();
    assert.equal(target.migration, undefined);
    await source.release();

    assert.equal(fs.existsSync(source.paths.dir), false, 'no runtime files left on A');
    assert.equal(source.pid, undefined, 'no QEMU left on A');
    assert.equal(taps().length, 2, 'only the two taps of B');
    const onTarget = new GuestConsole(target.paths.consoleLog);
    const after = await onTarget.waitFor((s) => layout(s) === layout(seen), BOOT_TIMEOUT_MS, 'the same layout on B');
    assert.equal(layout(after), layout(seen));
    assert.ok(onTarget.lastTick >= lastTickOnA, `the guest kept counting (tick ${onTarget.lastTick} on B after ${lastTickOnA} on A): it did not reboot`);
    assert.doesNotMatch(fs.readFileSync(target.paths.consoleLog, 'utf8'), /gnt-guest init/, 'no boot on B');
  });

  it('refuses hotplug while a migration runs, and an aborted migration leaves the guest running on the source', async () => {
    const target = onB!;
    const dataA = path.dirname(source.paths.dir);
    const { instance: back, uri } = await KvmInstance.receive(dataA, target.runtime, { incoming: true, peer: 'B', listenHost: HOST }, { hostPaths: g.hostPaths });
    await target.migrateTo(uri!, 'A', { maxBandwidthMiB: 2 });
    await untilState(target, 'active');
    await assert.rejects(target.hotAddNic({ uuid: newUuid(), mac: '52:54:00:6d:00:09' }), /migration to node A in progress/);
    await assert.rejects(back.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'x.img', MiB) }), /migration from node B in progress/);
    await assert.rejects(target.resize({ vcpus: 3 }, NODE), /migration to node A in progress/);

    assert.equal(await back.abortMigration(), 'destroyed');
    assert.equal(fs.existsSync(back.paths.dir), false);
    assert.equal(await target.abortMigration(), 'resumed');
    assert.equal(target.migration, undefined);
    assert.equal((await target.migrationStatus()).runState, 'running');
    assert.equal(taps().length, 2, 'the incoming copy took its taps with it');
    const tick = new GuestConsole(target.paths.consoleLog).lastTick;
    await new GuestConsole(target.paths.consoleLog).waitFor(() => true, SEEN_TIMEOUT_MS, 'a block');
    const onTarget = new GuestConsole(target.paths.consoleLog);
    const deadline = Date.now() + SEEN_TIMEOUT_MS;
    while (onTarget.lastTick <= tick && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.ok(onTarget.lastTick > tick, 'the guest runs on B again');
  });

  it('hot-removes a NIC and hot-adds a disk on B, migrates back to A, and all of it holds', async () => {
    const target = onB!;
    assert.ok(target.pid !== undefined, 'B runs the guest');
    await target.hotRemoveNic(target.runtime.nics[1].uuid);
    await target.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storage, 'hot2.img', 8 * MiB) });
    const cons = new GuestConsole(target.paths.consoleLog);
    const want = await cons.waitFor((s) => s.nets.length === 1 && s.blks.length === 3, SEEN_TIMEOUT_MS, 'one NIC, three disks');
    const tick = cons.lastTick;

    const dataA = path.dirname(source.paths.dir);
    const { instance: back, uri } = await KvmInstance.receive(dataA, target.runtime, { incoming: true, peer: 'B', listenHost: HOST }, { hostPaths: g.hostPaths });
    await target.migrateTo(uri!, 'A');
    assert.equal(await untilFinished(target), 'completed');
    await back.finishIncoming();
    await target.release();
    onB = back; // cleaned up in after()
    assert.equal(fs.existsSync(target.paths.dir), false);
    assert.deepEqual(back.runtime.block_devices.map((d) => d.pci), target.runtime.block_devices.map((d) => d.pci));
    const onA = new GuestConsole(back.paths.consoleLog);
    const got = await onA.waitFor((s) => layout(s) === layout(want), BOOT_TIMEOUT_MS, 'the same layout back on A');
    assert.equal(layout(got), layout(want));
    assert.ok(onA.lastTick >= tick);
    assert.equal(taps().length, 1);
  });
});
