/**
 * The daemons the fuzz test attacks, with a booted instance each, and what
 * the generators know about them: a standalone gnt-noded (test/support/noded.ts,
 * called with the master's certificate) and a one-node cluster with
 * gnt-masterd (TestCluster, called with the CLI's certificate); decoy files
 * outside every directory the daemons own; the value pools and valid request
 * templates of each RPC.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn } from '../../src/common/node-client';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { Identity } from '../../src/common/pki';
import { ClusterDir } from '../../src/master/cluster-dir';
import type { InstanceSpec } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { TestCluster } from './cli-cluster';
import type { FuzzContext } from './fuzz-arbitraries';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, tempDir } from './guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from './noded';

const MiB = 1024 * 1024;
export const BRIDGE = 'gntfzbr0';
export const NODE = 'fznode';
export const MAIN = 'fz-main';
export const VICTIM = 'fz-victim';
export const M_MAIN = 'fzm-main';
export const M_VICTIM = 'fzm-victim';
const KERNEL_ARGS = 'console=ttyS0 quiet loglevel=1 panic=-1';

/** Decoys: files outside every directory a daemon owns, named as targets by the generators; they must stay as they are. */
export interface Decoys {
  /** Next to the node's directories (reachable as ../../outside/...). */
  near: string;
  /** Under /tmp. */
  tmp: string;
  files: string[];
  /** Paths that must never come to exist. */
  forbidden: string[];
}

function makeDecoys(root: string): Decoys {
  const near = path.join(root, 'outside');
  fs.mkdirSync(near);
  const tmp = tempDir('fuzz-outside');
  const files: string[] = [];
  for (const d of [near, tmp]) {
    for (const [n, content] of [['decoy.img', Buffer.alloc(1 * MiB, 0x5a)], ['runtime.json', '{"version":2}'], ['secret.key', 'not a key\n']] as const) {
      const f = path.join(d, n);
      fs.writeFileSync(f, content);
      files.push(f);
    }
  }
  const forbidden = [path.join(near, 'pwned'), path.join(tmp, 'pwned'), `/tmp/gnt-fuzz-pwned-${process.pid}`, path.join(near, 'mig.bin')];
  return { near, tmp, files, forbidden };
}

/** Strings every string field gets tried with: traversals, decoy targets, injections, control characters. */
export function hostileStrings(d: Decoys, withNul: boolean): string[] {
  const pwned = d.forbidden[0];
  const list = [
    '', ' ', '.', '..', '/', '../', '../../outside/decoy.img', '../../../outside/secret.key', `${d.near}/decoy.img`,
    `${d.tmp}/decoy.img`, `${d.tmp}/secret.key`, `${d.near}`, `${d.tmp}/new.img`, `${d.near}/new-dir/x.img`,
    'a,b=c', ',file=/dev/null', 'x,id=evil,addr=0x3', 'file=/tmp/x,if=none', 'id=x', '=', ',', ',,', 'key=value',
    `$(touch ${pwned})`, `\`touch ${pwned}\``, `; touch ${pwned}`, `| touch ${pwned}`, `exec:touch ${pwned}`,
    `file:${d.near}/mig.bin`, `unix:${d.near}/sock`, 'tcp:0.0.0.0:22', 'tcp:[::]:1', '-device', '-incoming', '--', '-1',
    '9223372036854775808', 'NaN', 'null', 'undefined', '{}', '[]', '{"__proto__":{"polluted":1}}', '__proto__',
    'constructor', 'toString', 'a\nb', 'a\r\nX-Injected: 1', '\u202eevil', '\ud83d\ude00'.repeat(20), '%s%s%n', '\\x00',
    'UPPER-case', 'name with space', 'a'.repeat(64), 'a'.repeat(300),
    // A surrogate pair across the places where messages get cut (excerpt() at 48, V8's JSON.parse snippet).
    `${'a'.repeat(47)}\u{1F600}b`, `x${'\u{1F600}'.repeat(30)}`, `{"a":${'\u{1F600}'.repeat(30)}`,
  ];
  if (withNul) list.push('\0', 'a\0b', `${d.near}/decoy.img\0.img`);
  return list;
}

/** The standalone gnt-noded with MAIN running under it. */
export class NodeWorld {
  readonly root = tempDir('fuzz');
  readonly dataDir = path.join(this.root, 'data');
  readonly storageDir = path.join(this.root, 'storage');
  readonly decoys = makeDecoys(this.root);
  pki!: TestPki;
  noded!: Noded;
  spec!: InstanceSpec;
  victimSpec!: InstanceSpec;
  exportJson = '';
  readonly bootDisk = newUuid();
  readonly nicUuid = newUuid();
  readonly mac = '52:54:00:f2:00:01';
  readonly freshUuids = [newUuid(), newUuid(), newUuid()];

  private port = 0;

  async start(): Promise<void> {
    this.pki = makePki(path.join(this.root, 'pki'), NODE);
    this.port = await freePort();
    await this.spawn();
    const { kernel, initrd } = guestFiles();
    const base = { vcpus: 1, maxvcpus: 4, kernel, initrd, kernelArgs: KERNEL_ARGS };
    this.spec = {
      ...base, name: MAIN, uuid: newUuid(), memoryMib: 256, maxmemMib: 1024,
      disks: [{ uuid: this.bootDisk, sizeBytes: String(8 * MiB) }],
      nics: [{ uuid: this.nicUuid, mac: this.mac, link: BRIDGE }],
    };
    this.victimSpec = { ...base, name: VICTIM, uuid: newUuid(), memoryMib: 128, maxmemMib: 256, disks: [{ uuid: newUuid(), sizeBytes: String(8 * MiB) }], nics: [] };
    const client = connectNode(this.noded.address, this.pki.client, { serverName: 'localhost' });
    try {
      await callNode(client, 'InstanceStart', { spec: this.spec }, { deadline: deadlineIn(60_000) });
      const exported = await callNode(client, 'InstanceExport', { name: MAIN }, { deadline: deadlineIn(10_000) });
      this.exportJson = exported.runtimeJson;
    } finally {
      client.close();
    }
    await new GuestConsole(instancePaths(this.dataDir, MAIN).consoleLog).waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  }

  async spawn(): Promise<void> {
    this.noded = await spawnNoded({ name: NODE, dataDir: this.dataDir, storageDir: this.storageDir, identity: this.pki.node, port: this.port });
  }

  alive(): boolean {
    return this.noded.proc.exitCode === null && this.noded.proc.signalCode === null;
  }

  /** Runtime JSON variants for InstanceReceive: the export renamed, its disk pointed at a decoy, its command replaced. */
  receiveJsons(): string[] {
    const base = JSON.parse(this.exportJson) as Record<string, unknown>;
    const renamed = { ...base, instance: VICTIM };
    const withDisk = (p: string): string =>
      JSON.stringify({ ...renamed, block_devices: ((base.block_devices as Record<string, unknown>[]) ?? []).map((d) => ({ ...d, path: p })) });
    return [
      JSON.stringify(renamed), this.exportJson, withDisk(this.decoys.files[0]), withDisk(`${this.storageDir}/../outside/decoy.img`),
      JSON.stringify({ ...renamed, kvm_cmd: ['/bin/sh', '-c', `touch ${this.decoys.forbidden[0]}`] }),
      JSON.stringify({ ...renamed, kvm_cmd: [...((base.kvm_cmd as string[]) ?? []), '-drive', `file=${this.decoys.files[0]}`] }),
      JSON.stringify({ ...renamed, version: 99 }), '{}', '[]', 'null', '[["/usr/bin/qemu-system-x86_64"],[],{}]',
    ];
  }

  context(): FuzzContext {
    const d = this.decoys;
    const names = [MAIN, VICTIM, 'fz-ghost', NODE];
    const uuids = [this.bootDisk, this.nicUuid, ...this.freshUuids, 'not-a-uuid', '00000000-0000-0000-0000-000000000000'];
    const { kernel, initrd } = guestFiles();
    const paths = [path.join(this.storageDir, MAIN, `${this.freshUuids[1]}.img`), path.join(this.storageDir, VICTIM, 'x.img'),
      this.storageDir, path.join(this.storageDir, MAIN), instancePaths(this.dataDir, MAIN).runtimeFile, ...d.files,
      `${this.storageDir}/../outside/decoy.img`, `${this.storageDir}/${MAIN}/../../outside/new.img`];
    const nic = { uuid: this.freshUuids[0], mac: '52:54:00:f2:00:02', link: BRIDGE };
    const disk = { uuid: this.freshUuids[1], sizeBytes: String(16 * MiB) };
    return {
      hostile: hostileStrings(d, true),
      protectedNames: [MAIN],
      destructive: (p) => /^(InstanceStart|InstanceStop|InstanceRemove|InstanceRelease|MigrationStart)\./.test(p),
      byField: {
        name: names, instance: names, instances: names, foreignInstances: names, sourceNode: [NODE, 'node2'], targetNode: [NODE, 'node2'],
        uuid: uuids, deviceUuid: uuids, configuredDisks: uuids, operationId: ['fz-op-1', 'fz-op-2', ''],
        mac: [this.mac, '52:54:00:f2:00:02', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00', '52:54:00:F2:00:03'],
        link: [BRIDGE, 'lo', 'gntnobr0', ''], tap: ['tap0', 'lo', BRIDGE], deviceId: ['nic-0-pci-5', 'pci.0', 'virtio-disk0'],
        state: ['', 'attaching', 'detaching'], path: paths, kernel: [kernel, ...paths], initrd: [initrd, ...paths],
        kernelArgs: [KERNEL_ARGS, 'init=/bin/sh', `${KERNEL_ARGS} -device e1000`, '"\n-append x'],
        targetUri: ['tcp:127.0.0.1:1', 'tcp:0.0.0.0:1', 'tcp:[::1]:1', 'tcp:127.0.0.1:99999', `exec:touch ${d.forbidden[0]}`,
          `file:${d.forbidden[3]}`, `unix:${d.near}/mig.sock`, 'rdma:127.0.0.1:1', 'fd:3'],
        runtimeJson: this.receiveJsons(),
        'hvparams.key': ['security_model', 'security_domain', 'chroot', 'machine', 'accel', 'memory_hotplug', 'unplug_timeout_nic',
          'migration_bandwidth', '__proto__', 'constructor', 'x,y=z'],
        'hvparams.value': ['none', 'user', 'pool', '/', d.near, d.tmp, 'pc', 'q35', 'kvm', 'tcg', 'tcg,thread=multi', 'acpi', 'virtio-mem', '-1', '1e9', 'x,id=y'],
      },
      templates: {
        NodeInfo: [{}], InstanceList: [{}],
        InstanceInfo: [{ name: MAIN }], InstanceExport: [{ name: MAIN }], MigrationStatus: [{ name: MAIN }],
        MigrationFinish: [{ name: MAIN }], MigrationAbort: [{ name: MAIN }, { name: VICTIM }],
        InstanceStart: [{ spec: this.victimSpec }], InstanceStop: [{ name: VICTIM, timeoutMs: 2000 }],
        InstanceRemove: [{ name: VICTIM }], InstanceRelease: [{ name: VICTIM }],
        HotplugSupported: [{ instance: MAIN, deviceType: 'NIC' }, { instance: MAIN, deviceType: 'DISK' }],
        HotplugDevice: [
          { instance: MAIN, deviceType: 'NIC', action: 'ADD', nic },
          { instance: MAIN, deviceType: 'NIC', action: 'MODIFY', nic: { uuid: nic.uuid, mac: '52:54:00:f2:00:04' } },
          { instance: MAIN, deviceType: 'NIC', action: 'REMOVE', nic: { uuid: nic.uuid } },
          { instance: MAIN, deviceType: 'DISK', action: 'ADD', disk, operationId: 'fz-op-1' },
          { instance: MAIN, deviceType: 'DISK', action: 'REMOVE', disk: { uuid: disk.uuid }, operationId: 'fz-op-2' },
        ],
        InstanceResize: [{ instance: MAIN, vcpus: 2 }, { instance: MAIN, vcpus: 1 }, { instance: MAIN, memoryMib: '384' }],
        OperationStatus: [{ instance: MAIN, operationId: 'fz-op-1' }, { instance: MAIN, operationId: 'fz-op-9', fence: true }],
        OperationLog: [{ cursors: [{ instance: MAIN, afterRevision: '0' }] }, { allInstances: true }],
        InstanceReceive: [{ runtimeJson: this.receiveJsons()[0], sourceNode: 'node2', incoming: true }],
        MigrationStart: [{ instance: VICTIM, targetUri: 'tcp:127.0.0.1:1', targetNode: 'node2' }],
        InstanceVerify: [{ instances: [MAIN] }, { nodeWide: true }, { instances: [MAIN], fix: true }],
        GuestInfo: [{ name: MAIN }],
        GuestWait: [{ instance: MAIN, kind: 'vcpus', vcpus: 1, timeoutMs: 500 }, { instance: MAIN, kind: 'nic', mac: '52:54:00:f2:00:0a', timeoutMs: 500 }],
        AuditLog: [{ instance: MAIN }, {}],
      },
    };
  }

  /** Stops the daemon and every QEMU it started (found by the runtime files), removes the root. */
  async destroy(): Promise<void> {
    await this.noded?.kill('SIGTERM');
    await stopAllQemu(this.dataDir);
    fs.rmSync(this.root, { recursive: true, force: true });
    fs.rmSync(this.decoys.tmp, { recursive: true, force: true });
  }
}

export async function stopAllQemu(dataDir: string): Promise<void> {
  if (!fs.existsSync(dataDir)) return;
  for (const name of fs.readdirSync(dataDir)) {
    try {
      if (fs.existsSync(instancePaths(dataDir, name).runtimeFile)) await KvmInstance.open(dataDir, name).stop(5_000).catch(() => undefined);
    } catch {
      // not an instance directory
    }
  }
}

/** The one-node cluster with M_MAIN running. */
export class MasterWorld {
  readonly c = new TestCluster();
  nodeAddress = '';

  async start(): Promise<void> {
    const { kernel, initrd } = guestFiles();
    await this.c.init();
    this.nodeAddress = (await this.c.addNode('node1')).address;
    this.c.ok(this.c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', kernel, '--initrd', initrd,
      '--kernel-args', KERNEL_ARGS, '--disk', 'size=8M', '--net', `link=${BRIDGE}`, M_MAIN));
  }

  get cliIdentity(): Identity {
    return new ClusterDir(this.c.clusterDir).cliIdentity;
  }

  get masterAddress(): string {
    return new ClusterDir(this.c.clusterDir).readClusterFile().master_address;
  }

  masterAlive(): boolean {
    const m = this.c.masterDaemon;
    return !!m && m.child.exitCode === null && m.child.signalCode === null;
  }

  nodeAlive(): boolean {
    const d = this.c.node('node1').daemon;
    return d.child.exitCode === null && d.child.signalCode === null;
  }

  async revive(): Promise<void> {
    if (!this.masterAlive()) await this.c.startMaster();
    if (!this.nodeAlive()) await this.c.restartNode('node1');
  }

  context(decoys: Decoys): FuzzContext {
    const { kernel, initrd } = guestFiles();
    const names = [M_MAIN, M_VICTIM, 'node1', 'node2', 'fzm-ghost'];
    const victimAdd = {
      name: M_VICTIM, node: 'node1', vcpus: 1, memoryMib: '128', kernel, initrd, kernelArgs: KERNEL_ARGS,
      disks: [{ sizeBytes: String(8 * MiB) }], nics: [], noStart: true,
    };
    // SubmitJob and RunJob take the same request
    const jobs = [
      { instanceModify: { name: M_MAIN, nics: [{ action: 'ADD', link: BRIDGE }], hotplug: 'HOTPLUG' } },
      { instanceModify: { name: M_MAIN, disks: [{ action: 'ADD', sizeBytes: String(16 * MiB) }], hotplug: 'HOTPLUG_IF_POSSIBLE' } },
      { instanceModify: { name: M_MAIN, vcpus: 2, hotplug: 'HOTPLUG' } },
      { instanceAdd: victimAdd }, { instanceStart: { name: M_VICTIM } }, { instanceStop: { name: M_VICTIM, timeoutMs: 1000 } },
      { instanceRemove: { name: M_VICTIM } }, { nodeAdd: { name: 'node2', address: '127.0.0.1:1' } },
      { instanceMigrate: { name: M_VICTIM, cleanup: true } },
    ];
    return {
      hostile: hostileStrings(decoys, true),
      protectedNames: [M_MAIN, 'node1'],
      destructive: (p) => /^(SubmitJob|RunJob)\.(instanceRemove|instanceStop|instanceMigrate|nodeAdd|nodeRemove)\./.test(p),
      // renew-crypto would revoke the CLI certificate this run calls with (renew-crypto.test.ts covers it).
      excluded: (p) => /^(SubmitJob|RunJob)\.clusterRenewCrypto(\.|$)/.test(p),
      byField: {
        name: names, node: names, target: names, instance: names,
        address: [this.nodeAddress, '127.0.0.1:1', 'localhost:0', '[::1]:1', '256.1.1.1:1', 'host:99999', this.masterAddress],
        kernel: [kernel, ...decoys.files], initrd: [initrd, ...decoys.files], kernelArgs: [KERNEL_ARGS, 'init=/bin/sh'],
        mac: ['', '52:54:00:f3:00:01', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01'], link: [BRIDGE, 'lo', 'gntnobr0', ''],
        'hvparams.key': ['security_model', 'chroot', 'machine', 'accel', 'memory_hotplug', 'unplug_timeout_nic', '__proto__', 'x,y=z'],
        'hvparams.value': ['none', 'user', '/', decoys.near, 'q35', 'kvm', 'tcg', 'acpi', '-1', 'x,id=y'],
      },
      templates: {
        SubmitJob: jobs, RunJob: jobs,
        GetJob: [{ id: '1' }, { id: '2' }], CancelJob: [{ id: '3' }], WatchJob: [{ id: '1', afterSeq: '0' }, { id: '2', afterSeq: '1' }],
        ListJobs: [{}], ListNodes: [{}], GetNode: [{ name: 'node1' }], ListInstances: [{ live: true }, { live: true, summary: true }],
        GetInstance: [{ name: M_MAIN }], Verify: [{ instance: M_MAIN }, { instance: '' }, { instance: M_MAIN, fix: true }],
      },
    };
  }

  /** The instances of the configuration (gnt-instance list), or an error text. */
  instances(): string[] | string {
    const list = this.c.gnt('gnt-instance', 'list', '--no-live', '--output', 'json');
    if (list.code !== 0) return `gnt-instance list exited ${list.code}: ${list.stderr.slice(0, 300)}`;
    try {
      return (JSON.parse(list.stdout) as Array<{ instance: { name: string } }>).map((e) => e.instance.name);
    } catch (err) {
      return `gnt-instance list printed no JSON: ${(err as Error).message}`;
    }
  }

  /** Removes every instance of the config (stopping its QEMU), then stops the daemons. */
  async destroy(): Promise<void> {
    const names = this.instances();
    if (Array.isArray(names)) for (const n of names) this.c.gnt('gnt-instance', 'remove', n);
    let dataDir: string | undefined;
    try {
      dataDir = this.c.node('node1').dataDir;
    } catch {
      dataDir = undefined;
    }
    if (dataDir) await stopAllQemu(dataDir);
    await this.c.destroy().catch(() => undefined);
  }
}

export function makeBridge(): void {
  spawnSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  spawnSync('ip', ['link', 'set', BRIDGE, 'up']);
}

export function deleteBridge(): void {
  spawnSync('ip', ['link', 'del', BRIDGE]);
}
