import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { HotplugStepError, InvalidArgumentError, DeviceNotFoundError, PciSlotTakenError } from '../../src/hypervisor/errors';
import type { Monitor, QmpArgs, ExecuteOptions } from '../../src/hypervisor/qmp-client';
import { bootGuest, netInterfaces, newUuid, openFds, sh, slotAddr, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { runtimeTextOf } from '../support/runtime-text';

describe('NIC hotplug against the real guest', function () {
  let g: BootedGuest;

  before(async () => {
    g = await bootGuest();
  });
  after(async () => {
    await g?.destroy();
  });

  const runtimeText = (): string => runtimeTextOf(g.instance.paths.runtimeFile);

  it('hot-adds a NIC the guest sees with the requested MAC, and removes it', async () => {
    await g.instance.monitor();
    const fdsBefore = openFds();
    const uuid = newUuid();
    const nic = await g.instance.hotAddNic({ uuid, mac: '52:54:00:12:34:01' });
    assert.equal(typeof nic.pci, 'number');
    assert.ok(nic.tap && netInterfaces().includes(nic.tap), 'tap exists on the host');
    const seen = await g.console.waitFor(
      (s) => s.nets.some((n) => n.mac === '52:54:00:12:34:01'),
      SEEN_TIMEOUT_MS,
      'the new MAC',
    );
    assert.equal(seen.nets.find((n) => n.mac === '52:54:00:12:34:01')?.pci, slotAddr(nic.pci as number));
    assert.equal(g.instance.runtime.nics[0].uuid, uuid);
    assert.deepEqual(openFds(), fdsBefore, 'no fd left open in this process');

    await g.instance.hotRemoveNic(uuid);
    await g.console.waitFor((s) => !s.nets.some((n) => n.mac === '52:54:00:12:34:01'), SEEN_TIMEOUT_MS, 'the NIC gone');
    assert.equal(g.instance.runtime.nics.length, 0);
    assert.ok(!netInterfaces().includes(nic.tap as string), 'tap is gone');
    assert.deepEqual(openFds(), fdsBefore);
  });

  it('hot-adds a NIC on a bridge, its tap enslaved to it', async () => {
    sh('ip', ['link', 'add', 'gntbr0', 'type', 'bridge']);
    try {
      const uuid = newUuid();
      const nic = await g.instance.hotAddNic({ uuid, mac: '52:54:00:12:34:02', link: 'gntbr0' });
      const master = fs.readlinkSync(`/sys/class/net/${nic.tap}/master`);
      assert.match(master, /gntbr0$/);
      await g.console.waitFor((s) => s.nets.some((n) => n.mac === '52:54:00:12:34:02'), SEEN_TIMEOUT_MS, 'bridged NIC');
      await g.instance.hotRemoveNic(uuid);
    } finally {
      sh('ip', ['link', 'del', 'gntbr0']);
    }
  });

  it('modifies a NIC: new MAC at the same PCI slot', async () => {
    const uuid = newUuid();
    const nic = await g.instance.hotAddNic({ uuid, mac: '52:54:00:12:34:03' });
    await g.console.waitFor((s) => s.nets.some((n) => n.mac === '52:54:00:12:34:03'), SEEN_TIMEOUT_MS, 'first MAC');
    const changed = await g.instance.hotModifyNic(uuid, { mac: '52:54:00:12:34:04' });
    assert.equal(changed.record.pci, nic.pci);
    assert.deepEqual(changed.applied, ['mac=52:54:00:12:34:04: replug']);
    const seen = await g.console.waitFor(
      (s) => s.nets.some((n) => n.mac === '52:54:00:12:34:04') && !s.nets.some((n) => n.mac === '52:54:00:12:34:03'),
      SEEN_TIMEOUT_MS,
      'the new MAC only',
    );
    assert.equal(seen.nets.find((n) => n.mac === '52:54:00:12:34:04')?.pci, slotAddr(nic.pci as number));
    await g.instance.hotRemoveNic(uuid);
  });

  it('a modify right after remove and re-add of the same NIC waits for the new device, not the late event of the old one', async () => {
    // QEMU sends a device's own DEVICE_DELETED at finalize, often after its id
    // is free again: in a loop like this one, the old device's event arrived
    // during the modify's unplug in about one round in six.
    for (let round = 0; round < 12; round++) {
      const uuid = newUuid();
      const nic = { uuid, mac: '52:54:00:12:34:05' };
      await Promise.all([
        g.instance.hotAddNic(nic),
        g.instance.hotRemoveNic(uuid),
        g.instance.hotAddNic(nic),
        g.instance.hotModifyNic(uuid, { mac: '52:54:00:12:34:06' }),
        g.instance.hotRemoveNic(uuid),
      ]);
      assert.deepEqual(g.instance.runtime.nics, [], `round ${round}: no NIC left in the runtime file`);
    }
    await g.console.waitFor((s) => !s.nets.some((n) => n.mac === '52:54:00:12:34:05' || n.mac === '52:54:00:12:34:06'), SEEN_TIMEOUT_MS, 'no NIC left');
  });

  it('a device_add that fails (slot taken behind our back) leaves nothing, and the retry succeeds', async () => {
    // QEMU's QMP socket takes one client at a time: hand it to the faulty instance.
    g.instance.disconnect();
    let intruderSlot = -1;
    let direct: Monitor | undefined;
    // Between our slot choice and our device_add, someone else takes that slot.
    const wrap = (mon: Monitor): Monitor => ({
      hmp: (c) => ((direct = mon), mon.hmp(c)),
      waitForEvent: (m, t, w) => mon.waitForEvent(m, t, w),
      async execute<T>(command: string, args?: QmpArgs, options?: ExecuteOptions): Promise<T> {
        if (command === 'device_add' && intruderSlot < 0 && args?.driver === 'virtio-net-pci') {
          intruderSlot = parseInt(String(args.addr), 16);
          await mon.execute('device_add', { driver: 'virtio-rng-pci', id: 'intruder', bus: 'pci.0', addr: String(args.addr) });
        }
        return mon.execute<T>(command, args, options);
      },
    });
    const { KvmInstance } = await import('../../src/hypervisor/kvm-instance');
    const faulty = KvmInstance.open(g.dataDir, g.instance.name, { wrapMonitor: wrap, hostPaths: g.hostPaths });
    const before = runtimeText();
    const tapsBefore = netInterfaces();
    const fdsBefore = openFds();
    const uuid = newUuid();
    const req = { uuid, mac: '52:54:00:12:34:05' };
    try {
      await assert.rejects(faulty.hotAddNic(req), (err: unknown) => {
        assert.ok(err instanceof HotplugStepError);
        assert.equal(err.step, 'device_add');
        // The tap is made before the intent (prepareHost) and closed when the attach fails.
        assert.deepEqual(err.undone, ['netdev_add']);
        assert.match(err.message, /device_add/);
        return true;
      });
      assert.equal(runtimeText(), before, 'runtime file unchanged');
      assert.deepEqual(netInterfaces(), tapsBefore, 'no tap left');
      const fdsNow = openFds().filter((fd) => !fdsBefore.includes(fd));
      assert.ok(fdsNow.length <= 1, `no fd leaked (new: ${fdsNow.join(',')}; one is the wrapper's monitor)`);
      const networks = await (direct as Monitor).hmp('info network');
      assert.doesNotMatch(networks, /nic-/, `no netdev left in QEMU: ${networks}`);
      // the same request again
      const nic = await faulty.hotAddNic(req);
      assert.notEqual(nic.pci, intruderSlot);
      await g.console.waitFor((s) => s.nets.some((n) => n.mac === '52:54:00:12:34:05'), SEEN_TIMEOUT_MS, 'retried NIC');
      await faulty.hotRemoveNic(uuid);
    } finally {
      await direct?.execute('device_del', { id: 'intruder' }).catch(() => undefined);
      faulty.disconnect();
    }
    // the shared instance re-reads nothing: its runtime view must still be empty
    assert.equal(g.instance.runtime.nics.length, 0);
  });

  describe('bad input is refused with a clear error and changes nothing', () => {
    let before: string;
    let taps: string[];
    beforeEach(() => {
      before = runtimeText();
      taps = netInterfaces();
    });
    afterEach(() => {
      assert.equal(runtimeText(), before, 'runtime file unchanged');
      assert.deepEqual(netInterfaces(), taps, 'no tap created');
    });

    it('an invalid MAC', async () => {
      await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:zz:00:01' }), (e: unknown) =>
        e instanceof InvalidArgumentError && /MAC address "52:54:00:zz:00:01"/.test(e.message),
      );
    });

    it('a bridge that does not exist', async () => {
      await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:00:00:09', link: 'nosuchbr' }), /bridge "nosuchbr" does not exist/);
    });

    it('a PCI slot that is taken', async () => {
      await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:00:00:0a', slot: 1 }), (e: unknown) =>
        e instanceof PciSlotTakenError && /PCI slot 1 of instance .* is taken/.test(e.message),
      );
    });

    it('a device id over 32 characters', async () => {
      await assert.rejects(
        g.instance.hotAddNic({ uuid: 'averyveryveryverylonguuidpartwithoutdashes', mac: '52:54:00:00:00:0b' }),
        /device id "nic-averyvery.*" is not valid for QEMU: it is \d+ characters long \(at most 32\)/,
      );
    });

    it('removing a NIC the runtime file does not know', async () => {
      await assert.rejects(g.instance.hotRemoveNic(newUuid()), (e: unknown) => e instanceof DeviceNotFoundError && /has no NIC with uuid/.test(e.message));
    });
  });
});
