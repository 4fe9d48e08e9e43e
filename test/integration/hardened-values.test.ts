/**
 * Issue 11, values by whitelist and QEMU unprivileged by default, through a
 * real gnt-noded over gRPC: hvparams and MACs refused at InstanceStart and
 * HotplugDevice with the master's words, forged carried runtime files
 * refused at InstanceReceive with nothing changed, and QEMU running as an
 * unprivileged uid under seccomp with no capabilities, hotplug still working.
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { checkMac, UsageError } from '../../src/master/validate';
import type { InstanceSpec } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, slotAddr, tempDir } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';
import { rejectsWith } from '../support/grpc-assert';
import { runtimeTextOf } from '../support/runtime-text';

const MiB = 1024 * 1024;
const POOL = { start: 40100, end: 40109 };

export interface QemuProcessView {
  uid: number;
  seccomp: number;
  capEff: string;
}

/** Uid, seccomp mode and effective capabilities of a process, from /proc/PID/status. */
export function processView(pid: number): QemuProcessView {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string): string => new RegExp(`^${k}:\\s+(\\S+)`, 'm').exec(status)?.[1] ?? '';
  return { uid: Number(field('Uid')), seccomp: Number(field('Seccomp')), capEff: field('CapEff') };
}

export function uidOf(user: string): number {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`user ${user} missing: run scripts/setup-host.sh`);
  return Number(line.split(':')[2]);
}

/** The master's words for a MAC it refuses. */
function masterMacError(mac: string): string {
  try {
    checkMac(mac);
  } catch (err) {
    assert.ok(err instanceof UsageError);
    return err.message;
  }
  throw new Error(`the master accepts ${mac}`);
}

interface TestNode {
  noded: Noded;
  client: NodeDaemonClient;
  dataDir: string;
  storageDir: string;
  args: string[];
  port: number;
}

describe('hardened values and unprivileged QEMU through gnt-noded', function () {
  this.timeout(300_000);
  let root: string;
  let pki: TestPki;
  let plain: TestNode;
  let pooled: TestNode;
  let guest: GuestConsole;
  const name = `hv-${newUuid().slice(0, 8)}`;
  const { kernel, initrd } = guestFiles();

  const baseSpec = (n: string, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
    name: n, uuid: newUuid(), vcpus: 1, maxvcpus: 2, memoryMib: 256, maxmemMib: 512, kernel, initrd,
    kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1', disks: [], nics: [], ...extra,
  });
  const call = <M extends Parameters<typeof callNode>[1]>(n: TestNode, method: M, req: Parameters<typeof callNode<M>>[2]) =>
    callNode(n.client, method, req, { deadline: deadlineIn(60_000) });
  const dirsOf = (n: TestNode): string[] => [...fs.readdirSync(n.dataDir), ...fs.readdirSync(n.storageDir)].sort();
  const runtimeText = (n: TestNode, inst: string): string => runtimeTextOf(instancePaths(n.dataDir, inst).runtimeFile);

  async function startNode(nodeName: string, args: string[], port?: number, dirs?: { dataDir: string; storageDir: string }): Promise<TestNode> {
    const dataDir = dirs?.dataDir ?? path.join(root, `${nodeName}-data`);
    const storageDir = dirs?.storageDir ?? path.join(root, `${nodeName}-storage`);
    const p = port ?? (await freePort());
    const noded = await spawnNoded({ name: nodeName, dataDir, storageDir, identity: pki.node, port: p, args });
    const client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
    return { noded, client, dataDir, storageDir, args, port: p };
  }

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('hardened');
    pki = makePki(path.join(root, 'pki'), 'localhost');
    plain = await startNode('localhost', []);
    pooled = await startNode('localhost', ['--uid-pool', `${POOL.start}-${POOL.end}`]);
    await call(plain, 'InstanceStart', { spec: baseSpec(name, { disks: [{ uuid: newUuid(), sizeBytes: String(8 * MiB) }] }) });
    guest = new GuestConsole(instancePaths(plain.dataDir, name).consoleLog);
    await guest.waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  });

  after(async function () {
    this.timeout(60_000);
    for (const n of [plain, pooled]) {
      if (!n) continue;
      n.client.close();
      await n.noded.kill('SIGTERM');
      for (const inst of fs.existsSync(n.dataDir) ? fs.readdirSync(n.dataDir).filter((f) => !f.startsWith('.')) : []) {
        if (!fs.existsSync(instancePaths(n.dataDir, inst).runtimeFile)) continue;
        await KvmInstance.open(n.dataDir, inst).stop(5_000).catch(() => undefined);
      }
    }
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  describe('QEMU unprivileged by default', () => {
    it('a new instance runs as the node\'s QEMU user, under seccomp, with no capabilities, and the runtime file records it', async () => {
      const info = await call(plain, 'InstanceInfo', { name });
      const v = processView(info.pid);
      assert.equal(v.uid, uidOf('gnt-qemu'));
      assert.notEqual(v.uid, 0);
      assert.equal(v.seccomp, 2, 'seccomp filter mode');
      assert.equal(v.capEff, '0000000000000000');
      const hv = (JSON.parse(runtimeText(plain, name)) as RuntimeData).hvparams;
      assert.equal(hv.security_model, 'user');
      assert.equal(hv.security_domain, 'gnt-qemu');
    });

    it('NIC and disk hotplug work in it, judged by the guest console', async () => {
      const mac = '52:54:00:11:0b:01';
      const nic = await call(plain, 'HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: newUuid(), mac } });
      const disk = await call(plain, 'HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid: newUuid(), sizeBytes: String(24 * MiB) } });
      const seen = await guest.waitFor(
        (s) => s.nets.some((n) => n.mac === mac && n.pci === slotAddr(nic.pci)) && s.blks.some((b) => b.pci === slotAddr(disk.pci)),
        SEEN_TIMEOUT_MS,
        'the NIC and the disk',
      );
      assert.equal(seen.blks.find((b) => b.pci === slotAddr(disk.pci))?.sectors, (24 * MiB) / 512);
      await call(plain, 'HotplugDevice', { instance: name, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: nic.nic!.uuid } });
      await call(plain, 'HotplugDevice', { instance: name, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: disk.disk!.uuid } });
      await guest.waitFor((s) => !s.nets.some((n) => n.mac === mac) && !s.blks.some((b) => b.pci === slotAddr(disk.pci)), SEEN_TIMEOUT_MS, 'both gone');
    });

    it('with --uid-pool, two instances get different uids of the pool; security_model=none gives root', async () => {
      await call(pooled, 'InstanceStart', { spec: baseSpec('pool-a') });
      await call(pooled, 'InstanceStart', { spec: baseSpec('pool-b') });
      await call(pooled, 'InstanceStart', { spec: baseSpec('pool-root', { hvparams: { security_model: 'none' } }) });
      const [a, b, r] = await Promise.all(['pool-a', 'pool-b', 'pool-root'].map((n) => call(pooled, 'InstanceInfo', { name: n })));
      const va = processView(a.pid);
      const vb = processView(b.pid);
      for (const v of [va, vb]) {
        assert.ok(v.uid >= POOL.start && v.uid <= POOL.end, `uid ${v.uid} is from the pool`);
        assert.equal(v.seccomp, 2);
        assert.equal(v.capEff, '0000000000000000');
      }
      assert.notEqual(va.uid, vb.uid);
      const vr = processView(r.pid);
      assert.equal(vr.uid, 0);
      assert.notEqual(vr.capEff, '0000000000000000');
      assert.equal((JSON.parse(runtimeText(pooled, 'pool-a')) as RuntimeData).hvparams.security_uid, va.uid);
    });

    it('a restart of the instance, also after a restart of gnt-noded, keeps its pool uid', async () => {
      const before = processView((await call(pooled, 'InstanceInfo', { name: 'pool-b' })).pid).uid;
      pooled.client.close();
      await pooled.noded.kill('SIGTERM');
      pooled = await startNode('localhost', pooled.args, pooled.port, pooled);
      await call(pooled, 'InstanceStop', { name: 'pool-b', timeoutMs: 5_000 });
      await call(pooled, 'InstanceStart', { spec: baseSpec('pool-b') });
      assert.equal(processView((await call(pooled, 'InstanceInfo', { name: 'pool-b' })).pid).uid, before);
    });

    it('a failover target keeps the pool model and picks a uid of its own pool', async () => {
      const other = await startNode('localhost', ['--uid-pool', '40200-40209'], undefined, { dataDir: path.join(root, 'other-data'), storageDir: path.join(root, 'other-storage') });
      try {
        await call(pooled, 'InstanceStop', { name: 'pool-a', timeoutMs: 5_000 });
        const exported = await call(pooled, 'InstanceExport', { name: 'pool-a' });
        const reply = await call(other, 'InstanceReceive', { runtimeJson: exported.runtimeJson, incoming: false, sourceNode: 'localhost' });
        const v = processView(reply.runtime!.pid);
        assert.ok(v.uid >= 40200 && v.uid <= 40209, `uid ${v.uid} is from the target's pool`);
        assert.equal(v.capEff, '0000000000000000');
        assert.equal((JSON.parse(runtimeText(other, 'pool-a')) as RuntimeData).hvparams.security_uid, v.uid);
        await call(other, 'InstanceStop', { name: 'pool-a', timeoutMs: 5_000 });
        await call(other, 'InstanceRemove', { name: 'pool-a' });
      } finally {
        other.client.close();
        await other.noded.kill('SIGTERM');
      }
      for (const n of ['pool-b', 'pool-root']) {
        await call(pooled, 'InstanceStop', { name: n, timeoutMs: 5_000 });
        await call(pooled, 'InstanceRemove', { name: n });
      }
      await call(pooled, 'InstanceRemove', { name: 'pool-a' });
    });
  });

  describe('InstanceStart refuses bad hvparams and MACs before any side effect', () => {
    const refusals: Array<[string, Partial<InstanceSpec>, RegExp | string]> = [
      ['the -run-with injection in security_domain', { hvparams: { security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' } },
        'hvparam security_domain="nobody,chroot=/nonexistent" is not valid: it must be a user name'],
      ['an unknown hvparam', { hvparams: { cpu_type: 'host' } }, /unknown hvparam "cpu_type" \(known: /],
      ['an out-of-range unplug timeout', { hvparams: { unplug_timeout_disk: '86400' } }, 'hvparam unplug_timeout_disk="86400" is not valid: it must be a number of seconds above 0 and at most 3600'],
      ['a node-only hvparam', { hvparams: { security_model: 'pool', security_uid: '0' } }, 'hvparam security_uid is set by the node itself'],
      ['MAC 00:00:00:00:00:00', { nics: [{ uuid: newUuid(), mac: '00:00:00:00:00:00' }] }, masterMacError('00:00:00:00:00:00')],
      ['a multicast MAC', { nics: [{ uuid: newUuid(), mac: '01:00:5e:00:00:01' }] }, masterMacError('01:00:5e:00:00:01')],
    ];
    for (const [what, extra, why] of refusals) {
      it(`refuses ${what} (INVALID_ARGUMENT, nothing created)`, async () => {
        const before = dirsOf(plain);
        await rejectsWith(call(plain, 'InstanceStart', { spec: baseSpec('bad-start', { disks: [{ uuid: newUuid(), sizeBytes: String(MiB) }], ...extra }) }), grpc.status.INVALID_ARGUMENT, why);
        assert.deepEqual(dirsOf(plain), before);
      });
    }
  });

  describe('HotplugDevice refuses the MACs the master refuses, in its words', () => {
    for (const mac of ['00:00:00:00:00:00', '01:00:5e:00:00:01', '33:33:00:00:00:01']) {
      it(`refuses ${mac} (INVALID_ARGUMENT, runtime file unchanged)`, async () => {
        const before = runtimeText(plain, name);
        const message = masterMacError(mac);
        await rejectsWith(call(plain, 'HotplugDevice', { instance: name, deviceType: 'NIC', action: 'ADD', nic: { uuid: newUuid(), mac } }), grpc.status.INVALID_ARGUMENT, message);
        assert.equal(runtimeText(plain, name), before);
      });
    }
  });

  describe('InstanceReceive refuses a forged carried runtime file, nothing changed', () => {
    const forged = async (change: (d: RuntimeData) => void): Promise<string> => {
      const exported = await call(plain, 'InstanceExport', { name });
      const d = JSON.parse(exported.runtimeJson) as RuntimeData;
      d.instance = 'forged1';
      d.kvm_cmd[d.kvm_cmd.indexOf('-name') + 1] = 'forged1';
      d.block_devices = [];
      d.nics = [{ uuid: newUuid(), mac: '52:54:00:11:0b:09', pci: 9 }];
      delete d.migration;
      delete d.operations;
      change(d);
      return JSON.stringify(d);
    };
    const cases: Array<[string, (d: RuntimeData) => void, RegExp]> = [
      ['an injected CPU driver', (d) => d.resources!.cpus.push({ id: 'vcpu-s1-c0-t0', driver: 'virtio-net-pci,netdev=x', props: { 'socket-id': 1, 'core-id': 0, 'thread-id': 0 } }),
        /resources\.cpus\[0\]\.driver="virtio-net-pci,netdev=x" is not valid: a vCPU type/],
      ['injected CPU properties', (d) => d.resources!.cpus.push({ id: 'vcpu-s1-c0-t0', driver: 'qemu64-x86_64-cpu', props: { 'socket-id': 1, 'core-id': 0, 'thread-id': 0, romfile: 7 } as never }),
        /resources\.cpus\[0\]\.props\.romfile="7" is not valid: unknown field/],
      ['a bad MAC', (d) => (d.nics[0].mac = '00:00:00:00:00:00'), /nics\[0\]\.mac="00:00:00:00:00:00" is not valid: MAC address "00:00:00:00:00:00" is all zeros/],
      ['a bad tap name', (d) => (d.nics[0].tap = 'eth0'), /nics\[0\]\.tap="eth0" is not valid: a tap this software names/],
      ['an unknown hvparam', (d) => (d.hvparams.qemu_extra_args = '-device x'), /unknown hvparam "qemu_extra_args"/],
      ['an injected security_domain', (d) => (d.hvparams = { security_model: 'user', security_domain: 'nobody,chroot=/nonexistent' }), /hvparam security_domain="nobody,chroot=\/nonexistent" is not valid/],
    ];
    for (const [what, change, why] of cases) {
      it(`refuses ${what} (INVALID_ARGUMENT)`, async () => {
        const json = await forged(change);
        const before = dirsOf(plain);
        const list = (await call(plain, 'InstanceList', {})).instances.map((i) => i.name);
        await rejectsWith(call(plain, 'InstanceReceive', { runtimeJson: json, incoming: true, sourceNode: 'node9' }), grpc.status.INVALID_ARGUMENT, why);
        assert.deepEqual(dirsOf(plain), before);
        assert.deepEqual((await call(plain, 'InstanceList', {})).instances.map((i) => i.name), list);
      });
    }
  });
});
