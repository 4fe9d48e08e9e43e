/**
 * common/cert-roles.ts and common/rpc-guard.ts: role parsing, and the guard
 * on a real in-process gRPC server over mutual TLS whose handler waits
 * until the test lets it go (to hold calls in flight).
 */
import * as grpc from '@grpc/grpc-js';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  altNamesOf, certFacts, CertRoleError, CLI_ROLE, describeRole, MASTER_ROLE, nodeRole, roleFromSubjectAltName, roleUri, verifiedBy,
} from '../../src/common/cert-roles';
import { createCa, issueCertificate, keyMatchesCert, LiveTls, readIdentity, writeFileDurably } from '../../src/common/pki';
import { loadNodeProto } from '../../src/common/proto';
import { guardService } from '../../src/common/rpc-guard';
import { connectNode, type NodeDaemonClient } from '../../src/common/node-client';
import { tempDir } from '../support/guest';
import { callRaw, codeName } from '../support/peer-certs';

describe('cert-roles', () => {
  it('writes and reads the three roles as SAN URIs', () => {
    assert.equal(roleUri(MASTER_ROLE), 'urn:gnt-hotplug:master');
    assert.equal(roleUri(CLI_ROLE), 'urn:gnt-hotplug:cli');
    assert.equal(roleUri(nodeRole('node1')), 'urn:gnt-hotplug:node:node1');
    assert.deepEqual(roleFromSubjectAltName('DNS:localhost, IP Address:127.0.0.1, URI:urn:gnt-hotplug:node:node1'), nodeRole('node1'));
    assert.deepEqual(roleFromSubjectAltName('URI:urn:gnt-hotplug:cli'), CLI_ROLE);
    assert.equal(describeRole(nodeRole('n2')), 'node n2');
    assert.deepEqual(altNamesOf('DNS:localhost, DNS:n1, IP Address:127.0.0.1, URI:urn:gnt-hotplug:master'), { dns: ['localhost', 'n1'], ip: ['127.0.0.1'] });
  });

  it('refuses no role (with the renew-crypto hint), two roles, an unknown role and a bad node name', () => {
    assert.throws(() => roleFromSubjectAltName('DNS:localhost'), (e: Error) => e instanceof CertRoleError && /renew-crypto/.test(e.message));
    assert.throws(() => roleFromSubjectAltName(undefined), CertRoleError);
    assert.throws(() => roleFromSubjectAltName('URI:urn:gnt-hotplug:cli, URI:urn:gnt-hotplug:master'), /2 gnt-hotplug roles/);
    assert.throws(() => roleFromSubjectAltName('URI:urn:gnt-hotplug:root'), /not one of master, cli, node:NAME/);
    assert.throws(() => roleFromSubjectAltName('URI:urn:gnt-hotplug:node:a..b'), CertRoleError);
    assert.throws(() => roleUri(nodeRole('x'.repeat(100))), /cannot be put in a certificate role/);
  });
});

describe('pki', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('pki')));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('issues certificates with their role; checks keys and bundles', () => {
    const ca = createCa(path.join(dir, 'ca'), 'ca');
    const other = createCa(path.join(dir, 'other'), 'other');
    const n = issueCertificate(ca, path.join(dir, 'certs'), 'node1', nodeRole('node1'));
    const m = issueCertificate(ca, path.join(dir, 'certs'), 'master', MASTER_ROLE);
    assert.deepEqual(certFacts(fs.readFileSync(n.cert)).role, nodeRole('node1'));
    assert.ok(keyMatchesCert(fs.readFileSync(n.key), fs.readFileSync(n.cert)));
    assert.ok(!keyMatchesCert(fs.readFileSync(m.key), fs.readFileSync(n.cert)));
    assert.ok(verifiedBy(fs.readFileSync(n.cert), fs.readFileSync(ca.cert)));
    assert.ok(!verifiedBy(fs.readFileSync(n.cert), fs.readFileSync(other.cert)));
    const both = Buffer.concat([fs.readFileSync(other.cert), fs.readFileSync(ca.cert)]);
    assert.ok(verifiedBy(fs.readFileSync(n.cert), both), 'a two-CA bundle verifies a certificate of either');
    assert.equal(fs.statSync(n.key).mode & 0o777, 0o600);
  });

  it('writes files durably with their mode, leaving no temporary file', () => {
    const f = path.join(dir, 'x.key');
    fs.writeFileSync(f, 'old');
    writeFileDurably(f, 'new', 0o600);
    assert.equal(fs.readFileSync(f, 'utf8'), 'new');
    assert.equal(fs.statSync(f).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(dir), ['x.key']);
  });
});

describe('rpc-guard on a real gRPC server over mutual TLS', () => {
  let dir: string;
  let server: grpc.Server;
  let address: string;
  let guarded: ReturnType<typeof guardService>;
  const waiting: (() => void)[] = [];
  const ids: Record<string, { ca: string; cert: string; key: string }> = {};
  const clients: NodeDaemonClient[] = [];
  const client = (who: string): NodeDaemonClient => {
    const c = connectNode(address, ids[who]);
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = tempDir('guard');
    const ca = createCa(path.join(dir, 'ca'), 'ca');
    const certs = path.join(dir, 'certs');
    for (const [who, role] of [['node1', nodeRole('node1')], ['master', MASTER_ROLE], ['cli', CLI_ROLE], ['node2', nodeRole('node2')]] as const)
      ids[who] = { ...issueCertificate(ca, certs, who, role), ca: ca.cert };
    const revoked = certFacts(fs.readFileSync(ids.cli.cert)).fingerprint;
    const handlers = {
      // Held until the test releases it.
      NodeInfo: (_call: unknown, cb: grpc.sendUnaryData<object>) => waiting.push(() => cb(null, { name: 'node1' })),
      InstanceInfo: (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<object>) =>
        cb({ code: grpc.status.NOT_FOUND, details: `instance ${call.request.name} is unknown` }, null),
    };
    guarded = guardService(loadNodeProto().gnt.node.v1.NodeDaemon.service, handlers, {
      service: 'test node',
      allow: (_m, role) => (role.kind === 'master' || role.kind === 'cli' ? undefined : 'the master certificate'),
      refuse: (f) => (f.fingerprint === revoked ? 'revoked for the test' : undefined),
      maxInFlight: 2,
      maxFieldChars: 100,
    });
    server = new grpc.Server();
    server.addService(guarded.definition, guarded.handlers);
    const live = new LiveTls(readIdentity(ids.node1));
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', live.serverCredentials(), (e, p) => (e ? reject(e) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });

  after(() => {
    for (const c of clients) c.close();
    server.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a role that is not allowed: PERMISSION_DENIED naming the role and what is needed', async () => {
    const { err } = await callRaw(client('node2'), 'InstanceInfo', { name: 'x' });
    assert.equal(codeName(err), 'PERMISSION_DENIED');
    assert.equal(err!.details, 'test node: InstanceInfo needs the master certificate; the caller presented the certificate of node node2');
  });

  it('a refused (revoked) certificate: PERMISSION_DENIED with the reason', async () => {
    const { err } = await callRaw(client('cli'), 'InstanceInfo', { name: 'x' });
    assert.equal(codeName(err), 'PERMISSION_DENIED');
    assert.match(err!.details, /revoked for the test/);
  });

  it('a field over maxFieldChars: INVALID_ARGUMENT naming it; the handler is not called', async () => {
    const { err } = await callRaw(client('master'), 'InstanceInfo', { name: 'n'.repeat(101) });
    assert.equal(codeName(err), 'INVALID_ARGUMENT');
    assert.equal(err!.details, 'InstanceInfo: field name (101 characters) is too long; at most 100 are accepted');
  });

  it('the cap: the third call at once from one certificate is RESOURCE_EXHAUSTED at once; the two held ones succeed; the count goes back to 0', async () => {
    const c = client('master');
    const held = [callRaw(c, 'NodeInfo', {}), callRaw(c, 'NodeInfo', {})];
    while (waiting.length < 2) await new Promise((r) => setTimeout(r, 10));
    const third = await callRaw(c, 'NodeInfo', {});
    assert.equal(codeName(third.err), 'RESOURCE_EXHAUSTED');
    assert.match(third.err!.details, /2 calls of this certificate \(master\) are already running, the limit is 2/);
    // Calls that are refused before the cap do not count, nor do other methods' failures.
    assert.equal(codeName((await callRaw(c, 'InstanceInfo', { name: 'x' })).err), 'RESOURCE_EXHAUSTED');
    waiting.splice(0).forEach((go) => go());
    for (const r of await Promise.all(held)) assert.equal(codeName(r.err), 'OK');
    assert.equal(guarded.inFlight().size, 0);
    assert.equal(codeName((await callRaw(c, 'InstanceInfo', { name: 'x' })).err), 'NOT_FOUND', 'served again once the held calls ended');
  });
});
