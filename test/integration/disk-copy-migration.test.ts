/**
 * Live migration with local disks, in the hypervisor layer: two "nodes" of
 * this machine with SEPARATE storage directories, the disks copied over NBD
 * (blockdev-mirror) while the guest keeps writing to them, the stream and the
 * copy over TLS with certificates of a cluster CA. The guest (gnt.diskwrite=1)
 * keeps a copy of what it wrote in its RAM and compares its disks with it
 * after every write: on the target the memory came with the stream and the
 * disks with the copy, and they must agree.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { createCa, issueCertificate, readIdentity } from '../../src/common/pki';
import { nodeRole } from '../../src/common/cert-roles';
import { disksToCopy } from '../../src/hypervisor/disk-mirror';
import { KvmInstance } from '../../src/hypervisor/kvm-instance';
import type { TlsMaterial } from '../../src/hypervisor/migration-tls';
import type { RuntimeData } from '../../src/hypervisor/runtime-file';
import { bootGuest, makeDiskFile, newUuid, sh, tempDir, testHostPaths, type BootedGuest } from '../support/guest';
import { untilFinished } from '../support/migration';

const MiB = 1024 * 1024;
const HOST = '127.0.0.1';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The guest's disk checks on a console log: the last "gnt-disk NAME WRITES ok|BAD MD5" per disk, and every BAD. */
function diskChecks(consoleLog: string): { last: Map<string, { writes: number; verdict: string }>; bad: string[] } {
  const last = new Map<string, { writes: number; verdict: string }>();
  const bad: string[] = [];
  for (const m of fs.readFileSync(consoleLog, 'utf8').matchAll(/gnt-disk (\S+) (\d+) (ok|BAD) ([0-9a-f]+)/g)) {
    last.set(m[1], { writes: Number(m[2]), verdict: m[3] });
    if (m[3] === 'BAD') bad.push(m[0]);
  }
  return { last, bad };
}

async function untilDiskChecks(consoleLog: string, pred: (last: Map<string, { writes: number; verdict: string }>) => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred(diskChecks(consoleLog).last)) {
    if (Date.now() > deadline) throw new Error(`the guest never reported ${what}: ${JSON.stringify([...diskChecks(consoleLog).last])}`);
    await sleep(300);
  }
}

/** Points every file disk of a carried runtime file at an empty file of the same size in `storage` (what gnt-noded does). */
function copyLayout(carried: RuntimeData, storage: string): { data: RuntimeData; files: string[] } {
  const data = JSON.parse(JSON.stringify(carried)) as RuntimeData;
  const files: string[] = [];
  const dir = path.join(storage, data.instance);
  fs.mkdirSync(dir, { recursive: true });
  const copied = new Set(disksToCopy(data).map((d) => d.uuid));
  for (const d of [...data.block_devices, ...(data.scsi_disks ?? [])].filter((x) => copied.has(x.uuid))) {
    const size = fs.statSync(d.path).size;
    d.path = makeDiskFile(dir, `${d.uuid}.img`, size);
    files.push(d.path);
  }
  return { data, files };
}

async function untilMirrorsReady(inst: KvmInstance, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await inst.migrationStatus();
    const mirrors = v.mirrors ?? [];
    const bad = mirrors.find((m) => m.error || m.status === 'concluded');
    if (bad) throw new Error(`mirror ${bad.node} ${bad.status}: ${bad.error}`);
    if (mirrors.length && mirrors.every((m) => m.ready)) return;
    if (Date.now() > deadline) throw new Error(`mirrors not ready: ${JSON.stringify(mirrors)}`);
    await sleep(100);
  }
}

const sha = (file: string, bytes: number): string => {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    fs.readSync(fd, buf, 0, bytes, 0);
    return crypto.createHash('sha256').update(buf).digest('hex');
  } finally {
    fs.closeSync(fd);
  }
};

describe('live migration with local disks (NBD + blockdev-mirror, TLS; hypervisor layer, real guest)', function () {
  let pki: string;
  let tlsA: TlsMaterial;
  let tlsB: TlsMaterial;
  let storageA: string;
  let storageB: string;
  let dataB: string;
  let g: BootedGuest;
  let onB: KvmInstance | undefined;
  let loop = '';

  before(async () => {
    pki = tempDir('pki');
    const ca = createCa(pki, 'test-ca');
    const a = issueCertificate(ca, pki, 'nodeA', nodeRole('nodeA'));
    const b = issueCertificate(ca, pki, 'nodeB', nodeRole('nodeB'));
    tlsA = readIdentity({ ca: ca.cert, cert: a.cert, key: a.key });
    tlsB = readIdentity({ ca: ca.cert, cert: b.cert, key: b.key });
    storageA = tempDir('storageA');
    storageB = tempDir('storageB');
    dataB = tempDir('nodeB');
    fs.writeFileSync(path.join(pki, 'block.img'), '');
    fs.truncateSync(path.join(pki, 'block.img'), 8 * MiB);
    loop = sh('losetup', ['--find', '--show', path.join(pki, 'block.img')]).trim();
    g = await bootGuest({ storageDir: storageA, blockDevices: [loop], kernelArgs: 'gnt.diskwrite=1', disks: [{ uuid: newUuid(), path: makeDiskFile(storageA, 'boot.img', 16 * MiB) }] });
  });
  after(async () => {
    for (const i of [onB, g?.instance]) await i?.abortMigration().catch(() => undefined);
    await onB?.stop().catch(() => undefined);
    await g?.destroy();
    if (loop) sh('losetup', ['-d', loop]);
    for (const d of [pki, storageA, storageB, dataB]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('the guest writes to its boot disk and to a hot-added disk and checks them', async () => {
    await g.instance.hotAddDisk({ uuid: newUuid(), path: makeDiskFile(storageA, 'hot.img', 24 * MiB) });
    await untilDiskChecks(g.instance.paths.consoleLog, (l) => (l.get('vda')?.writes ?? 0) >= 2 && (l.get('vdb')?.writes ?? 0) >= 2, 'checks of vda and vdb');
    assert.deepEqual(diskChecks(g.instance.paths.consoleLog).bad, []);
  });

  it('a target with TLS refuses a plain migration: the handshake fails, the source keeps running, nothing is left on the target', async () => {
    const { data, files } = copyLayout(g.instance.runtime, storageB);
    const hostPaths = testHostPaths(storageB, [loop]);
    const { instance: target, uri } = await KvmInstance.receive(dataB, data, { incoming: true, peer: 'A', listenHost: HOST, tls: tlsB, copyFiles: files }, { hostPaths });
    // A plain TCP client gets nothing it can use: the first bytes it sends are not a TLS ClientHello.
    const { port } = { port: Number(uri!.split(':').pop()) };
    const plain = await new Promise<string>((resolve) => {
      const s = net.connect(port, HOST, () => s.write('QEVM\0\0\0\x03'));
      let got = '';
      s.on('data', (d) => (got += d.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
      setTimeout(() => s.destroy(), 3000);
    });
    assert.doesNotMatch(plain, /QEVM/, 'the target never speaks the migration protocol in clear');
    // The handshake fails and nothing is loaded: QEMU 10 keeps the incoming side in "setup" (or fails it), the guest state is untouched.
    const st = await target.migrationStatus();
    assert.ok(!st.qemuAlive || ['setup', 'failed'].includes(st.progress?.state ?? ''), `the target accepted nothing (migration ${st.progress?.state})`);
    if (st.qemuAlive) assert.equal(st.runState, 'inmigrate', 'no guest state was loaded');
    assert.equal(await target.abortMigration(), 'destroyed');
    for (const f of files) fs.rmSync(f);
    // A second target, and a plain migration from the source to it: it fails, the guest keeps running on A.
    const again = copyLayout(g.instance.runtime, storageB);
    const t2 = await KvmInstance.receive(dataB, again.data, { incoming: true, peer: 'A', listenHost: HOST, tls: tlsB }, { hostPaths });
    await g.instance.migrateTo(t2.uri!, 'B');
    assert.equal(await untilFinished(g.instance), 'failed');
    assert.equal(await g.instance.abortMigration(), 'resumed');
    assert.equal((await g.instance.migrationStatus()).runState, 'running');
    assert.equal(await t2.instance.abortMigration(), 'destroyed');
    for (const f of again.files) fs.rmSync(f);
    assert.deepEqual(fs.readdirSync(dataB), []);
  });

  it('a target killed mid-copy: the source keeps running with its disks, the target undoes everything', async () => {
    const { data, files } = copyLayout(g.instance.runtime, storageB);
    const hostPaths = testHostPaths(storageB, [loop]);
    const { instance: target, uri, nbd } = await KvmInstance.receive(dataB, data, { incoming: true, peer: 'A', listenHost: HOST, tls: tlsB, copyFiles: files }, { hostPaths });
    await g.instance.migrateTo(uri!, 'B', { maxBandwidthMiB: 1 }, { tls: { material: tlsA, hostname: HOST }, copy: { nbd: nbd!, disksOnly: true } });
    await sleep(1500);
    process.kill(target.pid!, 'SIGKILL');
    const deadline = Date.now() + 30_000;
    for (;;) {
      const v = await g.instance.migrationStatus();
      if ((v.mirrors ?? []).some((m) => m.error || m.status === 'concluded')) break;
      if (Date.now() > deadline) throw new Error(`the mirrors never noticed: ${JSON.stringify(v.mirrors)}`);
      await sleep(200);
    }
    assert.equal(await g.instance.abortMigration(), 'resumed');
    assert.equal(await target.abortMigration(), 'destroyed');
    for (const f of files) fs.rmSync(f);
    assert.deepEqual(fs.readdirSync(dataB), []);
    const before = diskChecks(g.instance.paths.consoleLog).last.get('vda')!.writes;
    await untilDiskChecks(g.instance.paths.consoleLog, (l) => (l.get('vda')?.writes ?? 0) > before + 1, 'more checks on A');
    assert.deepEqual(diskChecks(g.instance.paths.consoleLog).bad, []);
  });

  it('migrates to B with TLS while the guest writes: the guest runs on B and its disks match what it wrote', async () => {
    const src = g.instance;
    const { data, files } = copyLayout(src.runtime, storageB);
    const hostPaths = testHostPaths(storageB, [loop]);
    const { instance: target, uri, nbd } = await KvmInstance.receive(dataB, data, { incoming: true, peer: 'A', listenHost: HOST, tls: tlsB, copyFiles: files }, { hostPaths });
    onB = target;
    assert.match(nbd ?? '', /^127\.0\.0\.1:\d+$/);
    const send = { tls: { material: tlsA, hostname: HOST }, copy: { nbd: nbd!, disksOnly: true } };
    await src.migrateTo(uri!, 'B', {}, send);
    await untilMirrorsReady(src);
    await src.migrateTo(uri!, 'B', {}, { ...send, copy: { ...send.copy, disksOnly: false } });
    assert.equal(await untilFinished(src), 'completed');
    await src.endDiskCopy();
    await target.finishIncoming();
    const writesOnA = diskChecks(src.paths.consoleLog).last;
    await src.release();
    assert.equal(src.pid, undefined);
    assert.equal(fs.existsSync(src.paths.dir), false);
    const atB = (l: Map<string, { writes: number }>): boolean =>
      ['vda', 'vdb'].every((n) => (l.get(n)?.writes ?? 0) > (writesOnA.get(n)?.writes ?? 0) + 1);
    await untilDiskChecks(target.paths.consoleLog, atB, 'further checks of both disks on B');
    assert.deepEqual(diskChecks(target.paths.consoleLog).bad, [], 'every check on B passed');
    assert.deepEqual(target.runtime.block_devices.map((d) => path.dirname(d.path)), [path.join(storageB, data.instance), path.join(storageB, data.instance)]);
    assert.deepEqual(disksToCopy(target.runtime).length, 2);
  });

  it('an adopted block device (template blockdev) is shared, not copied: back to A, only the file disks are copied', async () => {
    const src = onB!;
    await src.hotAddDisk({ uuid: newUuid(), path: loop, template: 'blockdev' });
    await untilDiskChecks(src.paths.consoleLog, (l) => (l.get('vdc')?.writes ?? 0) >= 2, 'checks of the block device');
    const { data, files } = copyLayout(src.runtime, storageA);
    assert.equal(files.length, 2, 'two file disks to copy, the block device is not');
    const dataA = path.dirname(g.instance.paths.dir);
    const { instance: back, uri, nbd } = await KvmInstance.receive(dataA, data, { incoming: true, peer: 'B', listenHost: HOST, tls: tlsA, copyFiles: files }, { hostPaths: testHostPaths(storageA, [loop]) });
    const send = { tls: { material: tlsB, hostname: HOST }, copy: { nbd: nbd!, disksOnly: true } };
    await src.migrateTo(uri!, 'A', {}, send);
    await untilMirrorsReady(src);
    assert.equal((await src.migrationStatus()).mirrors?.length, 2);
    await src.migrateTo(uri!, 'A', {}, { ...send, copy: { ...send.copy, disksOnly: false } });
    assert.equal(await untilFinished(src), 'completed');
    await src.endDiskCopy();
    await back.finishIncoming();
    const onBWrites = diskChecks(src.paths.consoleLog).last;
    await src.release();
    onB = back;
    assert.ok(back.runtime.block_devices.some((d) => d.path === loop && d.template === 'blockdev'), 'the block device at the same path on A');
    await untilDiskChecks(back.paths.consoleLog, (l) => ['vda', 'vdb', 'vdc'].every((n) => (l.get(n)?.writes ?? 0) > (onBWrites.get(n)?.writes ?? 0) + 1), 'checks of all three disks on A');
    assert.deepEqual(diskChecks(back.paths.consoleLog).bad, []);
  });
});

describe('disk copy speed (1 GiB disk, 256 MiB of data; hypervisor layer)', function () {
  let g: BootedGuest;
  let storageA: string;
  let storageB: string;
  let dataB: string;
  let dataA2: string;
  let target: KvmInstance | undefined;

  before(async () => {
    storageA = tempDir('speedA');
    storageB = tempDir('speedB');
    dataB = tempDir('speedNodeB');
    dataA2 = tempDir('speedNodeA');
    const disk = makeDiskFile(storageA, 'big.img', 1024 * MiB);
    const fd = fs.openSync(disk, 'r+');
    const chunk = crypto.randomBytes(4 * MiB);
    for (let i = 0; i < 64; i++) fs.writeSync(fd, chunk, 0, chunk.length, i * 16 * MiB);
    fs.closeSync(fd);
    g = await bootGuest({ storageDir: storageA, disks: [{ uuid: newUuid(), path: disk }] });
  });
  after(async () => {
    for (const i of [target, g?.instance]) await i?.abortMigration().catch(() => undefined);
    await target?.stop().catch(() => undefined);
    await g?.destroy();
    for (const d of [storageA, storageB, dataB, dataA2]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  /** One migration with disk copy from `src` into `storage`/`dataDir`; returns the new instance, its disk file and the times. */
  async function measure(src: KvmInstance, storage: string, dataDir: string, tls?: { server: TlsMaterial; client: TlsMaterial }) {
    const { data, files } = copyLayout(src.runtime, storage);
    const r = await KvmInstance.receive(dataDir, data, { incoming: true, peer: 'X', listenHost: HOST, copyFiles: files, ...(tls ? { tls: tls.server } : {}) }, { hostPaths: testHostPaths(storage) });
    target = r.instance;
    const t0 = Date.now();
    const send = { copy: { nbd: r.nbd!, disksOnly: true }, ...(tls ? { tls: { material: tls.client, hostname: HOST } } : {}) };
    await src.migrateTo(r.uri!, 'Y', {}, send);
    await untilMirrorsReady(src, 600_000);
    const copyMs = Date.now() - t0;
    await src.migrateTo(r.uri!, 'Y', {}, { ...send, copy: { ...send.copy, disksOnly: false } });
    assert.equal(await untilFinished(src), 'completed');
    await src.endDiskCopy();
    const totalMs = Date.now() - t0;
    await r.instance.finishIncoming();
    await src.release();
    return { inst: r.instance, file: files[0], copyMs, totalMs };
  }

  it('copies the disk, plain and with TLS, and reports the time per GiB', async () => {
    const original = sha(path.join(storageA, 'big.img'), 1024 * MiB);
    const plain = await measure(g.instance, storageB, dataB);
    assert.equal(sha(plain.file, 1024 * MiB), original, 'the copy is byte for byte the source disk');
    console.log(`      disk copy (plain): 1 GiB disk with 256 MiB of data: copy READY after ${(plain.copyMs / 1000).toFixed(1)} s, migration done after ${(plain.totalMs / 1000).toFixed(1)} s`);
    const pki = tempDir('speed-pki');
    try {
      const ca = createCa(pki, 'test-ca');
      const server = readIdentity({ ca: ca.cert, ...issueCertificate(ca, pki, 'a', nodeRole('a')) });
      const client = readIdentity({ ca: ca.cert, ...issueCertificate(ca, pki, 'b', nodeRole('b')) });
      const back = await measure(plain.inst, storageA, dataA2, { server, client });
      assert.equal(sha(back.file, 1024 * MiB), original, 'the copy back is byte for byte the source disk');
      console.log(`      disk copy (TLS): 1 GiB disk with 256 MiB of data: copy READY after ${(back.copyMs / 1000).toFixed(1)} s, migration done after ${(back.totalMs / 1000).toFixed(1)} s`);
    } finally {
      fs.rmSync(pki, { recursive: true, force: true });
    }
  });
});
