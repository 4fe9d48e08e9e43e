/**
 * Live migration (hypervisor layer, two data directories of this machine, as
 * migration.test.ts) of an instance whose NIC is link-down, rate-limited
 * and multi-queue, plus one e1000 NIC: the target ends with the recorded
 * link state, its taps carry the same queues, bridge and limit, and the
 * guest sees every NIC as before, at the same addresses.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { GuestConsole, type GuestState } from '../../src/hypervisor/guest-console';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import { readTapRate } from '../../src/hypervisor/tap-rate';
import { bootGuest, newUuid, sh, slotAddr, tempDir, BOOT_TIMEOUT_MS, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';
import { untilFinished } from '../support/migration';

const BRIDGE = 'gntnicmig0';
const HOST = '127.0.0.1';
const NODE = { freeMemoryMiB: 16384, cpus: 8 };
const MULTI_QUEUE_TAP = '0x5102'; // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE

const tunFlags = (tap: string): string => fs.readFileSync(`/sys/class/net/${tap}/tun_flags`, 'utf8').trim();
const masterOf = (tap: string): string => fs.readlinkSync(`/sys/class/net/${tap}/master`).split('/').pop() as string;
const nets = (s: GuestState): string => JSON.stringify(s.nets.map((n) => `${n.mac}@${n.pci} q${n.queues} c${n.carrier}`).sort());


describe('live migration of a link-down, rate-limited, multi-queue NIC (real guest)', function () {
  let g: BootedGuest;
  let dataB: string;
  let onB: KvmInstance | undefined;

  before(async () => {
    sh('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    dataB = tempDir('nodeB');
    g = await bootGuest();
  });
  after(async () => {
    await onB?.abortMigration().catch(() => undefined);
    await onB?.stop().catch(() => undefined);
    await g?.destroy();
    fs.rmSync(dataB, { recursive: true, force: true });
    sh('ip', ['link', 'del', BRIDGE]);
  });

  it('keeps link state, rate, queues, model and every address', async () => {
    const source = g.instance;
    await source.resize({ vcpus: 2 }, NODE);
    await g.console.waitFor((s) => s.cpusOnline === '0-1', SEEN_TIMEOUT_MS, 'two CPUs online');
    const mq = { uuid: newUuid(), mac: '52:54:00:1f:00:01', link: BRIDGE, queues: 2 };
    const e1000 = { uuid: newUuid(), mac: '52:54:00:1f:00:02', model: 'e1000' as const };
    await source.hotAddNic(mq);
    await source.hotAddNic(e1000);
    await source.hotModifyNic(mq.uuid, { link_state: 'down', rate_mbit: 10 });
    const seen = await g.console.waitFor(
      (s) => s.nets.find((n) => n.mac === mq.mac)?.carrier === '0' && s.nets.find((n) => n.mac === mq.mac)?.queues === 2,
      SEEN_TIMEOUT_MS,
      'the multi-queue NIC with its link down',
    );
    const e1000Addr = slotAddr(source.runtime.nics[1].pci as number);
    assert.equal(seen.pci.find((p) => p.addr === e1000Addr)?.vendorDevice, '8086:100e');

    const { instance: target, uri } = await KvmInstance.receive(dataB, source.runtime, { incoming: true, peer: 'A', listenHost: HOST }, { hostPaths: g.hostPaths });
    onB = target;
    const [tapB] = target.runtime.nics.map((n) => n.tap as string);
    assert.equal(tunFlags(tapB), MULTI_QUEUE_TAP, 'the target tap has the queues');
    assert.equal(readTapRate(tapB), 10, 'the target tap has the limit');
    assert.equal(masterOf(tapB), BRIDGE);
    await source.migrateTo(uri as string, 'B');
    assert.equal(await untilFinished(source), 'completed');
    await target.finishIncoming();
    await source.release();

    const strip = (n: object): object => ({ ...n, tap: undefined });
    assert.deepEqual(target.runtime.nics.map(strip), source.runtime.nics.map(strip), 'the records moved unchanged');
    assert.equal(target.runtime.nics[0].link_state, 'down');
    const onTarget = new GuestConsole(target.paths.consoleLog);
    const after = await onTarget.waitFor((s) => nets(s) === nets(seen), BOOT_TIMEOUT_MS, 'the same NICs on B');
    assert.equal(nets(after), nets(seen));
    assert.equal(after.pci.find((p) => p.addr === e1000Addr)?.vendorDevice, '8086:100e');
    assert.doesNotMatch(fs.readFileSync(target.paths.consoleLog, 'utf8'), /gnt-guest init/, 'no boot on B');

    // The link state is QEMU's on B, not only the record's: up again live.
    const up = await target.hotModifyNic(mq.uuid, { link_state: 'up' });
    assert.deepEqual(up.applied, ['link_state=up: live']);
    await onTarget.waitFor((s) => s.nets.find((n) => n.mac === mq.mac)?.carrier === '1', SEEN_TIMEOUT_MS, 'carrier up on B');
  });
});
