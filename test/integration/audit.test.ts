/**
 * The audit trail end to end (docs/audit.md) on a real cluster: gnt-masterd,
 * gnt-noded, QEMU and the test guest. A change made through the CLI with the
 * CLI certificate names that certificate in `gnt-job info` and in the
 * node's audit.log with the same operation id; a failing change is audited
 * as failed; start and stop are audited, by the local administrator when
 * they came over the master's unix socket.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { TestCluster, type CliRun } from '../support/cli-cluster';

interface Job { id: string; opType: string; status: string; requestedBy: string }
interface Rec { time: string; instance: string; action: string; deviceKind: string; deviceUuid: string; operationId: string; requestedBy: string; caller: string; outcome: string; message: string }
interface Audit { node: string; records: Rec[]; skipped: number }
interface Details { instance: { nics: Array<{ uuid: string; mac: string }> }; runtime: { running: boolean; guest: { known: boolean; nics: string[] } } }

const NAME = 'au1';
const MAC = '52:54:00:a0:d1:07';

describe('audit trail (gnt-job info, node audit.log, gnt-instance audit)', function () {
  this.timeout(300_000);
  const c = new TestCluster();
  /** A CLI command over mutual TLS with the cluster's CLI certificate (not the local socket). */
  const withCliCert = (fn: () => CliRun): CliRun => {
    const before = process.env.GNT_CLI_TRANSPORT;
    process.env.GNT_CLI_TRANSPORT = 'tls';
    try {
      return fn();
    } finally {
      if (before === undefined) delete process.env.GNT_CLI_TRANSPORT;
      else process.env.GNT_CLI_TRANSPORT = before;
    }
  };
  const lastJob = (): Job => c.json<Job[]>(c.gnt('gnt-job', 'list', '--output', 'json')).at(-1)!;
  const audit = (): Rec[] => c.json<Audit>(c.gnt('gnt-instance', 'audit', NAME, '--output', 'json')).records;
  let cliIdentity: string;
  let masterIdentity: string;

  before(async () => {
    const guest = guestFiles();
    await c.init();
    await c.addNode('node1');
    const fp = (f: string): string => new crypto.X509Certificate(fs.readFileSync(path.join(c.clusterDir, 'pki', f))).fingerprint256;
    cliIdentity = `cli certificate ${fp('cli.pem')}`;
    masterIdentity = `master certificate ${fp('master.pem')}`;
    c.ok(c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', '1', '--maxvcpus', '2', '--memory', '256M', '--maxmem', '512M',
      '--kernel', guest.kernel, '--initrd', guest.initrd, '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', NAME));
  });
  after(async () => {
    c.gnt('gnt-instance', 'remove', NAME);
    await c.destroy();
  });

  it('a start over the local socket is audited as ok, requested by the local administrator, called by the master certificate', () => {
    const start = audit().filter((r) => r.action === 'start');
    assert.equal(start.length, 1, JSON.stringify(audit()));
    assert.deepEqual([start[0].outcome, start[0].requestedBy, start[0].caller], ['ok', 'local administrator (master unix socket)', masterIdentity]);
    const job = c.json<Job>(c.gnt('gnt-job', 'info', lastJob().id, '--output', 'json'));
    assert.equal(job.requestedBy, 'local administrator (master unix socket)');
  });

  it('modify --hotplug --net add with the CLI certificate: gnt-job info and the node audit record name it, with the same operation id', async () => {
    withCliCert(() => c.ok(c.gnt('gnt-instance', 'modify', '--hotplug', '--net', `add:mac=${MAC}`, NAME)));
    const job = lastJob();
    assert.equal(job.opType, 'instance-modify');
    assert.equal(job.requestedBy, cliIdentity, 'job list JSON');
    const text = c.ok(c.gnt('gnt-job', 'info', job.id)).stdout;
    assert.match(text, new RegExp(`Requested by:\\s+${cliIdentity.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const opId = /operation (\S+)/.exec(text)?.[1];
    const d = await c.waitGuest<Details>(NAME, (x) => x.runtime.guest.nics.some((l) => l.includes(MAC)), 'the new NIC', 120_000);
    const uuid = d.instance.nics.find((n) => n.mac === MAC)!.uuid;
    const rec = audit().find((r) => r.action === 'hotplug-add');
    assert.ok(rec, JSON.stringify(audit()));
    assert.deepEqual([rec.deviceKind, rec.deviceUuid, rec.outcome, rec.requestedBy, rec.caller], ['nic', uuid, 'ok', cliIdentity, masterIdentity]);
    assert.ok(rec.operationId, 'the record has the operation id');
    assert.ok(text.includes(rec.operationId), `gnt-job info names operation ${rec.operationId} (found ${opId ?? 'none'}):\n${text}`);
    // And the file itself on the node.
    const lines = fs.readFileSync(path.join(c.node('node1').dataDir, '.audit', 'audit.log'), 'utf8').trimEnd().split('\n');
    assert.ok(lines.some((l) => (JSON.parse(l) as Rec).operationId === rec.operationId));
  });

  it('a change the node refuses is audited as failed with its message', () => {
    const r = withCliCert(() => c.gnt('gnt-instance', 'modify', '--hotplug', '--net', 'add:link=nosuchbr9', NAME));
    assert.notEqual(r.code, 0, r.stdout);
    const rec = audit().filter((x) => x.action === 'hotplug-add').at(-1)!;
    assert.equal(rec.outcome, 'failed', JSON.stringify(rec));
    assert.match(rec.message, /nosuchbr9/);
    assert.equal(rec.requestedBy, cliIdentity);
  });

  it('a stop is audited, and gnt-node audit shows the node\'s records in a table', () => {
    c.ok(c.gnt('gnt-instance', 'stop', NAME));
    const stop = audit().filter((r) => r.action === 'stop');
    assert.equal(stop.length, 1);
    assert.equal(stop[0].outcome, 'ok');
    const table = c.ok(c.gnt('gnt-node', 'audit', 'node1')).stdout;
    assert.match(table, new RegExp(`${NAME}\\s+stop\\s+.*ok`));
    assert.match(table, /hotplug-add\s+nic /);
  });
});
