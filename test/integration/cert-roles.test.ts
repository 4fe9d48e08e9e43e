/**
 * Issue 11: a certificate the cluster CA signed may do only what its role
 * allows. Real gnt-masterd and gnt-noded processes, real mutual TLS, the
 * certificates the cluster itself issued.
 */
import * as assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { connectNode, type NodeDaemonClient } from '../../src/common/node-client';
import { createCa, issueCertificate, type Identity } from '../../src/common/pki';
import { certFacts, CLI_ROLE, MASTER_ROLE } from '../../src/common/cert-roles';
import { freePort } from '../support/noded';
import { startDaemon, stopDaemon, NODED_MAIN, TestCluster, type Daemon } from '../support/cli-cluster';
import { callRaw, codeName, masterClient, rawCertificate } from '../support/peer-certs';

describe('certificate roles: who may call what (real daemons, real mTLS)', function () {
  this.timeout(180_000);
  const c = new TestCluster();
  let masterAddress: string;
  const pki = (f: string): string => path.join(c.clusterDir, 'pki', f);
  const nodeId = (name: string): Identity => {
    const d = c.node(name).certsDir;
    return { ca: path.join(d, 'ca.pem'), cert: path.join(d, 'node.pem'), key: path.join(d, 'node.key') };
  };
  const nodeNames = (): string[] => c.json<{ name: string }[]>(c.gnt('gnt-node', 'list', '--output', 'json')).map((n) => n.name).sort();
  const extra: Daemon[] = [];

  /** A second gnt-noded presenting `name`'s certificate, on its own port and directories. */
  async function impostor(name: string): Promise<string> {
    const port = await freePort();
    const id = nodeId(name);
    const base = c.dir(`impostor-${name}-${port}`);
    const d = await startDaemon(
      [NODED_MAIN, '--name', name, '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(base, 'data'), '--storage-dir', path.join(base, 'storage'),
        '--ca', id.ca, '--cert', id.cert, '--key', id.key],
      new RegExp(`gnt-noded ${name} listening on`), path.join(base, 'log'));
    extra.push(d);
    return `127.0.0.1:${port}`;
  }

  before(async () => {
    await c.init();
    masterAddress = JSON.parse(fs.readFileSync(path.join(c.clusterDir, 'cluster.json'), 'utf8')).master_address;
    await c.addNode('node1');
    await c.addNode('node2');
  });

  after(async () => {
    for (const d of extra) await stopDaemon(d);
    await c.destroy();
  });

  describe("another node's certificate is refused by a node daemon", () => {
    let client: NodeDaemonClient;
    before(() => {
      client = connectNode(c.node('node1').address, nodeId('node2'));
    });
    after(() => client.close());

    for (const [method, req] of [
      ['HotplugDevice', { instance: 'web1', operationId: 'op-1', action: 'ADD', nic: { uuid: 'u1', mac: '52:54:00:00:00:01' } }],
      ['InstanceInfo', { name: 'web1' }],
      ['NodeRenewCertificate', { caBundlePem: '', certPem: '', keyPem: '' }],
    ] as const) {
      it(`${method} from node2's certificate: PERMISSION_DENIED naming the role and what is needed`, async () => {
        const { err } = await callRaw(client, method, req);
        assert.equal(codeName(err), 'PERMISSION_DENIED', err?.details);
        assert.match(err!.details, new RegExp(`${method} needs the master certificate.*presented the certificate of node node2`));
      });
    }

    it('the master certificate is served (the same calls work for the master)', async () => {
      const m = connectNode(c.node('node1').address, { ca: pki('ca.pem'), cert: pki('master.pem'), key: pki('master.key') });
      try {
        const { err } = await callRaw(m, 'InstanceInfo', { name: 'web1' });
        assert.equal(codeName(err), 'NOT_FOUND', err?.details);
      } finally {
        m.close();
      }
    });
  });

  describe("a node's certificate is refused by the master", () => {
    for (const [method, req] of [
      ['SubmitJob', { instanceStart: { name: 'web1' } }],
      ['ListNodes', {}],
    ] as const) {
      it(`${method} from node2's certificate: PERMISSION_DENIED`, async () => {
        const client = masterClient(masterAddress, nodeId('node2'));
        try {
          const { err } = await callRaw(client, method, req);
          assert.equal(codeName(err), 'PERMISSION_DENIED', err?.details);
          assert.match(err!.details, new RegExp(`master: ${method} needs the CLI or master certificate.*presented the certificate of node node2`));
        } finally {
          client.close();
        }
      });
    }

    it('WatchJob (a server stream) from node2\'s certificate: PERMISSION_DENIED', async () => {
      const client = masterClient(masterAddress, nodeId('node2'));
      try {
        const err = await new Promise<grpc.ServiceError>((resolve) => {
          const s = client.WatchJob({ id: 1, afterSeq: 0 });
          s.on('data', () => undefined);
          s.on('error', resolve);
        });
        assert.equal(codeName(err), 'PERMISSION_DENIED', err.details);
      } finally {
        client.close();
      }
    });
  });

  describe('certificates outside the rules', () => {
    it('a certificate of another CA (even with the master role) is refused at TLS by the node and the master', async () => {
      const dir = c.dir('other-ca');
      const other = createCa(dir, 'intruder CA');
      const id = { ...issueCertificate(other, dir, 'intruder', MASTER_ROLE), ca: pki('ca.pem') };
      const n = connectNode(c.node('node1').address, id);
      const m = masterClient(masterAddress, id);
      try {
        assert.equal(codeName((await callRaw(n, 'NodeInfo', {})).err), 'UNAVAILABLE');
        assert.equal(codeName((await callRaw(m, 'ListNodes', {})).err), 'UNAVAILABLE');
      } finally {
        n.close();
        m.close();
      }
    });

    it('a certificate of the cluster CA without a role (an old cluster) is UNAUTHENTICATED with the renew-crypto hint', async () => {
      const old = rawCertificate({ cert: pki('ca.pem'), key: pki('ca.key') }, c.dir('old'), 'old-cli', 'DNS:localhost,IP:127.0.0.1');
      const id = { ...old, ca: pki('ca.pem') };
      const m = masterClient(masterAddress, id);
      const n = connectNode(c.node('node1').address, id);
      try {
        for (const { err } of [await callRaw(m, 'ListNodes', {}), await callRaw(n, 'NodeInfo', {})]) {
          assert.equal(codeName(err), 'UNAUTHENTICATED', err?.details);
          assert.match(err!.details, /no gnt-hotplug role.*gnt-cluster renew-crypto/);
        }
      } finally {
        m.close();
        n.close();
      }
    });

    it('a node daemon refuses to start with a certificate for another node', async () => {
      const id = nodeId('node2');
      const base = c.dir('wrong-start');
      const port = await freePort();
      await assert.rejects(
        startDaemon([NODED_MAIN, '--name', 'node7', '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(base, 'd'), '--storage-dir', path.join(base, 's'),
          '--ca', id.ca, '--cert', id.cert, '--key', id.key], /gnt-noded node7 listening on/, path.join(base, 'log')),
        /certificate given with --cert is for node node2, not for node node7/,
      );
    });
  });

  describe('gnt-node add checks the node certificate names the node', () => {
    it("adding node3 at a daemon presenting node2's certificate fails clearly and adds nothing", async () => {
      const before = nodeNames();
      const address = await impostor('node2');
      const r = c.gnt('gnt-node', 'add', 'node3', '--address', address);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /node node3 was not added: .*presented the certificate of node node2, not of node node3/);
      assert.deepEqual(nodeNames(), before);
    });

    it("gnt-node add records the node certificate's fingerprint; gnt-node remove revokes it: re-adding with it is refused", async () => {
      const n3 = await c.addNode('node3');
      assert.deepEqual(nodeNames(), ['node1', 'node2', 'node3']);
      const fp = new crypto.X509Certificate(fs.readFileSync(nodeId('node3').cert)).fingerprint256;
      const removed = c.ok(c.gnt('gnt-node', 'remove', 'node3'));
      assert.match(removed.stdout, new RegExp(`node node3 removed; certificate\\(s\\) revoked: ${fp}`));
      assert.deepEqual(nodeNames(), ['node1', 'node2']);
      // The same daemon, with the same certificate, cannot come back.
      const again = c.gnt('gnt-node', 'add', 'node3', '--address', n3.address);
      assert.equal(again.code, 1, again.stdout + again.stderr);
      assert.match(again.stderr, /node node3 was not added: .*certificate .* of node node3 is revoked \(node node3 was removed\); issue a new one with gnt-cluster issue-node-cert/);
      assert.deepEqual(nodeNames(), ['node1', 'node2']);
      // Nor at another address (a connection the master makes to whatever address).
      const elsewhere = await impostor('node3');
      const third = c.gnt('gnt-node', 'add', 'node3', '--address', elsewhere);
      assert.equal(third.code, 1);
      assert.match(third.stderr, /revoked/);
      // A new certificate for node3 is accepted.
      await c.killNode('node3');
      c.ok(c.gnt('gnt-cluster', 'issue-node-cert', 'node3', '--out', n3.certsDir));
      await c.restartNode('node3');
      c.ok(c.gnt('gnt-node', 'add', 'node3', '--address', n3.address));
      assert.deepEqual(nodeNames(), ['node1', 'node2', 'node3']);
    });

    it('removing an unknown node fails and changes nothing', async () => {
      const r = c.gnt('gnt-node', 'remove', 'node9');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /node "node9" is unknown/);
    });
  });

  it('an old-style CLI certificate without a role is refused with the hint; renew-crypto --local reissues master and CLI with roles', async () => {
    const old = rawCertificate({ cert: pki('ca.pem'), key: pki('ca.key') }, c.dir('old-cli'), 'cli', 'DNS:localhost,IP:127.0.0.1');
    fs.copyFileSync(old.cert, pki('cli.pem'));
    fs.copyFileSync(old.key, pki('cli.key'));
    // The master's local socket carries no certificate: these calls go over TLS.
    process.env.GNT_CLI_TRANSPORT = 'tls';
    try {
      const refused = c.gnt('gnt-node', 'list');
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /no gnt-hotplug role .*gnt-cluster renew-crypto/);
      assert.match(c.ok(c.gnt('gnt-cluster', 'renew-crypto', '--local')).stdout, /restart gnt-masterd/);
      assert.deepEqual(certFacts(fs.readFileSync(pki('cli.pem'))).role, CLI_ROLE);
      assert.deepEqual(certFacts(fs.readFileSync(pki('master.pem'))).role, MASTER_ROLE);
      c.ok(c.gnt('gnt-node', 'list'));
    } finally {
      delete process.env.GNT_CLI_TRANSPORT;
    }
    await c.restartMaster({}, 'SIGTERM');
    const nodes = c.json<{ name: string }[]>(c.gnt('gnt-node', 'list', '--output', 'json'));
    assert.ok(nodes.length >= 2);
    const info = c.json<{ live: { reachable: boolean } }>(c.gnt('gnt-node', 'info', 'node1', '--output', 'json'));
    assert.equal(info.live.reachable, true, 'the restarted master reaches node1 with its reissued certificate');
  });

  it('a plain TCP server is not a node: gnt-node add against it fails and adds nothing', async () => {
    const sockets: net.Socket[] = [];
    const srv = net.createServer((s) => {
      sockets.push(s);
      s.end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const r = c.gnt('gnt-node', 'add', 'node8', '--address', `127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
      assert.equal(r.code, 1);
      assert.ok(!nodeNames().includes('node8'));
    } finally {
      srv.close();
    }
  });
});
