import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bootGuest, newUuid, slotAddr, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

const MiB = 1024 * 1024;
const QEMU_USER = 'gnt-qemu';
const NODE = { freeMemoryMiB: 16384, cpus: 8 };

function uidOf(user: string): number {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`user ${user} missing: run scripts/setup-host.sh`);
  return Number(line.split(':')[2]);
}

describe('virtio-pmem against the real guest (QEMU unprivileged)', function () {
  let g: BootedGuest;
  let storage: string;
  let uuid: string;
  let slot: number;

  before(async () => {
    storage = tempDir('pmem-storage');
    fs.chmodSync(storage, 0o755);
    // 256 MiB memory, maxmem 1024 MiB: 768 MiB of device memory room.
    g = await bootGuest({ storageDir: storage, hvparams: { security_model: 'user', security_domain: QEMU_USER } });
  });
  after(async () => {
    await g?.destroy();
    fs.rmSync(storage, { recursive: true, force: true });
  });

  /** What the node's handler does: the file is made in the instance's queue once the intent is recorded. */
  function pmemRequest(sizeMiB: number): { req: { uuid: string; path: string; created: true; sizeMiB: number }; prepare: () => () => void } {
    const id = newUuid();
    const file = path.join(storage, `${id}.img`);
    return {
      req: { uuid: id, path: file, created: true, sizeMiB },
      prepare: () => {
        fs.writeFileSync(file, '', { mode: 0o600 });
        fs.truncateSync(file, sizeMiB * MiB);
        return () => fs.rmSync(file, { force: true });
      },
    };
  }

  it('hot-adds a 128 MiB pmem device the guest sees as a pmem block device of that size, its file given to the QEMU user', async () => {
    const { req, prepare } = pmemRequest(128);
    const rec = await g.instance.hotAddPmem(req, prepare);
    uuid = rec.uuid;
    slot = rec.pci as number;
    const seen = await g.console.waitFor((s) => s.blks.some((b) => b.name.startsWith('pmem')), SEEN_TIMEOUT_MS, 'a pmem device');
    assert.equal(seen.blks.find((b) => b.name.startsWith('pmem'))?.sectors, (128 * MiB) / 512);
    assert.ok(seen.pci.some((p) => p.addr === slotAddr(slot)), 'at its recorded PCI slot');
    assert.equal(fs.statSync(req.path).uid, uidOf(QEMU_USER));
    const mon = await g.instance.monitor();
    const sets = await mon.execute<Array<{ fds: Array<{ opaque?: string }> }>>('query-fdsets');
    assert.equal(sets.length, 0, 'no fdset left: the backend holds its own open');
  });

  it('refuses a hot remove up front with the reason, and the device stays', async () => {
    await assert.rejects(g.instance.hotRemoveDisk(uuid), /cannot be removed live: QEMU cannot hot-unplug a virtio-pmem device/);
    const rec = (g.instance.runtime.pmem_devices ?? []).find((p) => p.uuid === uuid);
    assert.ok(rec && !rec.state, 'still recorded, settled');
  });

  it('counts pmem with DIMMs against maxmem: a DIMM grow and a pmem add that do not fit are refused, naming the numbers', async () => {
    await assert.rejects(g.instance.resize({ memoryMiB: 1024 }, NODE), /maxmem 1024 MiB, and its pmem devices hold 128 MiB of it: memory can grow to at most 896 MiB/);
    const big = pmemRequest(768);
    await assert.rejects(g.instance.hotAddPmem(big.req, big.prepare), /768 MiB of memory device room .*pmem 128 MiB, so 640 MiB are left and a 768 MiB pmem device does not fit/);
    assert.ok(!fs.existsSync(big.req.path), 'nothing made for the refused device');
    // and a DIMM that fits beside it, which the guest sees (placed after the pmem device), after which pmem sees the DIMM's room as used
    const memBefore = (await g.console.waitFor(() => true, SEEN_TIMEOUT_MS, 'a state')).memTotalKiB;
    await g.instance.resize({ memoryMiB: 256 + 512 }, NODE);
    await g.console.waitFor((s) => s.memTotalKiB >= memBefore + 500 * 1024, SEEN_TIMEOUT_MS, 'MemTotal grown by the 512 MiB of DIMMs');
    const after = pmemRequest(256);
    await assert.rejects(g.instance.hotAddPmem(after.req, after.prepare), /DIMMs hold 512 MiB, virtio-mem 0 MiB, pmem 128 MiB, so 128 MiB are left/);
  });

  it('refuses sizes that are not a multiple of 128 MiB (the guest memory block, so later DIMMs stay aligned)', async () => {
    const odd = pmemRequest(3);
    await assert.rejects(g.instance.hotAddPmem(odd.req, odd.prepare), /whole multiple of 128 MiB .*, not 3 MiB/);
    const small = pmemRequest(64);
    await assert.rejects(g.instance.hotAddPmem(small.req, small.prepare), /whole multiple of 128 MiB .*, not 64 MiB/);
  });

  it('keeps the pmem device at its slot across stop and start', async function () {
    this.timeout(300_000);
    await g.restart();
    const seen = await g.console.waitFor((s) => s.blks.some((b) => b.name.startsWith('pmem')), BOOT_TIMEOUT_MS, 'the pmem device after the restart');
    assert.equal(seen.blks.find((b) => b.name.startsWith('pmem'))?.sectors, (128 * MiB) / 512);
    assert.ok(seen.pci.some((p) => p.addr === slotAddr(slot)));
  });
});
