/**
 * Live NIC changes against the real guest: link state (set_link), bridge
 * move and rate limit (tc) without a replug, a model change by a replug at
 * the same slot, multi-queue NICs; and that the records hold after stop and
 * start. Bridges live in the test's network namespace (scripts/in-netns.sh).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { HotplugStepError } from '../../src/hypervisor/errors';
import type { ExecuteOptions, Monitor, QmpArgs } from '../../src/hypervisor/qmp-client';
import type { NicRecord } from '../../src/hypervisor/runtime-file';
import { readTapRate } from '../../src/hypervisor/tap-rate';
import { bootGuest, newUuid, sh, slotAddr, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { runtimeOf, runtimeTextOf } from '../support/runtime-text';

const BR_A = 'gntlive0';
const BR_B = 'gntlive1';
const NODE = { freeMemoryMiB: 16384, cpus: 8 };

const masterOf = (tap: string): string | undefined => {
  try {
    return fs.readlinkSync(`/sys/class/net/${tap}/master`).split('/').pop();
  } catch {
    return undefined;
  }
};
const netOf = (s: GuestState, mac: string): GuestState['nets'][number] | undefined => s.nets.find((n) => n.mac === mac);
const pciLine = (s: GuestState, addr: string): string | undefined => s.pci.find((p) => p.addr === addr)?.vendorDevice;

describe('live NIC changes against the real guest', function () {
  let g: BootedGuest;
  const nicOf = (uuid: string): NicRecord => g.instance.runtime.nics.find((n) => n.uuid === uuid) as NicRecord;

  before(async () => {
    sh('ip', ['link', 'add', BR_A, 'type', 'bridge']);
    sh('ip', ['link', 'add', BR_B, 'type', 'bridge']);
    g = await bootGuest();
    await g.instance.resize({ vcpus: 2 }, NODE); // two online CPUs: room for two queue pairs
    await g.console.waitFor((s) => s.cpusOnline === '0-1', SEEN_TIMEOUT_MS, 'two CPUs online');
  });
  after(async () => {
    await g?.destroy();
    for (const br of [BR_A, BR_B]) sh('ip', ['link', 'del', br]);
  });

  it('link_state=down and up: the guest sees the carrier go and come back at the same PCI address', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:01';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A });
    const addr = slotAddr(nic.pci as number);
    await g.console.waitFor((s) => netOf(s, mac)?.carrier === '1', SEEN_TIMEOUT_MS, 'carrier up');
    const down = await g.instance.hotModifyNic(uuid, { link_state: 'down' });
    assert.deepEqual(down.applied, ['link_state=down: live']);
    assert.equal(nicOf(uuid).link_state, 'down');
    const off = await g.console.waitFor((s) => netOf(s, mac)?.carrier === '0', SEEN_TIMEOUT_MS, 'carrier down');
    assert.equal(netOf(off, mac)?.pci, addr);
    const up = await g.instance.hotModifyNic(uuid, { link_state: 'up' });
    assert.deepEqual(up.applied, ['link_state=up: live']);
    assert.equal(nicOf(uuid).link_state, undefined, 'up is the default, not written');
    const on = await g.console.waitFor((s) => netOf(s, mac)?.carrier === '1', SEEN_TIMEOUT_MS, 'carrier up again');
    assert.equal(netOf(on, mac)?.pci, addr);
    await g.instance.hotRemoveNic(uuid);
  });

  it('a NIC hot-added with link_state=down and a rate comes up without carrier and with its limit', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:0b';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A, link_state: 'down', rate_mbit: 5 });
    assert.deepEqual([nicOf(uuid).link_state, nicOf(uuid).rate_mbit], ['down', 5]);
    assert.equal(readTapRate(nic.tap as string), 5);
    // The guest reports the NIC at once, before its init brought the interface up (carrier "-"): wait until it is up.
    const s = await g.console.waitFor((st) => !!netOf(st, mac) && netOf(st, mac)?.carrier !== '-', SEEN_TIMEOUT_MS, 'the NIC, up in the guest');
    assert.equal(netOf(s, mac)?.carrier, '0', 'no carrier from the start');
    await g.instance.hotRemoveNic(uuid);
  });

  it('link=BR2 moves the tap to the other bridge; the guest keeps the same device', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:02';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A });
    const tap = nic.tap as string;
    assert.equal(masterOf(tap), BR_A);
    const before = await g.console.waitFor((s) => !!netOf(s, mac), SEEN_TIMEOUT_MS, 'the NIC');
    const r = await g.instance.hotModifyNic(uuid, { link: BR_B });
    assert.deepEqual(r.applied, [`link=${BR_B}: live`]);
    assert.equal(r.record.tap, tap, 'the same tap');
    assert.equal(masterOf(tap), BR_B, 'the tap is on the new bridge');
    assert.equal(nicOf(uuid).link, BR_B);
    const after = await g.console.waitFor((s) => s.seq > before.seq + 1, SEEN_TIMEOUT_MS, 'two more state blocks');
    assert.equal(netOf(after, mac)?.name, netOf(before, mac)?.name, 'the guest interface was not replugged (same name)');
    assert.equal(netOf(after, mac)?.pci, netOf(before, mac)?.pci);
    assert.deepEqual(after.pci, before.pci, 'the guest PCI bus is unchanged');

    await assert.rejects(g.instance.hotModifyNic(uuid, { link: 'gntnobr9' }), /bridge "gntnobr9" does not exist/);
    assert.equal(masterOf(tap), BR_B, 'a refused move leaves the tap where it was');
    assert.equal(nicOf(uuid).link, BR_B);
    await g.instance.hotRemoveNic(uuid);
  });

  it('rate=MBIT puts a tbf limit on the tap (tc qdisc show), rate=0 removes it; bad rates are refused', async () => {
    const uuid = newUuid();
    const nic = await g.instance.hotAddNic({ uuid, mac: '52:54:00:1e:00:03', link: BR_A });
    const tap = nic.tap as string;
    const r = await g.instance.hotModifyNic(uuid, { rate_mbit: 10 });
    assert.deepEqual(r.applied, ['rate=10: live']);
    assert.match(sh('tc', ['qdisc', 'show', 'dev', tap]), /qdisc tbf .* rate 10Mbit/);
    assert.equal(nicOf(uuid).rate_mbit, 10);
    await assert.rejects(g.instance.hotModifyNic(uuid, { rate_mbit: -3 }), /rate must be a whole number of Mbit\/s/);
    await assert.rejects(g.instance.hotModifyNic(uuid, { rate_mbit: 10 }), /nothing changes/);
    assert.equal(readTapRate(tap), 10, 'a refused change leaves the limit');
    await g.instance.hotModifyNic(uuid, { rate_mbit: 0 });
    assert.doesNotMatch(sh('tc', ['qdisc', 'show', 'dev', tap]), /tbf/);
    assert.equal(nicOf(uuid).rate_mbit, undefined);
    await g.instance.hotRemoveNic(uuid);
  });

  it('several live changes at once are applied live; with a MAC change all go by the replug', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:04';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A });
    const live = await g.instance.hotModifyNic(uuid, { link: BR_B, rate_mbit: 20, link_state: 'down' });
    assert.deepEqual(live.applied, [`link=${BR_B}: live`, 'rate=20: live', 'link_state=down: live']);
    assert.equal(live.record.tap, nic.tap);
    const mac2 = '52:54:00:1e:00:05';
    const replug = await g.instance.hotModifyNic(uuid, { mac: mac2, link: BR_A, link_state: 'up' });
    assert.deepEqual(replug.applied, [`mac=${mac2}: replug`, `link=${BR_A}: replug`, 'link_state=up: replug']);
    assert.equal(replug.record.pci, nic.pci, 'the same slot');
    const tap = replug.record.tap as string;
    assert.equal(masterOf(tap), BR_A);
    assert.equal(readTapRate(tap), 20, 'the new tap has the limit');
    const s = await g.console.waitFor((st) => netOf(st, mac2)?.carrier === '1' && !netOf(st, mac), SEEN_TIMEOUT_MS, 'the new MAC, link up');
    assert.equal(netOf(s, mac2)?.pci, slotAddr(nic.pci as number));
    await g.instance.hotRemoveNic(uuid);
  });

  it('a live change QEMU refuses undoes the ones before it: bridge, limit, record and guest as they were', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:0a';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A });
    const tap = nic.tap as string;
    await g.console.waitFor((s) => netOf(s, mac)?.carrier === '1', SEEN_TIMEOUT_MS, 'carrier up');
    // QEMU's socket takes one client: the faulty instance gets it. Its set_link names no device, so QEMU really refuses it.
    g.instance.disconnect();
    const wrap = (mon: Monitor): Monitor => ({
      hmp: (c) => mon.hmp(c),
      waitForEvent: (m, t, w) => mon.waitForEvent(m, t, w),
      execute: <T>(command: string, args?: QmpArgs, options?: ExecuteOptions): Promise<T> =>
        mon.execute<T>(command, command === 'set_link' && args?.up === false ? { ...args, name: 'no-such-nic' } : args, options),
    });
    const faulty = KvmInstance.open(g.dataDir, g.instance.name, { wrapMonitor: wrap, hostPaths: g.hostPaths });
    const before = runtimeTextOf(g.instance.paths.runtimeFile);
    try {
      await assert.rejects(faulty.hotModifyNic(uuid, { link: BR_B, rate_mbit: 25, link_state: 'down' }), (err: unknown) => {
        assert.ok(err instanceof HotplugStepError, String(err));
        assert.equal(err.step, 'set_link');
        assert.deepEqual(err.undone, ['rate', 'bridge']);
        return true;
      });
    } finally {
      faulty.disconnect();
    }
    const recorded = runtimeOf(g.instance.paths.runtimeFile).nics.find((n) => n.uuid === uuid);
    const was = (JSON.parse(before) as { nics: NicRecord[] }).nics.find((n) => n.uuid === uuid);
    assert.deepEqual(recorded, was, 'the NIC record is unchanged');
    assert.equal(masterOf(tap), BR_A, 'the tap is back on its bridge');
    assert.equal(readTapRate(tap), 0, 'no limit left');
    const s = await g.console.waitFor((st) => st.seq > 0, SEEN_TIMEOUT_MS, 'a state block');
    assert.equal(netOf(s, mac)?.carrier, '1', 'the guest still has its link');
    await g.instance.hotRemoveNic(uuid);
  });

  it('model=e1000 replugs at the same slot: the guest sees 8086:100e there; back to virtio', async () => {
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:06';
    const nic = await g.instance.hotAddNic({ uuid, mac });
    const addr = slotAddr(nic.pci as number);
    await g.console.waitFor((s) => pciLine(s, addr) === '1af4:1000', SEEN_TIMEOUT_MS, 'virtio-net at its slot');
    const r = await g.instance.hotModifyNic(uuid, { model: 'e1000' });
    assert.deepEqual(r.applied, ['model=e1000: replug']);
    assert.equal(r.record.pci, nic.pci);
    assert.equal(nicOf(uuid).model, 'e1000');
    await g.console.waitFor((s) => pciLine(s, addr) === '8086:100e', SEEN_TIMEOUT_MS, 'an e1000 at the same address');
    const rtl = await g.instance.hotModifyNic(uuid, { model: 'rtl8139' });
    assert.deepEqual(rtl.applied, ['model=rtl8139: replug']);
    await g.console.waitFor((s) => pciLine(s, addr) === '10ec:8139', SEEN_TIMEOUT_MS, 'an rtl8139 at the same address');
    await g.instance.hotModifyNic(uuid, { model: 'virtio' });
    await g.console.waitFor((s) => pciLine(s, addr) === '1af4:1000' && !!netOf(s, mac), SEEN_TIMEOUT_MS, 'virtio again');
    await g.instance.hotRemoveNic(uuid);
  });

  it('queues=2: a multi-queue tap, the guest sees two queues; bad counts are refused', async () => {
    await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:1e:00:07', queues: 9 }), /queues must be a whole number from 1 to 8/);
    await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:1e:00:07', queues: 5 }), /more than the instance's 4 maximum vCPUs/);
    await assert.rejects(g.instance.hotAddNic({ uuid: newUuid(), mac: '52:54:00:1e:00:07', queues: 2, model: 'e1000' }), /only virtio NICs have more than one queue/);
    assert.equal(g.instance.runtime.nics.length, 0, 'refusals record nothing');
    const uuid = newUuid();
    const mac = '52:54:00:1e:00:07';
    const nic = await g.instance.hotAddNic({ uuid, mac, link: BR_A, queues: 2 });
    assert.equal(nicOf(uuid).queues, 2);
    const s = await g.console.waitFor((st) => netOf(st, mac)?.queues === 2, SEEN_TIMEOUT_MS, 'two rx queues');
    assert.equal(netOf(s, mac)?.pci, slotAddr(nic.pci as number));
    assert.equal(sh('cat', [`/sys/class/net/${nic.tap}/tun_flags`]).trim(), '0x5102', 'IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE');
    await g.instance.hotRemoveNic(uuid);
    await g.console.waitFor((st) => !netOf(st, mac), SEEN_TIMEOUT_MS, 'the NIC gone');
  });

  it('stop and start keep link down, rate, queues and model', async () => {
    const a = { uuid: newUuid(), mac: '52:54:00:1e:00:08', link: BR_A, queues: 2 };
    const b = { uuid: newUuid(), mac: '52:54:00:1e:00:09', link: BR_B };
    await g.instance.hotAddNic(a);
    await g.instance.hotAddNic(b);
    await g.instance.hotModifyNic(a.uuid, { link_state: 'down', rate_mbit: 30 });
    await g.instance.hotModifyNic(b.uuid, { model: 'e1000' });
    const recorded = g.instance.runtime.nics.map((n) => ({ ...n, tap: undefined }));
    await g.instance.stop();
    const reopened = KvmInstance.open(g.dataDir, g.instance.name, { hostPaths: g.hostPaths, unplugTimeoutMs: 20_000 });
    g.instance = reopened;
    await reopened.start();
    assert.deepEqual(reopened.runtime.nics.map((n) => ({ ...n, tap: undefined })), recorded);
    const cons = new GuestConsole(reopened.paths.consoleLog);
    await cons.waitFor((s) => s.cpusOnline !== '', BOOT_TIMEOUT_MS, 'the guest back');
    const nicA = nicOf(a.uuid);
    const nicB = nicOf(b.uuid);
    assert.equal(readTapRate(nicA.tap as string), 30);
    assert.equal(masterOf(nicA.tap as string), BR_A);
    assert.equal(masterOf(nicB.tap as string), BR_B);
    await reopened.resize({ vcpus: 2 }, NODE).catch(() => undefined);
    const s = await cons.waitFor(
      (st) => netOf(st, a.mac)?.carrier === '0' && pciLine(st, slotAddr(nicB.pci as number)) === '8086:100e',
      BOOT_TIMEOUT_MS,
      'NIC a link down, NIC b an e1000',
    );
    assert.equal(netOf(s, a.mac)?.pci, slotAddr(nicA.pci as number));
    assert.equal(sh('cat', [`/sys/class/net/${nicA.tap}/tun_flags`]).trim(), '0x5102', 'NIC a has its multi-queue tap');
    await reopened.hotRemoveNic(a.uuid);
    await reopened.hotRemoveNic(b.uuid);
  });
});
