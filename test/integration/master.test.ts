/**
 * The master as real processes: gnt-cluster init, gnt-masterd and the CLI,
 * over real gRPC with mutual TLS, on a real SQLite file. When the node daemon
 * is built (dist/src/noded/main.js) and the test guest exists, also a real
 * gnt-noded with an instance whose NIC and disk are hot-plugged through the CLI.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CLI_ROLE } from '../../src/common/cert-roles';
import { createCa, issueCertificate } from '../../src/common/pki';
import { loadMasterProto } from '../../src/master/server';
import { GUEST_DIR, guestFiles, tempDir } from '../support/guest';
import { CLI_MAIN, expectOk, NODED_MAIN, runCli, startDaemon, stopDaemon, type CliRun, type Daemon } from '../support/cli-cluster';
import { freePort } from '../support/noded';

const MAIN = CLI_MAIN;
const NODED = NODED_MAIN;
type Run = CliRun;
describe('gnt-masterd and the gnt-* CLI (processes, mTLS, SQLite)', function () {
  this.timeout(180_000);
  let work: string;
  let clusterDir: string;
  let masterPort: number;
  let master: Daemon | undefined;
  const masterdLog = () => path.join(work, 'masterd.log');

  const gnt = (prog: string, ...args: string[]): Run => {
    return runCli(clusterDir, prog, ...args);
  };
  const ok = expectOk;
  const failure = (r: Run, code: number, re: RegExp): void => {
    assert.equal(r.code, code, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
    assert.match(lines[0], /^Failure: /);
    assert.match(lines[0], re);
  };
  const startMaster = async () => {
    master = await startDaemon([MAIN, 'gnt-masterd', '--cluster-dir', clusterDir], /gnt-masterd listening on 127\.0\.0\.1:\d+/, masterdLog());
  };
  const json = <T>(r: Run): T => JSON.parse(ok(r).stdout) as T;

  before(async () => {
    work = tempDir('master');
    clusterDir = path.join(work, 'cluster');
    masterPort = await freePort();
    ok(gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${masterPort}`, '--name', 'testcluster'));
    await startMaster();
  });

  after(async () => {
    await stopDaemon(master);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('init made the CA, certificates (keys 0600, dirs 0700) and the database, and refuses a second init', () => {
    const mode = (p: string) => fs.statSync(path.join(clusterDir, p)).mode & 0o777;
    assert.equal(mode('.'), 0o700);
    assert.equal(mode('pki'), 0o700);
    for (const k of ['pki/ca.key', 'pki/master.key', 'pki/cli.key', 'config.db']) assert.equal(mode(k), 0o600, k);
    for (const c of ['pki/ca.pem', 'pki/master.pem', 'pki/cli.pem']) assert.ok(fs.existsSync(path.join(clusterDir, c)), c);
    const info = json<{ master_address: string; name: string }>(gnt('gnt-cluster', 'info', '--output', 'json'));
    assert.equal(info.master_address, `127.0.0.1:${masterPort}`);
    assert.equal(info.name, 'testcluster');
    failure(gnt('gnt-cluster', 'init', '--master-address', '127.0.0.1:1'), 1, /already holds a cluster/);
  });

  it('issues node certificates into a directory of their own', () => {
    const out = path.join(work, 'certs-x');
    ok(gnt('gnt-cluster', 'issue-node-cert', 'nodex', '--out', out));
    assert.equal(fs.statSync(out).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(out, 'node.key')).mode & 0o777, 0o600);
    const text = spawnSync('openssl', ['x509', '-in', path.join(out, 'node.pem'), '-noout', '-subject', '-ext', 'subjectAltName'], { encoding: 'utf8' }).stdout;
    assert.match(text, /CN ?= ?nodex/);
    assert.match(text, /IP Address:127\.0\.0\.1/);
  });

  it('gnt-node add fails cleanly for an unreachable node daemon and adds nothing', () => {
    failure(gnt('gnt-node', 'add', 'ghost', '--address', '127.0.0.1:1'), 1, /node ghost was not added: cannot reach node ghost \(127\.0\.0\.1:1\)/);
    assert.deepEqual(json<unknown[]>(gnt('gnt-node', 'list', '--output', 'json')), []);
    assert.match(ok(gnt('gnt-node', 'list')).stdout, /^Node\s+Address\s+Instances\s+UUID\n$/);
    failure(gnt('gnt-node', 'info', 'ghost'), 1, /node "ghost" is unknown/);
  });

  it('refuses bad input with a clear one-line error and exit code 2 (usage) or 1 (unknown objects)', () => {
    const add = (...extra: string[]) => gnt('gnt-instance', 'add', '-n', 'n1', '--vcpus', '1', '--kernel', '/k', ...extra);
    failure(add('--memory', '512', 'web1'), 2, /memory "512" has no unit/);
    failure(add('--memory', '-512M', 'web1'), 2, /negative/);
    failure(add('--memory', '512M', 'a/b'), 2, /instance name "a\/b" is not valid/);
    failure(add('--memory', '512M', 'a..b'), 2, /not valid/);
    failure(add('--memory', '512M', 'x;reboot'), 2, /not valid/);
    failure(add('--memory', '512M', '--net', 'mac=52:54:00:zz:00:01', 'web1'), 2, /MAC address .* is malformed/);
    failure(add('--memory', '512M', '--disk', 'size=10', 'web1'), 2, /disk size "10" has no unit/);
    failure(gnt('gnt-instance', 'modify', '--net', '1:mac=bad', 'web1'), 2, /malformed/);
    failure(gnt('gnt-instance', 'modify', 'web1'), 2, /nothing to change/);
    failure(gnt('gnt-instance', 'bogus'), 2, /unknown command "gnt-instance bogus"/);
    failure(gnt('gnt-instance', 'list', '--bogus'), 2, /unknown option --bogus/);
    failure(gnt('gnt-instance', 'modify', '--net', '0:remove', 'nosuch'), 1, /instance "nosuch" is unknown/);
    failure(gnt('gnt-instance', 'info', 'nosuch'), 1, /instance "nosuch" is unknown/);
    failure(add('--memory', '512M', 'web1'), 1, /node "n1" is unknown/);
    assert.deepEqual(json<unknown[]>(gnt('gnt-instance', 'list', '--output', 'json')), []);
  });

  it('--submit prints the job id; gnt-job watch, info and list show it', () => {
    const r = ok(gnt('gnt-node', 'add', 'ghost2', '--address', '127.0.0.1:2', '--submit'));
    const id = r.stdout.trim();
    assert.match(id, /^\d+$/);
    const w = gnt('gnt-job', 'watch', id);
    assert.equal(w.code, 1);
    assert.match(w.stdout, /submitted: add node ghost2/);
    assert.match(w.stdout, /failed: node ghost2 was not added/);
    const info = json<{ id: string; status: string; log: { message: string }[]; op: { type: string } }>(gnt('gnt-job', 'info', id, '--output', 'json'));
    assert.equal(info.status, 'error');
    assert.equal(info.op.type, 'node-add');
    assert.ok(info.log.length >= 3);
    const list = json<{ id: string; status: string }[]>(gnt('gnt-job', 'list', '--output', 'json'));
    assert.ok(list.some((j) => j.id === id && j.status === 'error'));
    assert.match(ok(gnt('gnt-job', 'list')).stdout, /^ID\s+Status\s+Operation/);
    failure(gnt('gnt-job', 'info', '99999'), 1, /job 99999 does not exist/);
  });

  it('refuses clients without a certificate of the cluster CA (mTLS)', async () => {
    const Master = loadMasterProto().gnt.master.v1.Master;
    const ca = fs.readFileSync(path.join(clusterDir, 'pki/ca.pem'));
    const otherDir = path.join(work, 'other-ca');
    const otherCa = createCa(otherDir, 'intruder CA');
    const intruder = issueCertificate(otherCa, otherDir, 'intruder', CLI_ROLE);
    const attempt = (creds: grpc.ChannelCredentials) =>
      new Promise<grpc.ServiceError | null>((resolve) => {
        const c = new Master(`127.0.0.1:${masterPort}`, creds);
        c.ListNodes({}, { deadline: Date.now() + 5000 }, (err) => {
          c.close();
          resolve(err);
        });
      });
    const noCert = await attempt(grpc.credentials.createSsl(ca));
    assert.ok(noCert, 'a client without a certificate was served');
    assert.equal(noCert.code, grpc.status.UNAVAILABLE);
    const foreign = await attempt(grpc.credentials.createSsl(ca, fs.readFileSync(intruder.key), fs.readFileSync(intruder.cert)));
    assert.ok(foreign, 'a client with a certificate of another CA was served');
    assert.equal(foreign.code, grpc.status.UNAVAILABLE);
    const insecure = await attempt(grpc.credentials.createInsecure());
    assert.ok(insecure, 'a plaintext client was served');
    // The CLI's own certificate works.
    ok(gnt('gnt-node', 'list'));
  });

  it('marks a job that was running when the master was killed as failed, keeping its log', async () => {
    // A "node" that accepts TCP connections and never answers: NodeInfo hangs.
    const sockets: net.Socket[] = [];
    const black = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => black.listen(0, '127.0.0.1', r));
    const port = (black.address() as net.AddressInfo).port;
    try {
      const id = ok(gnt('gnt-node', 'add', 'slow', '--address', `127.0.0.1:${port}`, '--submit')).stdout.trim();
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const j = json<{ status: string; log: { message: string }[] }>(gnt('gnt-job', 'info', id, '--output', 'json'));
        if (j.status === 'running' && j.log.some((l) => /asking the node daemon/.test(l.message))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await stopDaemon(master, 'SIGKILL');
      await startMaster();
      const j = json<{ status: string; error: string; log: { message: string }[] }>(gnt('gnt-job', 'info', id, '--output', 'json'));
      assert.equal(j.status, 'error');
      assert.equal(j.error, 'interrupted by a master restart');
      const messages = j.log.map((l) => l.message);
      assert.ok(messages.some((m) => /submitted: add node slow/.test(m)), messages.join('\n'));
      assert.ok(messages.some((m) => /asking the node daemon/.test(m)), messages.join('\n'));
      assert.match(messages[messages.length - 1], /interrupted by a master restart/);
      assert.deepEqual(json<unknown[]>(gnt('gnt-node', 'list', '--output', 'json')), []);
      assert.match(fs.readFileSync(masterdLog(), 'utf8'), new RegExp(`job ${id} was interrupted by a master restart`));
    } finally {
      sockets.forEach((s) => s.destroy());
      black.close();
    }
  });

  describe('with a real gnt-noded and the test guest', function () {
    let noded: Daemon | undefined;
    const bridge = 'gntmbr0';
    let guest: { kernel: string; initrd: string };

    before(async () => {
      assert.ok(fs.existsSync(NODED), `${NODED} is not built: run npm run build`);
      guest = guestFiles();
      const certs = path.join(work, 'node1-certs');
      ok(gnt('gnt-cluster', 'issue-node-cert', 'node1', '--out', certs));
      const nodePort = await freePort();
      const data = path.join(work, 'node1-data');
      const storage = path.join(work, 'node1-storage');
      fs.mkdirSync(data, { recursive: true });
      fs.mkdirSync(storage, { recursive: true });
      spawnSync('ip', ['link', 'add', bridge, 'type', 'bridge']);
      spawnSync('ip', ['link', 'set', bridge, 'up']);
      noded = await startDaemon(
        [NODED, '--name', 'node1', '--listen', `127.0.0.1:${nodePort}`, '--data-dir', data, '--storage-dir', storage, '--image-dir', GUEST_DIR,
          '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key')],
        /gnt-noded node1 listening on/,
        path.join(work, 'noded.log'),
      );
      const r = ok(gnt('gnt-node', 'add', 'node1', '--address', `127.0.0.1:${nodePort}`));
      assert.match(r.stdout, /node node1 added/);
    });

    after(async () => {
      if (noded) gnt('gnt-instance', 'remove', 'web1');
      await stopDaemon(noded);
      spawnSync('ip', ['link', 'del', bridge]);
    });

    type Details = {
      instance: { adminState: string; nics: { index: number; uuid: string; mac: string }[]; disks: { index: number; uuid: string }[] };
      runtime: { known: boolean; running: boolean; nics: { uuid: string; pci: number; deviceId: string }[]; disks: { uuid: string; pci: number }[]; guest: { known: boolean; nics: string[]; disks: string[] } };
    };
    const details = () => json<Details>(gnt('gnt-instance', 'info', 'web1', '--output', 'json'));
    const waitGuest = async (pred: (d: Details) => boolean, what: string) => {
      const deadline = Date.now() + 60_000;
      let d = details();
      while (!pred(d)) {
        if (Date.now() > deadline) throw new Error(`guest never showed ${what}: ${JSON.stringify(d.runtime.guest)}`);
        await new Promise((r) => setTimeout(r, 500));
        d = details();
      }
      return d;
    };

    it('gnt-node info shows the config and the live NodeInfo', () => {
      const d = json<{ node: { name: string }; live: { reachable: boolean; qemuVersion: string } }>(gnt('gnt-node', 'info', 'node1', '--output', 'json'));
      assert.equal(d.node.name, 'node1');
      assert.equal(d.live.reachable, true);
      assert.ok(d.live.qemuVersion);
      assert.match(ok(gnt('gnt-node', 'info', 'node1')).stdout, /Live \(NodeInfo\):\n\s+Name: node1/);
    });

    it('an instance that cannot start is not added (config rolled back, node cleaned)', () => {
      failure(
        gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '128M', '--kernel', '/nonexistent/vmlinuz', '--disk', 'size=8M', 'bad1'),
        1,
        /instance bad1 was not added: it could not be started: node node1/,
      );
      assert.deepEqual(json<unknown[]>(gnt('gnt-instance', 'list', '--output', 'json')), []);
      assert.ok(!fs.existsSync(path.join(work, 'node1-storage', 'bad1')) || fs.readdirSync(path.join(work, 'node1-storage', 'bad1')).length === 0);
    });

    it('adds and starts an instance with a disk and a NIC (MAC generated, disk made by the node)', async () => {
      const r = ok(gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--maxvcpus', '2', '--memory', '256M', '--maxmem', '1G',
        '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1',
        '--disk', 'size=64M', '--net', `link=${bridge}`, 'web1'));
      assert.match(r.stdout, /instance web1 started/);
      const d = await waitGuest((x) => x.runtime.guest.known && x.runtime.guest.nics.length === 1, 'its first NIC');
      assert.equal(d.instance.adminState, 'up');
      assert.match(d.instance.nics[0].mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
      assert.equal(d.runtime.running, true);
      assert.ok(d.runtime.nics[0].pci >= 0);
      assert.equal(d.runtime.disks.length, 1);
      const list = json<{ instance: { name: string }; operState: string }[]>(gnt('gnt-instance', 'list', '--output', 'json'));
      assert.equal(list[0].operState, 'running');
      assert.match(ok(gnt('gnt-instance', 'list')).stdout, /web1\s+node1\s+up\s+running/);
    });

    it('hot-adds a NIC and a disk: the reply shows the PCI slot, the guest sees them, the config has them', async () => {
      const nic = ok(gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=52:54:00:12:34:56,link=${bridge}`, 'web1'));
      const slot = /hot-added at PCI slot (\d+) \((nic-[0-9a-f]+-pci-\d+)\)/.exec(nic.stdout);
      assert.ok(slot, nic.stdout);
      const disk = ok(gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=32M', 'web1'));
      assert.match(disk.stdout, /hot-added at PCI slot \d+ \(disk-/);
      const d = await waitGuest((x) => x.runtime.guest.nics.some((n) => n.includes('52:54:00:12:34:56')) && x.runtime.guest.disks.length === 2, 'the new NIC and disk');
      assert.equal(d.instance.nics.length, 2);
      assert.equal(d.instance.nics[1].mac, '52:54:00:12:34:56');
      assert.equal(d.instance.disks.length, 2);
      const rtNic = d.runtime.nics.find((n) => n.uuid === d.instance.nics[1].uuid)!;
      assert.equal(rtNic.pci, Number(slot[1]));
      assert.equal(rtNic.deviceId, slot[2]);
      const text = ok(gnt('gnt-instance', 'info', 'web1')).stdout;
      assert.match(text, new RegExp(`52:54:00:12:34:56.*${slot[2]}`));
      assert.match(text, /Guest agent: /);
    });

    it('refuses a duplicate MAC, an index out of range and a too large disk, changing nothing', () => {
      const before = details();
      failure(gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:mac=52:54:00:12:34:56', 'web1'), 1, /52:54:00:12:34:56 is already used/);
      failure(gnt('gnt-instance', 'modify', '--hotplug', '--net', '7:remove', 'web1'), 1, /NIC index 7 is out of range: instance web1 has 2 NICs \(0 to 1\)/);
      failure(gnt('gnt-instance', 'modify', '--hotplug', '--disk', '9:remove', 'web1'), 1, /disk index 9 is out of range/);
      const big = gnt('gnt-instance', 'modify', '--hotplug', '--disk', 'add:size=1000T', 'web1');
      failure(big, 1, /hot-add of new disk .* failed: .*RESOURCE_EXHAUSTED.*the configuration of this change is unchanged/);
      const after = details();
      assert.deepEqual(after.instance, before.instance);
    });

    it('hot-removes a NIC by index; a change without --hotplug applies at the next start', async () => {
      const r = ok(gnt('gnt-instance', 'modify', '--hotplug', '--net', '1:remove', 'web1'));
      assert.match(r.stdout, /hot-removed at PCI slot \d+/);
      await waitGuest((x) => !x.runtime.guest.nics.some((n) => n.includes('52:54:00:12:34:56')), 'the NIC gone');
      const c = ok(gnt('gnt-instance', 'modify', '--disk', 'add:size=16M', 'web1'));
      assert.match(c.stdout, /applies at the next start of web1/);
      const d = details();
      assert.equal(d.instance.disks.length, 3);
      assert.equal(d.runtime.disks.length, 2, 'not hot-plugged');
    });

    it('hot-modifies NIC 0 (new MAC at the same PCI slot)', async () => {
      const before = details();
      const slot = before.runtime.nics.find((n) => n.uuid === before.instance.nics[0].uuid)!.pci;
      const r = ok(gnt('gnt-instance', 'modify', '--hotplug', '--net', '0:mac=52:54:00:65:43:21', 'web1'));
      assert.match(r.stdout, new RegExp(`hot-modified at PCI slot ${slot}`));
      const d = await waitGuest((x) => x.runtime.guest.nics.some((n) => n.includes('52:54:00:65:43:21')), 'the new MAC');
      assert.equal(d.instance.nics[0].mac, '52:54:00:65:43:21');
      assert.equal(d.instance.nics[0].uuid, before.instance.nics[0].uuid);
    });

    it('--hotplug-if-possible falls back to the config on a stopped instance; start brings the device', async () => {
      ok(gnt('gnt-instance', 'stop', 'web1'));
      const stopped = details();
      assert.equal(stopped.instance.adminState, 'down');
      assert.equal(stopped.runtime.running, false);
      const r = ok(gnt('gnt-instance', 'modify', '--hotplug-if-possible', '--net', `add:link=${bridge}`, 'web1'));
      assert.match(r.stdout, /hotplug of NIC not possible/);
      assert.match(r.stdout, /applies at the next start/);
      failure(gnt('gnt-instance', 'modify', '--hotplug', '--net', '0:remove', 'web1'), 1, /failed: .*configuration of this change is unchanged/);
      ok(gnt('gnt-instance', 'start', 'web1'));
      const d = await waitGuest((x) => x.runtime.guest.known && x.runtime.guest.nics.length === 2 && x.runtime.guest.disks.length === 3, '2 NICs and 3 disks after the restart');
      assert.equal(d.runtime.nics.length, 2);
      assert.equal(d.runtime.disks.length, 3);
    });

    it('removes the instance', () => {
      ok(gnt('gnt-instance', 'remove', 'web1'));
      assert.deepEqual(json<unknown[]>(gnt('gnt-instance', 'list', '--output', 'json')), []);
      failure(gnt('gnt-instance', 'info', 'web1'), 1, /unknown/);
    });
  });
});
