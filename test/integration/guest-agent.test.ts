/**
 * The guest agent channel and client against the real test guest, which runs
 * Debian's qemu-guest-agent: the agent sees hot-added NICs, disks, vCPUs
 * and memory; waiting for the guest onlines vCPUs and memory the guest left
 * offline; without an agent the wait says so at once.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { AgentNotAnsweringError, GuestAgent } from '../../src/hypervisor/guest-agent';
import { GuestAgentCalls } from '../../src/hypervisor/guest-agent-calls';
import { agentChannelSlot } from '../../src/hypervisor/guest-agent-channel';
import { waitForGuestDevice } from '../../src/hypervisor/guest-wait';
import { runtimeOf } from '../support/runtime-text';
import { bootGuest, makeDiskFile, newUuid, slotAddr, SEEN_TIMEOUT_MS, type BootedGuest } from '../support/guest';

const NODE = { freeMemoryMiB: 4096, cpus: 4 };
const AGENT_UP_MS = 60_000;

async function agentOf(g: BootedGuest): Promise<GuestAgentCalls> {
  const calls = new GuestAgentCalls(new GuestAgent(g.instance.paths.agentSocket));
  const deadline = Date.now() + AGENT_UP_MS;
  for (;;) {
    try {
      await calls.info();
      return calls;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

describe('guest agent (real guest with qemu-ga)', function () {
  this.timeout(240_000);

  describe('a guest that leaves vCPUs and memory offline', () => {
    let g: BootedGuest;
    let calls: GuestAgentCalls;
    before(async () => {
      g = await bootGuest({ kernelArgs: 'gnt.cpuonline=0 gnt.memonline=offline memory_hotplug.online_policy=auto-movable' });
      calls = await agentOf(g);
    });
    after(async () => {
      calls?.agent.close();
      await g?.destroy();
    });

    it('runs the channel at the reserved slot, recorded in the runtime file, and the guest lists it', async () => {
      const rt = runtimeOf(g.instance.paths.runtimeFile);
      assert.equal(rt.agent_channel, true);
      const st = fs.statSync(g.instance.paths.agentSocket);
      assert.ok(st.isSocket());
      // Connecting needs write permission on the socket: only its owner, root, has it.
      assert.equal(st.uid, 0);
      assert.equal(st.mode & 0o022, 0, `socket mode ${(st.mode & 0o777).toString(8)}`);
      const state = await g.console.waitFor((s) => s.pci.some((p) => p.addr === slotAddr(agentChannelSlot('pc'))), SEEN_TIMEOUT_MS, 'the virtio-serial function');
      assert.match(state.pci.find((p) => p.addr === slotAddr(3))?.vendorDevice ?? '', /^1af4:10(03|43)$/);
    });

    it('answers info, osinfo, interfaces and vCPUs', async () => {
      const info = await calls.info();
      assert.ok(info.commands.includes('guest-network-get-interfaces'), info.commands.join(' '));
      const os = await calls.osInfo();
      assert.match(os.kernelRelease, /cloud-amd64/);
      assert.ok((await calls.interfaces()).some((i) => i.name === 'lo'));
      assert.deepEqual((await calls.vcpus()).map((c) => [c.logicalId, c.online]), [[0, true]]);
    });

    it('sees a hot-added NIC by MAC, and no more once it is removed', async () => {
      const uuid = newUuid();
      const mac = '52:54:00:a9:00:01';
      await g.instance.hotAddNic({ uuid, mac });
      const r = await waitForGuestDevice(calls, { kind: 'nic', mac }, SEEN_TIMEOUT_MS);
      assert.equal(r.seen, true, r.message);
      assert.match(r.message, /reports NIC 52:54:00:a9:00:01 \(interface eth\d\)/);
      await g.instance.hotRemoveNic(uuid);
      const deadline = Date.now() + SEEN_TIMEOUT_MS;
      while ((await calls.interfaces()).some((i) => i.mac === mac)) {
        assert.ok(Date.now() < deadline, 'the agent still lists the removed NIC');
        await new Promise((res) => setTimeout(res, 200));
      }
    });

    it('sees a hot-added disk at its PCI address', async () => {
      const file = makeDiskFile(g.dataDir, 'agent-disk.img', 16 << 20);
      const disk = await g.instance.hotAddDisk({ uuid: newUuid(), path: file });
      const r = await waitForGuestDevice(calls, { kind: 'disk', pci: slotAddr(disk.pci as number) }, SEEN_TIMEOUT_MS);
      assert.equal(r.seen, true, r.message);
      assert.ok((await calls.disks()).some((d) => d.pci === slotAddr(disk.pci as number) && d.busType === 'virtio'));
    });

    it('onlines a hot-added vCPU through the agent when the guest left it offline', async () => {
      await g.instance.resize({ vcpus: 2 }, NODE);
      await g.console.waitFor((s) => s.cpusPresent === '0-1', SEEN_TIMEOUT_MS, 'cpu 1 present');
      assert.equal((await g.console.waitFor((s) => s.cpusPresent === '0-1', 1000, 'cpu 1 present')).cpusOnline, '0');
      const r = await waitForGuestDevice(calls, { kind: 'vcpus', online: 2 }, SEEN_TIMEOUT_MS);
      assert.equal(r.seen, true, r.message);
      assert.equal(r.onlinedVcpus, 1);
      await g.console.waitFor((s) => s.cpusOnline === '0-1', SEEN_TIMEOUT_MS, 'cpu 1 online in the guest');
    });

    it('onlines hot-added memory through the agent', async () => {
      const before = (await g.console.waitFor(() => true, 1000, 'a state')).memTotalKiB;
      await g.instance.resize({ memoryMiB: 384 }, NODE);
      const deadline = Date.now() + SEEN_TIMEOUT_MS;
      while (!(await calls.memoryBlocks()).some((b) => !b.online)) {
        assert.ok(Date.now() < deadline, 'the agent lists no offline block after the DIMM add');
        await new Promise((res) => setTimeout(res, 200));
      }
      const r = await waitForGuestDevice(calls, { kind: 'memory' }, SEEN_TIMEOUT_MS);
      assert.equal(r.seen, true, r.message);
      assert.ok(r.onlinedMemoryBlocks >= 1, r.message);
      await g.console.waitFor((s) => s.memTotalKiB >= before + 100 * 1024, SEEN_TIMEOUT_MS, 'MemTotal grown by the DIMM');
    });

    it('keeps the channel across a restart', async () => {
      calls.agent.close();
      await g.restart();
      calls = await agentOf(g);
      assert.deepEqual((await calls.vcpus()).filter((c) => c.online).length >= 1, true);
    });
  });

  describe('a guest without an agent (gnt.qga=0)', () => {
    let g: BootedGuest;
    before(async () => {
      g = await bootGuest({ kernelArgs: 'gnt.qga=0' });
    });
    after(async () => {
      await g?.destroy();
    });

    it('reports no agent instead of waiting', async () => {
      const calls = new GuestAgentCalls(new GuestAgent(g.instance.paths.agentSocket, { syncTimeoutMs: 1500 }));
      try {
        await assert.rejects(calls.info(), AgentNotAnsweringError);
        const t0 = Date.now();
        const r = await waitForGuestDevice(calls, { kind: 'nic', mac: '52:54:00:a9:00:02' }, 60_000);
        assert.equal(r.noAgent, true);
        assert.equal(r.seen, false);
        assert.match(r.message, /no guest agent answers on .*qga\.sock.*not waiting for the guest/);
        assert.ok(Date.now() - t0 < 30_000, `the wait took ${Date.now() - t0} ms`);
      } finally {
        calls.agent.close();
      }
    });
  });
});
