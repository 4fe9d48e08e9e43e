/**
 * Issue 11: bounded, well-behaved gRPC interfaces (common/rpc-guard.ts) on a
 * real gnt-masterd and gnt-noded: a huge field, bytes that are not a
 * message, a message over the size limit, and more calls at once than the
 * cap are each answered at once with a short status, and the same channel
 * keeps working after each.
 */
import * as assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { connectNode, type NodeDaemonClient } from '../../src/common/node-client';
import { MAX_STATUS_DETAILS } from '../../src/common/excerpt';
import type { MasterClient } from '../../src/generated/gnt/master/v1/Master';
import { TestCluster } from '../support/cli-cluster';
import { callRaw, codeName, masterClient, sendBytes, sslCreds } from '../support/peer-certs';

const BIG = 'x'.repeat(100 * 1024);
/** Field 1 as a varint that is cut off: no message parses from it. */
const MALFORMED = Buffer.from([0x08, 0xff]);
const MAX_IN_FLIGHT = 3;

describe('bounded gRPC interfaces (real daemons, real mTLS)', function () {
  this.timeout(180_000);
  const c = new TestCluster();
  let masterAddress: string;
  let node: NodeDaemonClient;
  let master: MasterClient;
  const pki = (f: string): string => path.join(c.clusterDir, 'pki', f);
  const masterId = () => ({ ca: pki('ca.pem'), cert: pki('master.pem'), key: pki('master.key') });
  const cliId = () => ({ ca: pki('ca.pem'), cert: pki('cli.pem'), key: pki('cli.key') });
  const short = (err: grpc.ServiceError | null): void => {
    assert.ok(err, 'expected an error');
    assert.ok(Buffer.byteLength(err.details) <= MAX_STATUS_DETAILS + 32, `status details of ${Buffer.byteLength(err.details)} bytes`);
  };
  const nodeStillWorks = async (): Promise<void> => assert.equal(codeName((await callRaw(node, 'NodeInfo', {})).err), 'OK');
  const masterStillWorks = async (): Promise<void> => assert.equal(codeName((await callRaw(master, 'ListNodes', {})).err), 'OK');

  before(async () => {
    await c.init({ GNT_MASTERD_MAX_IN_FLIGHT: String(MAX_IN_FLIGHT) });
    masterAddress = JSON.parse(fs.readFileSync(path.join(c.clusterDir, 'cluster.json'), 'utf8')).master_address;
    await c.addNode('node1');
    node = connectNode(c.node('node1').address, masterId());
    master = masterClient(masterAddress, cliId());
  });

  after(async () => {
    node.close();
    master.close();
    await c.destroy();
  });

  describe('a 100 KB field', () => {
    it('HotplugDevice with a 100 KB instance name: INVALID_ARGUMENT naming the field, short; the channel works after', async () => {
      const { err } = await callRaw(node, 'HotplugDevice', { instance: BIG, operationId: 'op-big', action: 'ADD', nic: { uuid: 'u', mac: '52:54:00:00:00:01' } });
      assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
      assert.match(err!.details, /HotplugDevice: field instance \(102400 characters\) is too long; at most 8192/);
      short(err);
      await nodeStillWorks();
    });

    it('HotplugDevice with a 100 KB MAC: the same', async () => {
      const { err } = await callRaw(node, 'HotplugDevice', { instance: 'web1', operationId: 'op-big', action: 'ADD', nic: { uuid: 'u', mac: BIG } });
      assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
      assert.match(err!.details, /field nic\.mac \(102400 characters\)/);
      await nodeStillWorks();
    });

    it('SubmitJob with a 100 KB instance name: INVALID_ARGUMENT, short; the channel works after', async () => {
      const { err } = await callRaw(master, 'SubmitJob', { instanceStart: { name: BIG } });
      assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
      assert.match(err!.details, /SubmitJob: field instanceStart\.name \(102400 characters\) is too long/);
      short(err);
      await masterStillWorks();
    });

    it('a 7 KB MAC (under the field limit) that the error echoes: the status is cut to its bound; the channel works after', async () => {
      const mac = 'y'.repeat(7000);
      const { err } = await callRaw(master, 'SubmitJob', { instanceModify: { name: 'web1', nics: [{ action: 'ADD', mac }] } });
      assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
      short(err);
      await masterStillWorks();
      const n = await callRaw(node, 'InstanceInfo', { name: 'z'.repeat(7000) });
      assert.ok(['NOT_FOUND', 'INVALID_ARGUMENT'].includes(codeName(n.err)), n.err?.details);
      short(n.err);
      await nodeStillWorks();
    });
  });

  describe('bytes that are not a message', () => {
    it('the node answers INVALID_ARGUMENT (not INTERNAL) and the same channel works after', async () => {
      const raw = new grpc.Client(c.node('node1').address, sslCreds(masterId()));
      try {
        const { err } = await sendBytes(raw, '/gnt.node.v1.NodeDaemon/InstanceInfo', MALFORMED);
        assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
        assert.match(err!.details, /malformed InstanceInfo request: InstanceRef does not parse/);
        const ok = await sendBytes(raw, '/gnt.node.v1.NodeDaemon/NodeInfo', Buffer.alloc(0));
        assert.equal(codeName(ok.err), 'OK', ok.err?.details);
        assert.ok(ok.reply && ok.reply.length > 0);
      } finally {
        raw.close();
      }
    });

    it('the master answers INVALID_ARGUMENT and the same channel works after', async () => {
      const raw = new grpc.Client(masterAddress, sslCreds(cliId()));
      try {
        const { err } = await sendBytes(raw, '/gnt.master.v1.Master/SubmitJob', MALFORMED);
        assert.equal(codeName(err), 'INVALID_ARGUMENT', err?.details);
        assert.match(err!.details, /malformed SubmitJob request/);
        const ok = await sendBytes(raw, '/gnt.master.v1.Master/ListNodes', Buffer.alloc(0));
        assert.equal(codeName(ok.err), 'OK', ok.err?.details);
      } finally {
        raw.close();
      }
    });

    it('a message over the 4 MiB limit is refused (RESOURCE_EXHAUSTED) and the same channel works after', async () => {
      const raw = new grpc.Client(c.node('node1').address, sslCreds(masterId()));
      try {
        const big = Buffer.concat([Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x03]), Buffer.alloc(6 * 1024 * 1024, 0x41)]);
        const { err } = await sendBytes(raw, '/gnt.node.v1.NodeDaemon/InstanceInfo', big, 30_000);
        assert.equal(codeName(err), 'RESOURCE_EXHAUSTED', err?.details);
        const ok = await sendBytes(raw, '/gnt.node.v1.NodeDaemon/NodeInfo', Buffer.alloc(0));
        assert.equal(codeName(ok.err), 'OK', ok.err?.details);
      } finally {
        raw.close();
      }
    });
  });

  it(`more than ${MAX_IN_FLIGHT} calls at once from one certificate: the excess is RESOURCE_EXHAUSTED at once, the others succeed`, async () => {
    // A job that stays running: gnt-node add of a "node" that accepts TCP and never answers.
    const sockets: net.Socket[] = [];
    const black = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => black.listen(0, '127.0.0.1', r));
    const port = (black.address() as net.AddressInfo).port;
    const id = c.ok(c.gnt('gnt-node', 'add', 'slow', '--address', `127.0.0.1:${port}`, '--submit')).stdout.trim();
    // MAX_IN_FLIGHT watches of it, each admitted once its first log line arrives.
    const watches = Array.from({ length: MAX_IN_FLIGHT }, () => {
      const stream = master.WatchJob({ id, afterSeq: 0 });
      const admitted = new Promise<void>((resolve) => stream.once('data', () => resolve()));
      const ended = new Promise<{ done: boolean; err?: grpc.ServiceError }>((resolve) => {
        let done = false;
        stream.on('data', (ev: { done?: unknown }) => (done ||= !!ev.done));
        stream.on('error', (err: grpc.ServiceError) => resolve({ done, err }));
        stream.on('end', () => resolve({ done }));
      });
      return { admitted, ended };
    });
    await Promise.all(watches.map((w) => w.admitted));
    const excess = await callRaw(master, 'ListNodes', {});
    assert.equal(codeName(excess.err), 'RESOURCE_EXHAUSTED', excess.err?.details);
    assert.match(excess.err!.details, new RegExp(`${MAX_IN_FLIGHT} calls of this certificate \\(cli\\) are already running, the limit is ${MAX_IN_FLIGHT}`));
    // Another certificate (the master's own) is not counted with the CLI's.
    const other = masterClient(masterAddress, masterId());
    try {
      assert.equal(codeName((await callRaw(other, 'ListNodes', {})).err), 'OK');
    } finally {
      other.close();
    }
    // The job ends (its node refuses connections now): every watch gets its end.
    black.close();
    for (const s of sockets) s.destroy();
    for (const w of watches) {
      const r = await w.ended;
      assert.equal(r.err, undefined, r.err?.details);
      assert.ok(r.done, 'the watch ended with the finished job');
    }
    await masterStillWorks();
  });
});
