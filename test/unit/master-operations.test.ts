/**
 * Operation ids on the master side (src/master/jobs/operations.ts,
 * op-call.ts, convergence.ts) against a fake node daemon: a real grpc-js
 * server with mutual TLS (certificates from a real cluster directory), whose
 * HotplugDevice, InstanceResize, OperationStatus and OperationLog follow
 * the node contract of proto/node.proto from an in-memory record store that
 * survives the fake's "kill" (its server is shut down with calls in flight
 * and started again on the same port), as the node's runtime file would.
 * The master is a real MasterDaemon (SQLite config, job queue, executor,
 * convergence loop) that does not listen.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ClusterDir } from '../../src/master/cluster-dir';
import { MasterDaemon, type MasterOptions } from '../../src/master/server';
import { openDb } from '../../src/master/config/db';
import { ConfigStore } from '../../src/master/config/config-store';
import type { JobRow } from '../../src/master/jobs/job-store';
import { createOperation, getOperation, settleOperation, type OperationRow } from '../../src/master/jobs/operations';
import { recentHistory } from '../../src/master/config/history';
import { cursorOf } from '../../src/master/config/oplog-cursors';
import { deviceCount, formatInstanceInfo } from '../../src/master/cli/instance';
import type { Op } from '../../src/master/jobs/ops';
import { loadNodeProto } from '../../src/common/proto';
import type { NodeDaemonHandlers } from '../../src/generated/gnt/node/v1/NodeDaemon';
import type { OperationRecord } from '../../src/generated/gnt/node/v1/OperationRecord';
import type { HotplugDeviceRequest__Output } from '../../src/generated/gnt/node/v1/HotplugDeviceRequest';
import type { HotplugDeviceReply } from '../../src/generated/gnt/node/v1/HotplugDeviceReply';
import type { InstanceDetails__Output } from '../../src/generated/gnt/master/v1/InstanceDetails';
import { freePort } from '../support/noded';
import { tempDir } from '../support/guest';

type Record_ = OperationRecord & { instance: string; revision: number };

/** What the fake does with one HotplugDevice request. */
type HotplugBehaviour =
  | 'apply' // apply, record, reply
  | 'apply-and-drop' // apply and record, then die before replying
  | 'drop' // die before even recording (the node never got it)
  | 'pending' // REMOVE only: the guest does not let go in time
  | 'slow' // apply and record, reply 500 ms later
  | 'unsettled' // answer UNAVAILABLE "not settled yet" with the record running; it succeeds 600 ms later
  | { code: keyof typeof grpc.status; details: string };

class FakeNode {
  server?: grpc.Server;
  readonly records = new Map<string, Record_>();
  readonly log: Record_[] = [];
  revision = 0;
  readonly calls: { method: string; req: unknown }[] = [];
  /** Behaviours for the next HotplugDevice calls, in order; then 'apply'. */
  readonly hotplug: HotplugBehaviour[] = [];
  /** true: OperationLog ignores the cursors and repeats every record twice (a node replaying). */
  replayAll = false;

  constructor(readonly port: number, readonly identity: { ca: string; cert: string; key: string }) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  count(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  /** A record's state changes: a new revision, appended to the log. */
  record(r: Omit<Record_, 'revision'>): Record_ {
    const rec = { ...r, revision: ++this.revision } as Record_;
    if (rec.operationId) this.records.set(rec.operationId, rec);
    this.log.push(rec);
    return rec;
  }

  async start(): Promise<void> {
    const server = new grpc.Server();
    const handlers: Partial<NodeDaemonHandlers> = {
      HotplugDevice: (call, cb) => this.onHotplug(call.request, cb),
      InstanceResize: (call, cb) => {
        this.calls.push({ method: 'InstanceResize', req: call.request });
        const rec = this.record({
          instance: call.request.instance, operationId: call.request.operationId, state: 'OPERATION_FAILED', kind: 'resources', action: 'resize',
          settledBy: 'request', errorCode: 'RESOURCE_EXHAUSTED', errorMessage: 'memory grow failed after the vCPU grow',
          resize: { vcpus: call.request.vcpus, memoryMib: 256 },
        });
        cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: rec.errorMessage! });
      },
      OperationStatus: (call, cb) => {
        this.calls.push({ method: 'OperationStatus', req: call.request });
        const { instance, operationId, fence } = call.request;
        const known = this.records.get(operationId);
        if (known) return cb(null, known);
        if (fence)
          return cb(null, this.record({ instance, operationId, state: 'OPERATION_FAILED', settledBy: 'fence', errorCode: 'ABORTED', errorMessage: 'fenced' }));
        cb(null, { instance, operationId, state: 'OPERATION_UNKNOWN' });
      },
      OperationLog: (call, cb) => {
        this.calls.push({ method: 'OperationLog', req: call.request });
        const after = new Map(call.request.cursors.map((c) => [c.instance, Number(c.afterRevision)]));
        const records = this.replayAll
          ? [...this.log, ...this.log]
          : this.log.filter((r) => after.has(r.instance) && r.revision > after.get(r.instance)!);
        cb(null, { records, truncated: [] });
      },
      HotplugSupported: (_call, cb) => cb(null, { supported: true }),
    };
    server.addService(loadNodeProto().gnt.node.v1.NodeDaemon.service, handlers as grpc.UntypedServiceImplementation);
    const creds = grpc.ServerCredentials.createSsl(
      fs.readFileSync(this.identity.ca),
      [{ cert_chain: fs.readFileSync(this.identity.cert), private_key: fs.readFileSync(this.identity.key) }],
      true,
    );
    await new Promise<void>((resolve, reject) => server.bindAsync(this.address, creds, (err) => (err ? reject(err) : resolve())));
    this.server = server;
  }

  /** The node daemon dies: every call in flight sees its connection dropped. */
  kill(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }

  /** Killed now, back after `ms` (with its records, as the runtime file keeps them). */
  restartAfter(ms: number): void {
    this.kill();
    setTimeout(() => void this.start(), ms);
  }

  private onHotplug(req: HotplugDeviceRequest__Output, cb: grpc.sendUnaryData<HotplugDeviceReply>): void {
    this.calls.push({ method: 'HotplugDevice', req });
    const known = this.records.get(req.operationId);
    if (known) {
      if (known.state === 'OPERATION_FAILED') return cb({ code: grpc.status.ABORTED, details: known.errorMessage ?? '' });
      if (!(req.action === 'REMOVE' && known.state === 'OPERATION_REMOVAL_PENDING')) return cb(null, known.hotplug ?? {});
    }
    const b = this.hotplug.shift() ?? 'apply';
    if (typeof b === 'object') return cb({ code: grpc.status[b.code], details: b.details });
    if (b === 'drop') return this.restartAfter(300);
    const kind = req.deviceType === 'NIC' ? 'nic' : 'disk';
    const uuid = req.nic?.uuid || req.disk?.uuid || '';
    const reply: HotplugDeviceReply = { pci: 7, deviceId: `${kind}-${uuid.slice(0, 8)}-pci-7`, removalPending: b === 'pending', nic: req.nic, disk: req.disk };
    this.record({
      instance: req.instance, operationId: req.operationId, state: b === 'pending' ? 'OPERATION_REMOVAL_PENDING' : 'OPERATION_SUCCEEDED',
      kind, action: req.action.toLowerCase(), deviceUuid: uuid, settledBy: 'request', hotplug: reply,
    });
    if (b === 'apply-and-drop') return this.restartAfter(300);
    if (b === 'slow') return void setTimeout(() => cb(null, reply), 500);
    if (b === 'unsettled') {
      const rec = this.records.get(req.operationId)!;
      this.log.pop();
      this.revision--;
      this.records.set(req.operationId, { ...rec, state: 'OPERATION_RUNNING', revision: 0 });
      setTimeout(() => this.record({ ...rec }), 600);
      return cb({ code: grpc.status.UNAVAILABLE, details: `operation ${req.operationId} on web1 was interrupted and is not settled yet (QEMU's monitor could not be asked); ask again shortly` });
    }
    cb(null, reply);
  }
}

describe('master: operation ids, outcomes and convergence (fake node over mTLS)', function () {
  this.timeout(60_000);
  let work: string;
  let dir: ClusterDir;
  let node: FakeNode;
  let master: MasterDaemon | undefined;
  let report: string[];

  const open = (o: Partial<MasterOptions> = {}): MasterDaemon => {
    report = [];
    master = new MasterDaemon({ clusterDir: dir, outcomeWindowMs: 15_000, fenceAfterMs: 60_000, convergeIntervalMs: 3_600_000, ...o });
    return master;
  };
  const m = (): MasterDaemon => master!;
  /** Closes the master (as a restart would) and opens a new one on the same cluster directory. */
  const reopen = async (o: Partial<MasterOptions> = {}): Promise<MasterDaemon> => {
    await master?.close();
    if (master?.db.open) master.db.close();
    return open(o);
  };
  const inst = () => m().config.getInstance('web1');
  const converge = async () => {
    await m().startConvergence((l) => report.push(l));
    await m().converge();
  };
  const submit = (change: Partial<Extract<Op, { type: 'instance-modify' }>>): Promise<JobRow> => {
    const op: Op = { type: 'instance-modify', name: 'web1', nics: [], disks: [], hotplug: 'HOTPLUG', vcpus: 0, memoryMib: 0, ...change };
    const job = m().queue.submit(op.type, op, 'modify instance web1', ['instance:web1']);
    return new Promise((resolve) => m().queue.onDone(job.id, resolve));
  };
  const jobLog = (id: number) => m().jobs.logs(id).map((l) => l.message);
  const opsOf = (jobId: number) => m().db.prepare('SELECT * FROM operations WHERE job_id = ? ORDER BY rowid').all(jobId) as OperationRow[];
  const hotplugIds = () => node.calls.filter((c) => c.method === 'HotplugDevice').map((c) => (c.req as HotplugDeviceRequest__Output).operationId);
  const addNic = { nics: [{ action: 'ADD' as const, index: 0, mac: '52:54:00:12:34:56', link: '' }] };

  beforeEach(async () => {
    work = tempDir('master-ops');
    dir = new ClusterDir(path.join(work, 'cluster'));
    dir.init({ name: 'opcluster', masterAddress: '127.0.0.1:1' });
    const port = await freePort();
    node = new FakeNode(port, dir.issueNodeCert('node1', path.join(work, 'node1-certs'), {}));
    await node.start();
    const db = openDb(dir.dbFile);
    const config = new ConfigStore(db);
    const n = config.addNode('node1', node.address);
    config.addInstance({
      name: 'web1', nodeUuid: n.uuid, vcpus: 1, maxvcpus: 4, memoryMib: 256, maxmemMib: 1024, kernel: '/k', initrd: '', kernelArgs: '',
      hvparams: {}, nics: [{ mac: '52:54:00:00:00:01', link: '' }], disks: [{ sizeBytes: 1 << 20 }],
    });
    config.setAdminState('web1', 'up');
    db.close();
    open();
  });

  afterEach(async () => {
    await master?.close();
    if (master?.db.open) master.db.close();
    master = undefined;
    node.kill();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('settles an operation exactly once, whoever calls settleOperation', () => {
    const op = createOperation(m().config, null, inst(), { kind: 'nic', action: 'add', uuid: 'n-x', mac: '52:54:00:aa:00:01', link: '' });
    assert.ok(m().config.macTaken('52:54:00:aa:00:01'), "an open add's MAC is taken");
    const first = settleOperation(m().config, op.id, { state: 'succeeded', settledBy: 'request' });
    const again = settleOperation(m().config, op.id, { state: 'succeeded', settledBy: 'guest' });
    const late = settleOperation(m().config, op.id, { state: 'failed', settledBy: 'fence', errorCode: 'ABORTED', error: 'x' });
    assert.deepEqual([first.applied, again.applied, late.applied], [true, false, false]);
    assert.equal(inst().nics.filter((n) => n.uuid === 'n-x').length, 1);
    assert.equal(getOperation(m().config, op.id)!.state, 'succeeded');
  });

  it('a definitive refusal fails the job with "configuration unchanged" and the operation failed', async () => {
    node.hotplug.push({ code: 'ALREADY_EXISTS', details: 'a NIC with MAC 52:54:00:12:34:56 exists' });
    const job = await submit(addNic);
    assert.equal(job.status, 'error');
    assert.match(job.error, /hot-add of new NIC .* failed: .*ALREADY_EXISTS.*; the configuration of this change is unchanged/);
    assert.equal(job.error_code, 'ALREADY_EXISTS');
    assert.equal(inst().nics.length, 1);
    assert.equal(opsOf(job.id)[0].state, 'failed');
    assert.equal(node.count('OperationStatus'), 1, "the node's record is read once (none: refused before recording)");
  });

  it('an error the node answered while its record is still running is not "unchanged": the job waits for the outcome', async () => {
    node.hotplug.push('unsettled');
    const job = await submit(addNic);
    assert.equal(job.status, 'success', `${job.error}\n${jobLog(job.id).join('\n')}`);
    assert.match(jobLog(job.id).join('\n'), /has not settled operation .* yet; waiting for its outcome/);
    assert.equal(inst().nics.filter((n) => n.mac === '52:54:00:12:34:56').length, 1);
    assert.equal(opsOf(job.id)[0].state, 'succeeded');
    assert.equal(node.count('HotplugDevice'), 1);
  });

  it('connection dropped after the node applied it, then OperationStatus SUCCEEDED: committed once, never "unchanged", never resent', async () => {
    node.hotplug.push('apply-and-drop');
    const job = await submit(addNic);
    assert.equal(job.status, 'success', `${job.error}\n${jobLog(job.id).join('\n')}`);
    const nics = inst().nics.filter((n) => n.mac === '52:54:00:12:34:56');
    assert.equal(nics.length, 1);
    const [op] = opsOf(job.id);
    assert.equal(op.state, 'succeeded');
    assert.equal(op.device_uuid, nics[0].uuid);
    assert.deepEqual(hotplugIds(), [op.id], 'sent once');
    assert.ok(node.count('OperationStatus') >= 1);
    const log = jobLog(job.id).join('\n');
    assert.match(log, /outcome unknown .*asking node node1 for operation/);
    assert.match(log, /hot-added .*outcome confirmed by the node/);
    assert.doesNotMatch(log, /unchanged/);
    // The node's log has the same record: the convergence loop applies nothing more.
    await converge();
    assert.equal(inst().nics.length, 2);
    assert.doesNotMatch(jobLog(job.id).join('\n'), /settled by the node after the job/);
  });

  it('the convergence loop leaves an operation to the job that is still sending it (and keeps its cursor before it)', async () => {
    node.hotplug.push('slow');
    const done = submit(addNic);
    while (node.count('HotplugDevice') === 0) await new Promise((r) => setTimeout(r, 20));
    await converge();
    assert.equal(cursorOf(m().db, inst().uuid, inst().node_uuid), 0, 'the cursor waits before the in-flight record');
    assert.equal(inst().nics.length, 1, 'not committed by the loop');
    const job = await done;
    assert.equal(job.status, 'success', job.error);
    await m().converge();
    assert.equal(cursorOf(m().db, inst().uuid, inst().node_uuid), 1);
    const log = jobLog(job.id).join('\n');
    assert.match(log, /hot-added at PCI slot 7 \(nic-[0-9a-f]{8}-pci-7\)$/m);
    assert.doesNotMatch(log, /settled by the node after the job/);
    assert.equal(inst().nics.length, 2);
  });

  it('the node never got it (UNKNOWN): sent again with the same id, applied once', async () => {
    node.hotplug.push('drop');
    const job = await submit({ disks: [{ action: 'ADD', index: 0, sizeBytes: 16 << 20 }] });
    assert.equal(job.status, 'success', `${job.error}\n${jobLog(job.id).join('\n')}`);
    const [op] = opsOf(job.id);
    assert.deepEqual(hotplugIds(), [op.id, op.id], 'the resend carries the same operation id');
    assert.equal(inst().disks.length, 2);
    assert.equal(inst().disks[1].uuid, op.device_uuid);
    assert.equal(inst().disks[1].size_bytes, 16 << 20);
    assert.match(jobLog(job.id).join('\n'), /no record of operation .*: sending it again with the same id/);
  });

  it('a node unreachable for the whole window: "outcome unknown", op stays sent; fenced and settled once the node answers', async () => {
    await reopen({ outcomeWindowMs: 1500, fenceAfterMs: 0 });
    // The node applies and records it, but the reply is lost and the node stays down.
    node.hotplug.push('apply-and-drop');
    const orig = node.restartAfter.bind(node);
    node.restartAfter = () => node.kill();
    const job = await submit(addNic);
    assert.equal(job.status, 'error');
    assert.match(job.error, /outcome unknown: .*stays open and the master settles it when node node1 answers/);
    assert.doesNotMatch(job.error, /unchanged/);
    assert.equal(job.error_code, 'UNKNOWN');
    const [op] = opsOf(job.id);
    assert.equal(op.state, 'sent');
    assert.equal(inst().nics.length, 1);
    assert.ok(m().config.macTaken('52:54:00:12:34:56'), 'the MAC stays reserved while the outcome is unknown');
    node.restartAfter = orig;
    await node.start();
    await converge();
    assert.equal(getOperation(m().config, op.id)!.state, 'succeeded');
    assert.equal(inst().nics.filter((n) => n.mac === '52:54:00:12:34:56').length, 1);
    assert.match(jobLog(job.id).join('\n'), /settled by the node after the job: hot-add of new NIC .* succeeded/);
  });

  it('removal pending: job OK, device marked; a repeated remove is sent again; the guest letting go removes it with no command', async () => {
    node.hotplug.push('pending');
    const job = await submit({ nics: [{ action: 'REMOVE', index: 0, mac: '', link: '' }] });
    assert.equal(job.status, 'success', job.error);
    assert.match(jobLog(job.id).join('\n'), /removal pending: the guest has not released the device yet; the removal completes when it does/);
    const nic = inst().nics[0];
    const [op] = opsOf(job.id);
    assert.equal(op.state, 'removal_pending');
    assert.equal(nic.removal_pending, op.id);
    assert.equal(deviceCount([{ removalPending: true }, { removalPending: false }]), '2 (1 removal pending)');

    // Repeating the remove: a new operation, sent to the node (which waits again), not NOT_FOUND.
    node.hotplug.push('pending');
    const again = await submit({ nics: [{ action: 'REMOVE', index: 0, mac: '', link: '' }] });
    assert.equal(again.status, 'success', again.error);
    const [op2] = opsOf(again.id);
    assert.notEqual(op2.id, op.id);
    assert.deepEqual(hotplugIds(), [op.id, op2.id]);
    assert.equal(inst().nics.length, 1);

    await converge();
    assert.equal(inst().nics.length, 1, 'still pending: the guest holds it');

    // The guest lets go: the node moves the first operation to SUCCEEDED (settled by the guest).
    node.record({ ...node.records.get(op.id)!, state: 'OPERATION_SUCCEEDED', settledBy: 'guest' });
    await converge();
    assert.equal(inst().nics.length, 0);
    assert.equal(getOperation(m().config, op.id)!.state, 'succeeded');
    assert.equal(getOperation(m().config, op2.id)!.state, 'succeeded', 'the repeated remove ends with it');
    assert.match(jobLog(job.id).join('\n'), /settled by the node after the job: hot-remove of NIC .* succeeded; committed to the configuration \(settled by guest\)/);
  });

  it('a guest-initiated eject (record without operation id) drops the device and goes to the history', async () => {
    const disk = inst().disks[0];
    node.record({ instance: 'web1', operationId: '', state: 'OPERATION_SUCCEEDED', kind: 'disk', action: 'remove', deviceUuid: disk.uuid, settledBy: 'guest' });
    await converge();
    assert.equal(inst().disks.length, 0);
    const history = recentHistory(m().db, inst().uuid).map((h) => h.message);
    assert.equal(history.length, 1);
    assert.match(history[0], new RegExp(`web1: the guest removed disk ${disk.uuid} \\(revision 1\\): dropped from the configuration`));
    assert.ok(report.some((l) => l.includes(disk.uuid)));
  });

  it('the same OperationLog record delivered twice (and again on the next pass) is applied once', async () => {
    const nic = inst().nics[0];
    node.record({ instance: 'web1', operationId: '', state: 'OPERATION_SUCCEEDED', kind: 'nic', action: 'remove', deviceUuid: nic.uuid, settledBy: 'guest' });
    node.record({ instance: 'web1', operationId: '', state: 'OPERATION_SUCCEEDED', kind: 'resources', action: 'resize', settledBy: 'reconcile', resize: { vcpus: 3, memoryMib: 512 } });
    node.replayAll = true;
    await converge();
    await m().converge();
    assert.equal(inst().nics.length, 0);
    assert.deepEqual([inst().vcpus, inst().memory_mib], [3, 512]);
    // An operator change after the record: a replay must not take it back.
    m().config.setResources('web1', 2, 384);
    await m().converge();
    assert.deepEqual([inst().vcpus, inst().memory_mib], [2, 384]);
    assert.equal(recentHistory(m().db, inst().uuid).length, 2, 'one history entry per record');
  });

  it('an operation left "sent" by a killed master is settled after the restart, with a line in its job', async () => {
    // The state a master SIGKILLed right after sending leaves: job running, operation sent, node applied it.
    const job = m().jobs.create('instance-modify', { type: 'instance-modify', name: 'web1' }, 'modify instance web1', ['instance:web1']);
    m().jobs.setRunning(job.id);
    const op = createOperation(m().config, job.id, inst(), { kind: 'nic', action: 'add', uuid: 'nic-late', mac: '52:54:00:77:00:01', link: 'br0' });
    const fenced = createOperation(m().config, job.id, inst(), { kind: 'disk', action: 'add', uuid: 'disk-never', sizeBytes: 1 << 20 });
    node.record({ instance: 'web1', operationId: op.id, state: 'OPERATION_SUCCEEDED', kind: 'nic', action: 'add', deviceUuid: 'nic-late', settledBy: 'request' });
    await reopen({ fenceAfterMs: 0 });
    assert.deepEqual(m().interrupted, [job.id]);
    await m().reconcile((l) => report.push(l));
    await converge();
    assert.equal(getOperation(m().config, op.id)!.state, 'succeeded');
    assert.deepEqual(inst().nics.map((n) => n.uuid), [inst().nics[0].uuid, 'nic-late']);
    // The second operation never reached the node: fenced there, failed here, nothing committed.
    const f = getOperation(m().config, fenced.id)!;
    assert.deepEqual([f.state, f.settled_by], ['failed', 'fence']);
    assert.equal(inst().disks.length, 1);
    assert.ok(node.calls.some((c) => c.method === 'OperationStatus' && (c.req as { fence: boolean }).fence));
    const log = jobLog(job.id).join('\n');
    assert.match(log, /interrupted by a master restart/);
    assert.match(log, /its open operations are settled from the node's record/);
    assert.match(log, /settled by the node after the job: hot-add of new NIC nic-late \(52:54:00:77:00:01 on br0\) succeeded/);
    assert.match(log, /settled by the node after the job: hot-add of new disk disk-never .* failed/);
    // Another pass (or restart) applies nothing again.
    const lines = jobLog(job.id).length;
    await m().converge();
    assert.equal(jobLog(job.id).length, lines);
  });

  it('a resize that failed part-way: the configuration takes the node\'s values', async () => {
    const job = await submit({ vcpus: 3, memoryMib: 768 });
    assert.equal(job.status, 'error');
    assert.match(job.error, /live resize .* failed: .*memory grow failed.*; the node changed part of it: the configuration now has 3 vCPUs and 256 MiB/);
    assert.deepEqual([inst().vcpus, inst().memory_mib], [3, 256]);
    assert.equal(opsOf(job.id)[0].state, 'failed');
  });

  it('gnt-instance info shows removal pending, open operations and the history', () => {
    const d = {
      instance: {
        name: 'web1', uuid: 'u', node: 'node1', vcpus: 1, maxvcpus: 1, memoryMib: '256', maxmemMib: '256', kernel: '/k', initrd: '', kernelArgs: '',
        hvparams: {}, adminState: 'up', createdAt: '', disks: [],
        nics: [{ index: 0, uuid: 'n1', mac: '52:54:00:00:00:01', link: '', removalPending: true }],
      },
      runtime: { known: true, error: '', running: true, pid: 1, nics: [], disks: [], guest: null, resources: null },
      history: [{ time: '2026-01-01T00:00:00Z', message: 'web1: the guest removed disk d1 (revision 1): dropped from the configuration' }],
      operations: [{ id: 'op1', jobId: '4', kind: 'nic', action: 'remove', deviceUuid: 'n1', state: 'removal_pending', createdAt: 't' }],
    } as unknown as InstanceDetails__Output;
    const out = formatInstanceInfo(d);
    assert.match(out, /52:54:00:00:00:01 .* removal pending/);
    assert.match(out, /Open operations.*\n  op1 job 4 nic remove n1: removal pending since t/);
    assert.match(out, /Recent history:\n  2026-01-01T00:00:00Z web1: the guest removed disk d1/);
  });
});
