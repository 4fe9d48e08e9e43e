/**
 * Confinement of host paths by resolution, through a real gnt-noded over
 * gRPC with mutual TLS and the real guest: disks only beneath the storage
 * directory or allow-listed block devices, kernels and initrds only beneath
 * the image directory, for hot-add, InstanceStart and InstanceReceive alike.
 * Every refusal is judged by its status and by what did not change: the
 * runtime file, the fds of noded and of QEMU, the files on disk.
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { callNode, connectNode, deadlineIn, type NodeDaemonClient } from '../../src/common/node-client';
import { GuestConsole } from '../../src/hypervisor/guest-console';
import { instancePaths } from '../../src/hypervisor/instance-paths';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import type { InstanceSpec } from '../../src/generated/gnt/node/v1/InstanceSpec';
import { BOOT_TIMEOUT_MS, guestFiles, newUuid, SEEN_TIMEOUT_MS, slotAddr, tempDir, testHostPaths } from '../support/guest';
import { freePort, makePki, spawnNoded, type Noded, type TestPki } from '../support/noded';
import { rejectsWith } from '../support/grpc-assert';
import { runtimeTextOf } from '../support/runtime-text';

const NODE = 'node1';
const MiB = 1024 * 1024;

/** The fds of a process other than sockets, pipes and anonymous inodes (which come and go with gRPC traffic). */
function fileFds(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const n of fs.readdirSync(dir)) {
    try {
      const t = fs.readlinkSync(path.join(dir, n));
      if (!/^(socket|pipe|anon_inode):/.test(t)) out.push(t);
    } catch {
      /* closed meanwhile */
    }
  }
  return out.sort();
}

/** Pids whose command line names `text`. */
function processesNaming(text: string): number[] {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text);
    } catch {
      return false;
    }
  });
}

/** Every file below `dir`, recursively. */
function tree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

describe('host paths the node accepts, by resolution (real noded, real QEMU)', function () {
  let root: string;
  let dataDir: string;
  let storageDir: string;
  let imageDir: string;
  let outside: string;
  let pki: TestPki;
  let noded: Noded;
  let client: NodeDaemonClient;
  let guest: GuestConsole;
  let spec: InstanceSpec;
  /** Loop devices made for the test: [allow-listed, not allow-listed], or why there are none. */
  let loops: string[] = [];
  let noLoops = '';
  const name = `hp-${newUuid().slice(0, 8)}`;

  const call = <M extends Parameters<typeof callNode>[1]>(method: M, req: Parameters<typeof callNode<M>>[2]) =>
    callNode(client, method, req, { deadline: deadlineIn(60_000) });
  const runtimeText = (): string => runtimeTextOf(instancePaths(dataDir, name).runtimeFile);
  const qemuPid = async (): Promise<number> => (await call('InstanceInfo', { name })).pid;

  /** Everything a refused request must leave as it was. */
  async function snapshot(): Promise<{ runtime: string; nodedFds: string[]; qemuFds: string[]; files: string[]; outside: string[]; data: string[] }> {
    return {
      runtime: runtimeText(),
      nodedFds: fileFds(noded.pid),
      qemuFds: fileFds(await qemuPid()),
      files: tree(storageDir),
      outside: tree(outside),
      data: tree(dataDir).filter((f) => !f.endsWith('console.log') && !f.endsWith('qemu.log')),
    };
  }

  async function refusedAdd(diskPath: string, details: RegExp): Promise<void> {
    const before = await snapshot();
    await rejectsWith(call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid: newUuid(), path: diskPath } }), grpc.status.INVALID_ARGUMENT, details);
    assert.deepEqual(await snapshot(), before, 'runtime file, fds of noded and QEMU, and files unchanged');
  }

  async function addSeeRemove(diskPath: string, bytes: number): Promise<void> {
    const uuid = newUuid();
    const r = await call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'ADD', disk: { uuid, path: diskPath } });
    await guest.waitFor((s) => s.blks.some((b) => b.pci === slotAddr(r.pci) && b.sectors === bytes / 512), SEEN_TIMEOUT_MS, `the ${bytes / MiB} MiB disk`);
    await call('HotplugDevice', { instance: name, deviceType: 'DISK', action: 'REMOVE', disk: { uuid } });
    await guest.waitFor((s) => !s.blks.some((b) => b.pci === slotAddr(r.pci)), SEEN_TIMEOUT_MS, 'the disk gone');
  }

  function makeLoops(): void {
    try {
      for (const n of ['loop-a.img', 'loop-b.img']) {
        const backing = path.join(storageDir, n);
        fs.writeFileSync(backing, '');
        fs.truncateSync(backing, (n === 'loop-a.img' ? 12 : 20) * MiB);
        loops.push(execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8' }).trim());
      }
    } catch (err) {
      noLoops = `loop devices are not available here: ${(err as Error).message.split('\n')[0]}`;
    }
  }

  before(async function () {
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    root = tempDir('host-paths');
    dataDir = path.join(root, 'data');
    storageDir = path.join(root, 'storage');
    imageDir = path.join(root, 'images');
    outside = path.join(root, 'outside');
    for (const d of [storageDir, imageDir, outside]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    const g = guestFiles();
    for (const [src, dst] of [[g.kernel, 'vmlinuz'], [g.initrd, 'initrd.gz']]) {
      fs.copyFileSync(src, path.join(imageDir, dst));
      fs.copyFileSync(src, path.join(outside, dst));
    }
    fs.writeFileSync(path.join(outside, 'victim.img'), Buffer.alloc(MiB));
    makeLoops();
    pki = makePki(path.join(root, 'pki'), NODE);
    const args = ['--image-dir', imageDir, ...(loops.length ? ['--block-device', loops[0]] : [])];
    noded = await spawnNoded({ name: NODE, dataDir, storageDir, identity: pki.node, port: await freePort(), args });
    client = connectNode(noded.address, pki.client, { serverName: 'localhost' });
    spec = {
      name,
      vcpus: 1,
      memoryMib: 256,
      kernel: path.join(imageDir, 'vmlinuz'),
      initrd: path.join(imageDir, 'initrd.gz'),
      kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1',
      disks: [{ uuid: newUuid(), sizeBytes: String(8 * MiB) }],
      nics: [],
    };
    await call('InstanceStart', { spec });
    guest = new GuestConsole(instancePaths(dataDir, name).consoleLog);
    await guest.waitFor(() => true, BOOT_TIMEOUT_MS, 'a first state block');
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    await noded?.kill('SIGTERM');
    if (dataDir && fs.existsSync(instancePaths(dataDir, name).runtimeFile))
      await KvmInstance.open(dataDir, name, { hostPaths: testHostPaths(storageDir) }).stop(5_000).catch(() => undefined);
    for (const l of loops) execFileSync('losetup', ['-d', l]);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('QEMU got the kernel and initrd as inherited fds (/proc/self/fd/N); the runtime file keeps the real paths', async () => {
    const argv = fs.readFileSync(`/proc/${await qemuPid()}/cmdline`, 'utf8').split('\0');
    assert.match(argv[argv.indexOf('-kernel') + 1], /^\/proc\/self\/fd\/\d+$/);
    assert.match(argv[argv.indexOf('-initrd') + 1], /^\/proc\/self\/fd\/\d+$/);
    const rt = JSON.parse(runtimeText()) as RuntimeData;
    assert.equal(rt.kvm_cmd[rt.kvm_cmd.indexOf('-kernel') + 1], path.join(imageDir, 'vmlinuz'));
    assert.match(noded.log(), new RegExp(`host paths: disk files beneath ${storageDir}, kernels and initrds beneath ${imageDir}`));
  });

  describe('HotplugDevice DISK ADD', () => {
    it('refuses a path outside the storage directory', async () => {
      await refusedAdd(path.join(outside, 'victim.img'), new RegExp(`disk ".*/outside/victim.img" is outside the storage directory ${storageDir}: .*gnt-noded --block-device`));
    });

    it('refuses <storage>/x/../../outside/victim.img', async () => {
      fs.mkdirSync(path.join(storageDir, 'x'), { recursive: true });
      await refusedAdd(`${storageDir}/x/../../outside/victim.img`, /is outside the storage directory/);
    });

    it('refuses a symlink inside the storage directory that points outside', async () => {
      fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storageDir, 'evil.img'));
      await refusedAdd(path.join(storageDir, 'evil.img'), new RegExp(`disk ".*/evil.img" escapes the storage directory ${storageDir} \\(a symlink or "\\.\\." leads outside it`));
      fs.symlinkSync(outside, path.join(storageDir, 'evil-dir'));
      await refusedAdd(path.join(storageDir, 'evil-dir', 'victim.img'), /escapes the storage directory/);
    });

    it('accepts a symlink inside the storage directory that points inside it: the guest sees the disk', async () => {
      const target = path.join(storageDir, 'real.img');
      fs.writeFileSync(target, '');
      fs.truncateSync(target, 16 * MiB);
      fs.mkdirSync(path.join(storageDir, 'links'), { recursive: true });
      fs.symlinkSync('../real.img', path.join(storageDir, 'links', 'good.img'));
      await addSeeRemove(path.join(storageDir, 'links', 'good.img'), 16 * MiB);
    });

    it('an allow-listed block device works, one not in the list is refused', async function () {
      if (!loops.length) {
        console.log(`      (skipped: ${noLoops})`);
        this.skip();
      }
      await addSeeRemove(loops[0], 12 * MiB);
      await refusedAdd(loops[1], new RegExp(`block device "${loops[1]}" is not in the node's allow-list \\(gnt-noded --block-device\\)`));
      // reached through a symlink inside storage it escapes storage; from outside it is matched by where it leads
      fs.symlinkSync(loops[1], path.join(outside, 'dev-link'));
      await refusedAdd(path.join(outside, 'dev-link'), /is not in the node's allow-list/);
    });
  });

  describe('InstanceStart with a kernel or initrd outside the image directory', () => {
    const other = `hp2-${newUuid().slice(0, 8)}`;
    async function refusedStart(change: Partial<InstanceSpec>, details: RegExp): Promise<void> {
      const before = { data: tree(dataDir), storage: tree(storageDir) };
      await rejectsWith(call('InstanceStart', { spec: { ...spec, name: other, ...change } }), grpc.status.INVALID_ARGUMENT, details);
      assert.deepEqual({ data: tree(dataDir), storage: tree(storageDir) }, before, 'no runtime file, no disk file');
      assert.equal((await call('InstanceList', {})).instances.length, 1, 'no instance made');
      assert.deepEqual(processesNaming(other), [], 'no QEMU started');
    }

    it('refuses a kernel outside it', async () => {
      await refusedStart({ kernel: path.join(outside, 'vmlinuz') }, new RegExp(`kernel ".*/outside/vmlinuz" is outside the image directory ${imageDir}`));
    });

    it('refuses a kernel or initrd through a symlink that escapes it', async () => {
      fs.symlinkSync(path.join(outside, 'vmlinuz'), path.join(imageDir, 'evil-vmlinuz'));
      fs.symlinkSync(path.join(outside, 'initrd.gz'), path.join(imageDir, 'evil-initrd.gz'));
      await refusedStart({ kernel: path.join(imageDir, 'evil-vmlinuz') }, /kernel ".*evil-vmlinuz" escapes the image directory/);
      await refusedStart({ initrd: path.join(imageDir, 'evil-initrd.gz') }, /initrd ".*evil-initrd.gz" escapes the image directory/);
      await refusedStart({ initrd: `${imageDir}/../outside/initrd.gz` }, /initrd .* is outside the image directory/);
    });

    it('refuses a given disk outside the storage directory before creating anything', async () => {
      await refusedStart({ disks: [{ uuid: newUuid(), sizeBytes: String(MiB) }, { uuid: newUuid(), path: path.join(outside, 'victim.img') }] }, /is outside the storage directory/);
    });
  });

  describe('InstanceReceive with a carried runtime file', () => {
    const carriedName = `hp3-${newUuid().slice(0, 8)}`;
    async function carried(change: (d: RuntimeData) => void): Promise<string> {
      const exported = JSON.parse((await call('InstanceExport', { name })).runtimeJson) as RuntimeData;
      exported.instance = carriedName;
      exported.kvm_cmd[exported.kvm_cmd.indexOf('-name') + 1] = carriedName;
      delete exported.operations;
      change(exported);
      return JSON.stringify(exported);
    }
    async function refusedReceive(json: string, code: grpc.status, details: RegExp): Promise<void> {
      const before = { data: tree(dataDir), storage: tree(storageDir), nodedFds: fileFds(noded.pid) };
      await rejectsWith(call('InstanceReceive', { runtimeJson: json, incoming: true, sourceNode: 'node0' }), code, details);
      assert.deepEqual({ data: tree(dataDir), storage: tree(storageDir), nodedFds: fileFds(noded.pid) }, before, 'nothing made on the target');
      assert.equal((await call('InstanceList', {})).instances.length, 1, 'no instance made');
    }

    it('refuses a disk symlinked from the storage directory to outside it', async () => {
      fs.mkdirSync(path.join(storageDir, carriedName), { recursive: true });
      fs.symlinkSync(path.join(outside, 'victim.img'), path.join(storageDir, carriedName, 'd.img'));
      const json = await carried((d) => (d.block_devices[0].path = path.join(storageDir, carriedName, 'd.img')));
      await refusedReceive(json, grpc.status.INVALID_ARGUMENT, /disk ".*d.img" escapes the storage directory/);
    });

    it('refuses a disk outside the storage directory', async () => {
      const json = await carried((d) => (d.block_devices[0].path = path.join(outside, 'victim.img')));
      await refusedReceive(json, grpc.status.FAILED_PRECONDITION, /is at .*victim.img, outside node node1's storage directory/);
    });

    it('refuses an initrd outside the image directory', async () => {
      const json = await carried((d) => {
        d.block_devices = [];
        d.kvm_cmd[d.kvm_cmd.indexOf('-initrd') + 1] = path.join(outside, 'initrd.gz');
      });
      await refusedReceive(json, grpc.status.INVALID_ARGUMENT, /initrd ".*outside\/initrd.gz" is outside the image directory/);
    });
  });
});
