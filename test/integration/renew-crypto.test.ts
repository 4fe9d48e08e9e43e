/**
 * Issue 11: gnt-cluster renew-crypto [--new-ca] on a running cluster with a
 * real guest: every certificate is reissued, the instance's QEMU keeps
 * running (same pid), a NIC hot-added afterwards through the CLI reaches the
 * guest, the replaced CLI certificate is refused, and NodeRenewCertificate
 * refuses material that does not fit.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connectNode } from '../../src/common/node-client';
import { createCa, issueCertificate, type Identity } from '../../src/common/pki';
import { MASTER_ROLE, nodeRole } from '../../src/common/cert-roles';
import { guestFiles } from '../support/guest';
import { TestCluster } from '../support/cli-cluster';
import { callRaw, codeName, masterClient } from '../support/peer-certs';

interface Details {
  instance: { nics: { mac: string }[] };
  runtime: { running: boolean; pid: number; guest: { known: boolean; nics: string[] } };
}

const BRIDGE = 'gntrenewbr0';

describe('gnt-cluster renew-crypto with a running instance (real daemons, real guest)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  let masterAddress: string;
  let pid: number;
  const pki = (f: string): string => path.join(c.clusterDir, 'pki', f);
  const read = (f: string): Buffer => fs.readFileSync(f);
  const fingerprint = (f: string): string => new crypto.X509Certificate(read(f)).fingerprint256;
  const nodeFile = (f: string): string => path.join(c.node('node1').certsDir, f);
  const masterId = (): Identity => ({ ca: pki('ca.pem'), cert: pki('master.pem'), key: pki('master.key') });
  /** A copy of the CLI's current certificate and key (the CA file given separately). */
  const saveCli = (tag: string): { cert: string; key: string } => {
    const dir = c.dir(`saved-cli-${tag}`);
    fs.copyFileSync(pki('cli.pem'), path.join(dir, 'cli.pem'));
    fs.copyFileSync(pki('cli.key'), path.join(dir, 'cli.key'));
    return { cert: path.join(dir, 'cli.pem'), key: path.join(dir, 'cli.key') };
  };

  async function hotAddSeen(mac: string): Promise<void> {
    c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=${mac},link=${BRIDGE}`, 'web1'));
    await c.waitGuest<Details>('web1', (d) => d.runtime.guest.nics.some((n) => n.includes(mac)), `the NIC ${mac}`);
  }

  function samePid(): void {
    const d = c.instanceInfo<Details>('web1');
    assert.equal(d.runtime.running, true);
    assert.equal(d.runtime.pid, pid, 'the QEMU of the instance was restarted');
  }

  before(async () => {
    const guest = guestFiles();
    spawnSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    spawnSync('ip', ['link', 'set', BRIDGE, 'up']);
    await c.init();
    masterAddress = JSON.parse(fs.readFileSync(path.join(c.clusterDir, 'cluster.json'), 'utf8')).master_address;
    await c.addNode('node1');
    c.ok(c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--memory', '256M', '--kernel', guest.kernel, '--initrd', guest.initrd,
      '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=16M', '--net', `link=${BRIDGE}`, 'web1'));
    const d = await c.waitGuest<Details>('web1', (x) => x.runtime.guest.nics.length === 1, 'its NIC');
    pid = d.runtime.pid;
    assert.ok(pid > 0);
  });

  after(async () => {
    c.gnt('gnt-instance', 'remove', 'web1');
    await c.destroy();
    spawnSync('ip', ['link', 'del', BRIDGE]);
  });

  describe('NodeRenewCertificate refuses material that does not fit, and changes nothing', () => {
    const files = ['ca.pem', 'node.pem', 'node.key'];
    let before: Buffer[];
    let valid: { cert: string; key: string };
    beforeEach(() => {
      before = files.map((f) => read(nodeFile(f)));
      const issued = issueCertificate({ cert: pki('ca.pem'), key: pki('ca.key') }, c.dir('renew-refusals'), 'node1', nodeRole('node1'));
      valid = { cert: read(issued.cert).toString(), key: read(issued.key).toString() };
    });
    afterEach(() => files.forEach((f, i) => assert.deepEqual(read(nodeFile(f)), before[i], `${f} was changed`)));

    const renew = async (req: { caBundlePem: string; certPem: string; keyPem: string }): Promise<string> => {
      const client = connectNode(c.node('node1').address, masterId());
      try {
        const { err } = await callRaw(client, 'NodeRenewCertificate', req);
        assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
        return err!.details;
      } finally {
        client.close();
      }
    };

    it('a key that does not belong to the certificate', async () => {
      const other = issueCertificate({ cert: pki('ca.pem'), key: pki('ca.key') }, c.dir('renew-other-key'), 'node1', nodeRole('node1'));
      const details = await renew({ caBundlePem: read(pki('ca.pem')).toString(), certPem: valid.cert, keyPem: read(other.key).toString() });
      assert.match(details, /the new key does not belong to the new certificate/);
    });

    it("a certificate whose role is another node's", async () => {
      const other = issueCertificate({ cert: pki('ca.pem'), key: pki('ca.key') }, c.dir('renew-node2'), 'node2', nodeRole('node2'));
      const details = await renew({ caBundlePem: read(pki('ca.pem')).toString(), certPem: read(other.cert).toString(), keyPem: read(other.key).toString() });
      assert.match(details, /the new certificate is for node node2, not for node node1/);
    });

    it('a bundle that does not verify the certificate', async () => {
      const dir = c.dir('renew-foreign');
      const foreign = createCa(dir, 'foreign');
      const details = await renew({ caBundlePem: read(foreign.cert).toString(), certPem: valid.cert, keyPem: valid.key });
      assert.match(details, /the new CA bundle does not verify the new certificate/);
    });

    it('a bundle that would lock the master out', async () => {
      const dir = c.dir('renew-lockout');
      const other = createCa(dir, 'other');
      const cert = issueCertificate(other, dir, 'node1', nodeRole('node1'));
      const details = await renew({ caBundlePem: read(other.cert).toString(), certPem: read(cert.cert).toString(), keyPem: read(cert.key).toString() });
      assert.match(details, /does not trust the master certificate this request came with/);
    });
  });

  it('gnt-node remove of a node with an instance is refused and changes nothing', () => {
    const r = c.gnt('gnt-node', 'remove', 'node1');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /node "node1" still has 1 instance\(s\)/);
    assert.equal(c.json<unknown[]>(c.gnt('gnt-node', 'list', '--output', 'json')).length, 1);
  });

  it('renew-crypto: new certificates everywhere, the instance untouched, a hot-added NIC reaches the guest, the old CLI certificate is refused', async () => {
    const old = { master: fingerprint(pki('master.pem')), cli: fingerprint(pki('cli.pem')), node: fingerprint(nodeFile('node.pem')), ca: read(pki('ca.pem')) };
    const oldCli = saveCli('same-ca');
    const out = c.ok(c.gnt('gnt-cluster', 'renew-crypto')).stdout;
    assert.match(out, /renewed the certificates of the master, the CLI and 1 node/);
    assert.notEqual(fingerprint(pki('master.pem')), old.master);
    assert.notEqual(fingerprint(pki('cli.pem')), old.cli);
    assert.notEqual(fingerprint(nodeFile('node.pem')), old.node, "the node's file holds its new certificate");
    assert.deepEqual(read(pki('ca.pem')), old.ca, 'the CA is the same');
    assert.equal(fs.statSync(nodeFile('node.key')).mode & 0o777, 0o600);
    assert.equal(fs.statSync(pki('cli.key')).mode & 0o777, 0o600);
    samePid();
    await hotAddSeen('52:54:00:ee:00:01');
    const client = masterClient(masterAddress, { ...oldCli, ca: pki('ca.pem') });
    try {
      const { err } = await callRaw(client, 'ListNodes', {});
      assert.equal(codeName(err), 'PERMISSION_DENIED', err?.details);
      assert.match(err!.details, /of cli is revoked \(replaced by gnt-cluster renew-crypto\)/);
    } finally {
      client.close();
    }
  });

  it('renew-crypto --new-ca rolls the CA over: the instance untouched, a hot-added NIC reaches the guest, the old CLI certificate is refused at TLS', async () => {
    const oldCa = read(pki('ca.pem'));
    const oldCli = saveCli('old-ca');
    const out = c.ok(c.gnt('gnt-cluster', 'renew-crypto', '--new-ca')).stdout;
    for (const step of ['step 1', 'step 2', 'step 3', 'step 4', 'step 5']) assert.match(out, new RegExp(step));
    const newCa = read(pki('ca.pem'));
    assert.notDeepEqual(newCa, oldCa);
    assert.equal((newCa.toString().match(/BEGIN CERTIFICATE/g) ?? []).length, 1, 'the master trusts only the new CA');
    assert.deepEqual(read(nodeFile('ca.pem')), newCa, 'the node trusts only the new CA');
    const backups = fs.readdirSync(path.join(c.clusterDir, 'pki')).filter((f) => f.startsWith('old-ca-'));
    assert.equal(backups.length, 1);
    assert.deepEqual(read(path.join(c.clusterDir, 'pki', backups[0], 'ca.pem')), oldCa, 'the old CA is kept as backup');
    assert.ok(fs.existsSync(path.join(c.clusterDir, 'pki', backups[0], 'ca.key')));
    assert.ok(!fs.readdirSync(path.join(c.clusterDir, 'pki')).some((f) => f.startsWith('renew-')), 'the staging directory is gone');
    samePid();
    await hotAddSeen('52:54:00:ee:00:02');
    const client = masterClient(masterAddress, { ...oldCli, ca: pki('ca.pem') });
    try {
      const { err } = await callRaw(client, 'ListNodes', {});
      assert.equal(codeName(err), 'UNAVAILABLE', err?.details);
    } finally {
      client.close();
    }
    // A certificate of the old CA for the master's role is refused by the node as well.
    const dir = c.dir('old-ca-master');
    const oldCaPaths = { cert: path.join(c.clusterDir, 'pki', backups[0], 'ca.pem'), key: path.join(c.clusterDir, 'pki', backups[0], 'ca.key') };
    const oldMaster = issueCertificate(oldCaPaths, dir, 'master', MASTER_ROLE);
    const n = connectNode(c.node('node1').address, { ...oldMaster, ca: pki('ca.pem') });
    try {
      assert.equal(codeName((await callRaw(n, 'NodeInfo', {})).err), 'UNAVAILABLE');
    } finally {
      n.close();
    }
  });

  it('the node restarted afterwards comes up with the files it was sent, and the instance still runs', async () => {
    await c.killNode('node1');
    await c.restartNode('node1');
    const info = c.json<{ live: { reachable: boolean } }>(c.gnt('gnt-node', 'info', 'node1', '--output', 'json'));
    assert.equal(info.live.reachable, true, JSON.stringify(info));
    samePid();
    await hotAddSeen('52:54:00:ee:00:03');
  });
});
