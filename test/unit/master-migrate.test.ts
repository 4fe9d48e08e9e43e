/**
 * The instance-migrate job (live migration, failover, cleanup) against fake
 * nodes, with the real SQLite configuration and job store; the submission
 * refusals while a migration is queued or running; the hint an interrupted
 * migrate job gets at master start-up.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { openDb, type Db } from '../../src/master/config/db';
import { ConfigError, ConfigStore } from '../../src/master/config/config-store';
import { JobStore } from '../../src/master/jobs/job-store';
import { JobError, JobQueue, type JobContext } from '../../src/master/jobs/queue';
import { formatProgress, runMigrate } from '../../src/master/jobs/migrate';
import type { MigrationRpc } from '../../src/master/jobs/migrate-common';
import { absentStatus, checkSameQemu, parseQemuVersion } from '../../src/master/jobs/migrate-common';
import { checkMigrationConflict } from '../../src/master/jobs/submit-guard';
import { addPending, reconcilePending } from '../../src/master/jobs/reconcile';
import type { MigrateOp, Op } from '../../src/master/jobs/ops';
import { NodeRpcError, type NodeRpc, type NodeTarget } from '../../src/master/node-rpc';
import type { MigrationStatus__Output } from '../../src/generated/gnt/node/v1/MigrationStatus';
import type { InstanceRuntime__Output } from '../../src/generated/gnt/node/v1/InstanceRuntime';
import type { NodeInfoReply__Output } from '../../src/generated/gnt/node/v1/NodeInfoReply';

const nodeError = (node: string, code: keyof typeof grpc.status, detail: string): NodeRpcError =>
  new NodeRpcError(code === 'UNAVAILABLE' ? `cannot reach node ${node} (x): ${detail}` : `node ${node} (x): ${detail} (${code})`, code, grpc.status[code]);

const status = (o: Partial<MigrationStatus__Output>): MigrationStatus__Output => ({ ...absentStatus('web1'), known: true, ...o });
const runtime = (o: Partial<InstanceRuntime__Output> = {}): InstanceRuntime__Output =>
  ({ name: 'web1', running: true, pid: 42, nics: [], disks: [], guest: null, resources: null, ...o }) as InstanceRuntime__Output;
const info = (name: string, o: Partial<NodeInfoReply__Output> = {}): NodeInfoReply__Output => ({
  name, memoryTotalMib: '4096', memoryFreeMib: '2048', cpus: 2, qemuVersion: '10.0.2', storageDir: '/s', storageFreeBytes: '1', storageId: 'shared', rbdPool: '', waitGuestDefault: false, ...o,
});

type Handler = (node: string, arg: unknown) => unknown;

/** Fake node daemons: every call is recorded as "Method@node"; behaviour per method and node. */
class FakeNodes implements MigrationRpc {
  readonly calls: string[] = [];
  readonly requests: { call: string; arg: unknown }[] = [];
  constructor(private readonly handlers: Record<string, Handler>) {}

  private async do<T>(method: string, node: NodeTarget, arg: unknown): Promise<T> {
    const call = `${method}@${node.name}`;
    this.calls.push(call);
    this.requests.push({ call, arg });
    const h = this.handlers[call] ?? this.handlers[method];
    if (!h) throw new Error(`unexpected call ${call}`);
    return (await h(node.name, arg)) as T;
  }
  nodeInfo: NodeRpc['nodeInfo'] = (n) => this.do('NodeInfo', n, {});
  instanceInfo: NodeRpc['instanceInfo'] = (n, name) => this.do('InstanceInfo', n, name);
  instanceStart: NodeRpc['instanceStart'] = (n, spec) => this.do('InstanceStart', n, spec);
  instanceStop: NodeRpc['instanceStop'] = (n, name) => this.do('InstanceStop', n, name);
  instanceExport: NodeRpc['instanceExport'] = (n, name) => this.do('InstanceExport', n, name);
  instanceReceive: NodeRpc['instanceReceive'] = (n, req) => this.do('InstanceReceive', n, req);
  migrationStart: NodeRpc['migrationStart'] = (n, req) => this.do('MigrationStart', n, req);
  migrationStatus: NodeRpc['migrationStatus'] = (n, name) => this.do('MigrationStatus', n, name);
  migrationFinish: NodeRpc['migrationFinish'] = (n, name) => this.do('MigrationFinish', n, name);
  migrationAbort: NodeRpc['migrationAbort'] = (n, name) => this.do('MigrationAbort', n, name);
  instanceRelease: NodeRpc['instanceRelease'] = (n, name) => this.do('InstanceRelease', n, name);
  migrationDiskCopyEnd: NodeRpc['migrationDiskCopyEnd'] = (n, name) => this.do('MigrationDiskCopyEnd', n, name);

  /** The calls that change something on a node. */
  changes(): string[] {
    return this.calls.filter((c) => !/^(NodeInfo|InstanceInfo|MigrationStatus|InstanceExport)@/.test(c));
  }
}

/** MigrationStatus of the source: running before MigrationStart, then the given states one poll each. */
function sourceStatuses(states: Partial<MigrationStatus__Output>[]): Handler {
  let started = false;
  let i = 0;
  return () => {
    if (!started) {
      started = true;
      return status({ qemuAlive: true, runState: 'running', state: 'none' });
    }
    const s = states[Math.min(i++, states.length - 1)];
    return status({ qemuAlive: true, role: 'source', peerNode: 'node2', runState: 'running', ...s });
  };
}

/** A healthy two-node live migration; override single calls with `extra`. */
function liveNodes(extra: Record<string, Handler> = {}): FakeNodes {
  return new FakeNodes({
    'MigrationStatus@node1': sourceStatuses([
      { state: 'active', transferredBytes: String(64 << 20), remainingBytes: String(192 << 20), throughputBps: String(32 << 20) },
      { state: 'active', transferredBytes: String(192 << 20), remainingBytes: String(64 << 20), throughputBps: String(32 << 20) },
      { state: 'completed', runState: 'postmigrate', transferredBytes: String(260 << 20), remainingBytes: '0', totalTimeMs: '3200', downtimeMs: '45' },
    ]),
    'MigrationStatus@node2': () => { throw nodeError('node2', 'NOT_FOUND', 'instance web1 is unknown'); },
    InstanceInfo: () => runtime({ resources: { memoryMib: '384' } as InstanceRuntime__Output['resources'] }),
    NodeInfo: (n) => info(n),
    'InstanceExport@node1': () => ({ name: 'web1', runtimeJson: '{"version":2}', running: true }),
    'InstanceReceive@node2': () => ({ migrationUri: 'tcp:127.0.0.1:40123', runtime: null, nbdAddress: '', tlsHostname: '127.0.0.1' }),
    'MigrationStart@node1': () => status({ state: 'setup', role: 'source' }),
    'MigrationFinish@node2': () => runtime(),
    'InstanceRelease@node1': () => ({}),
    MigrationAbort: () => status({ qemuAlive: true, runState: 'running' }),
    ...extra,
  });
}

describe('instance-migrate job', () => {
  let dir: string;
  let db: Db;
  let config: ConfigStore;
  let jobs: JobStore;
  let lines: string[];
  let clock: number;
  const ctx = (): JobContext => ({ jobId: 1, log: (m) => void lines.push(m), commit: (fn) => fn(), recordHotplug: () => undefined, signal: new AbortController().signal, allowCancel: () => undefined });
  const op = (o: Partial<MigrateOp> = {}): MigrateOp => ({ type: 'instance-migrate', name: 'web1', target: '', cleanup: false, failover: false, ...o });
  const run = (rpc: FakeNodes, o: Partial<MigrateOp> = {}) =>
    runMigrate({ config, rpc, pollMs: 200, sleep: async (ms) => void (clock += ms), now: () => clock }, op(o), ctx());
  const primary = () => config.getInstance('web1').node.name;
  const fails = async (p: Promise<unknown>, re: RegExp, code?: string) => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof JobError || e instanceof ConfigError, String(e));
      assert.match((e as Error).message, re);
      if (code !== undefined) assert.equal((e as JobError).code, code);
      return true;
    });
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-migrate-'));
    db = openDb(path.join(dir, 'config.db'), { create: true });
    config = new ConfigStore(db);
    jobs = new JobStore(db);
    lines = [];
    clock = 0;
    const n1 = config.addNode('node1', '127.0.0.1:1001');
    config.addNode('node2', '127.0.0.1:1002');
    config.addInstance({
      name: 'web1', nodeUuid: n1.uuid, vcpus: 1, maxvcpus: 2, memoryMib: 256, maxmemMib: 512, kernel: '/k', initrd: '', kernelArgs: '',
      hvparams: { migration_bandwidth: '100', migration_downtime: '50' }, nics: [{ mac: '52:54:00:00:00:01', link: 'br0' }], disks: [{ sizeBytes: 1 << 20 }],
    });
  });
  afterEach(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('live migration', () => {
    it('exports, receives, starts, polls, finishes, moves the primary and releases the source', async () => {
      const rpc = liveNodes();
      await run(rpc);
      assert.deepEqual(rpc.changes(), ['InstanceReceive@node2', 'MigrationStart@node1', 'MigrationFinish@node2', 'InstanceRelease@node1']);
      assert.equal(primary(), 'node2');
      const start = rpc.requests.find((r) => r.call === 'MigrationStart@node1')!.arg;
      assert.deepEqual(start, {
        instance: 'web1', targetUri: 'tcp:127.0.0.1:40123', targetNode: 'node2', maxBandwidthMib: 100, downtimeLimitMs: 50, migrationTls: true, tlsHostname: '127.0.0.1',
      });
      const receive = rpc.requests.find((r) => r.call === 'InstanceReceive@node2')!.arg;
      assert.deepEqual(receive, { runtimeJson: '{"version":2}', sourceNode: 'node1', incoming: true, migrationTls: true });
      assert.match(lines.join('\n'), /share storage \(the same storage id\): no disk is copied/);
      const log = lines.join('\n');
      assert.match(log, /checks passed: web1 runs on node1; QEMU 10\.0 on both nodes; 384 MiB needed, 2048 MiB free on node2/);
      assert.match(log, /node2 waits for the migration stream at tcp:127\.0\.0\.1:40123/);
      assert.match(log, /migration active: 25% transferred \(64\.0 MiB, 192\.0 MiB remaining\), 32\.0 MiB\/s/);
      assert.match(log, /migration completed in 3\.2 s, downtime 45 ms/);
      assert.match(log, /instance web1 now runs on node node2/);
    });

    it('nodes with different storage ids: receive with copies, mirror until ready, stream, end the copy, then finish', async () => {
      let ready = false;
      const copies = (st: string, copied: number) => [{ uuid: 'd1', status: st, copiedBytes: String(copied), totalBytes: String(16 << 20), error: '' }];
      const rpc = liveNodes({
        'NodeInfo@node2': () => info('node2', { storageId: 'other' }),
        'InstanceReceive@node2': () => ({ migrationUri: 'tcp:127.0.0.1:40123', runtime: null, nbdAddress: '127.0.0.1:40124', tlsHostname: '127.0.0.1' }),
        'MigrationStart@node1': (_n, arg) => {
          ready = !(arg as { diskCopy: { disksOnly: boolean } }).diskCopy.disksOnly;
          return status({ state: 'none', role: 'source', diskCopy: true });
        },
        'MigrationStatus@node1': (() => {
          const stream = sourceStatuses([{ state: 'active', diskCopy: true, diskCopyReady: true }, { state: 'completed', runState: 'postmigrate', totalTimeMs: '100', downtimeMs: '5' }]);
          let polls = 0;
          return (n: string, a: unknown) => {
            if (ready) return stream(n, a);
            if (polls++ === 0) return status({ qemuAlive: true, runState: 'running', state: 'none' }); // the checks
            return status({ qemuAlive: true, runState: 'running', state: 'none', role: 'source', diskCopy: true, diskCopyReady: polls > 2, diskCopies: copies(polls > 2 ? 'ready' : 'running', polls << 20) });
          };
        })(),
        'MigrationDiskCopyEnd@node1': () => status({ diskCopyEnded: true }),
      });
      await run(rpc);
      assert.deepEqual(rpc.changes(), ['InstanceReceive@node2', 'MigrationStart@node1', 'MigrationStart@node1', 'MigrationDiskCopyEnd@node1', 'MigrationFinish@node2', 'InstanceRelease@node1']);
      const receive = rpc.requests.find((r) => r.call === 'InstanceReceive@node2')!.arg as { copyDisks: boolean; diskSizes: unknown[] };
      assert.equal(receive.copyDisks, true);
      assert.equal(receive.diskSizes.length, 1);
      const log = lines.join('\n');
      assert.match(log, /do not share storage \(different storage ids\)/);
      assert.match(log, /disk copy: d1 running 2\.0\/16\.0 MiB/);
      assert.match(log, /disk copy ended on node1/);
      assert.equal(primary(), 'node2');
    });

    it('a disk copy that fails aborts on both nodes and keeps the instance on the source', async () => {
      const rpc = liveNodes({
        'NodeInfo@node2': () => info('node2', { storageId: 'other' }),
        'InstanceReceive@node2': () => ({ migrationUri: 'tcp:127.0.0.1:40123', runtime: null, nbdAddress: '127.0.0.1:40124', tlsHostname: '127.0.0.1' }),
        'MigrationStatus@node1': sourceStatuses([
          { state: 'none', diskCopy: true, diskCopies: [{ uuid: 'd1', status: 'concluded', copiedBytes: '1', totalBytes: '2', error: 'Input/output error' }] },
        ]),
      });
      await fails(run(rpc), /failed at the disk copy to node2: the copy of disk d1 stopped \(concluded: Input\/output error\).*keeps running on node1/);
      assert.deepEqual(rpc.changes(), ['InstanceReceive@node2', 'MigrationStart@node1', 'MigrationAbort@node2', 'MigrationAbort@node1']);
      assert.equal(primary(), 'node1');
    });

    it('logs progress at most once a second, and on every state change', async () => {
      const active = { state: 'active', transferredBytes: '1', remainingBytes: '1' };
      const rpc = liveNodes({ 'MigrationStatus@node1': sourceStatuses([...Array(12).fill(active), { state: 'completed', totalTimeMs: '2400', downtimeMs: '10' }]) });
      await run(rpc);
      const progress = lines.filter((l) => l.startsWith('migration '));
      // 12 polls 200 ms apart: at 0, 1000 and 2000 ms; then the change to completed.
      assert.deepEqual(progress.map((l) => l.split(':')[0]), ['migration active', 'migration active', 'migration active', 'migration completed in 2.4 s, downtime 10 ms, 0.0 MiB transferred']);
    });

    it('picks the only other node; refuses without -n when there are several, and -n of the own node', async () => {
      config.addNode('node3', '127.0.0.1:1003');
      await fails(run(liveNodes()), /^give -n TARGET: the cluster has 2 other nodes \(node2, node3\)/, 'INVALID_ARGUMENT');
      await fails(run(liveNodes(), { target: 'node1' }), /already on node node1: give -n with another node/, 'FAILED_PRECONDITION');
      await fails(run(liveNodes(), { target: 'node9' }), /node "node9" is unknown/);
    });

    it('refuses a QEMU version mismatch before touching anything', async () => {
      const rpc = liveNodes({ 'NodeInfo@node2': () => info('node2', { qemuVersion: '7.2.15' }) });
      await fails(run(rpc), /^QEMU 10\.0 on node1 vs 7\.2 on node2: migration needs the same QEMU version$/, 'FAILED_PRECONDITION');
      assert.deepEqual(rpc.changes(), []);
      assert.equal(primary(), 'node1');
    });

    it('refuses when the target lacks memory for the current size (RESOURCE_EXHAUSTED, both numbers)', async () => {
      const rpc = liveNodes({ 'NodeInfo@node2': () => info('node2', { memoryFreeMib: '300' }) });
      await fails(run(rpc), /node node2 has 300 MiB of free memory and instance web1 uses 384 MiB/, 'RESOURCE_EXHAUSTED');
      assert.deepEqual(rpc.changes(), []);
    });

    it('refuses an instance that is not running, or has a migration recorded, or a target that already has a copy', async () => {
      await fails(run(liveNodes({ 'MigrationStatus@node1': () => status({ qemuAlive: false }) })), /web1 is not running on node node1/, 'FAILED_PRECONDITION');
      await fails(run(liveNodes({ 'MigrationStatus@node1': () => status({ qemuAlive: true, runState: 'paused' }) })), /its QEMU is paused/);
      await fails(
        run(liveNodes({ 'MigrationStatus@node1': () => status({ qemuAlive: true, runState: 'running', role: 'source', peerNode: 'node2' }) })),
        /node node1 has a migration of web1 recorded \(role source, peer node2\): run "gnt-instance migrate --cleanup web1" first/,
      );
      await fails(run(liveNodes({ 'MigrationStatus@node2': () => status({}) })), /node node2 already has a runtime file for web1/);
    });

    it('a failed migration aborts on both nodes, keeps the config, and names the step and QEMU\'s error', async () => {
      const rpc = liveNodes({ 'MigrationStatus@node1': sourceStatuses([{ state: 'active' }, { state: 'failed', error: 'Unable to write to socket: Connection reset by peer' }]) });
      await fails(run(rpc), /failed at the migration: QEMU reports "failed": Unable to write to socket: Connection reset by peer; the migration was aborted; web1 keeps running on node1 and the configuration is unchanged/);
      assert.deepEqual(rpc.changes(), ['InstanceReceive@node2', 'MigrationStart@node1', 'MigrationAbort@node2', 'MigrationAbort@node1']);
      assert.equal(primary(), 'node1');
      assert.ok(lines.some((l) => /^undo: MigrationAbort on target node2 done/.test(l)), lines.join('\n'));
    });

    it('a migration that transfers nothing for 60 s is aborted', async () => {
      const rpc = liveNodes({ 'MigrationStatus@node1': sourceStatuses([{ state: 'active', transferredBytes: '4096' }]) });
      await fails(run(rpc), /failed at MigrationStatus on node1: the migration has transferred nothing for 60 s .*keeps running on node1/, 'DEADLINE_EXCEEDED');
      assert.deepEqual(rpc.changes().slice(-2), ['MigrationAbort@node2', 'MigrationAbort@node1']);
      assert.ok(lines.filter((l) => l.startsWith('migration active')).length <= 61, 'progress at most once a second');
    });

    it('a failed InstanceReceive aborts only what was set up; abort errors are logged and ignored', async () => {
      const rpc = liveNodes({
        'InstanceReceive@node2': () => { throw nodeError('node2', 'FAILED_PRECONDITION', 'bridge br0 does not exist'); },
        'MigrationAbort@node2': () => { throw nodeError('node2', 'NOT_FOUND', 'instance web1 is unknown'); },
      });
      await fails(run(rpc), /failed at InstanceReceive on node2: node node2 \(x\): bridge br0 does not exist \(FAILED_PRECONDITION\); the migration was aborted; web1 keeps running on node1/, 'FAILED_PRECONDITION');
      assert.deepEqual(rpc.changes(), ['InstanceReceive@node2', 'MigrationAbort@node2']);
      assert.ok(lines.some((l) => /undo: MigrationAbort on target node2 failed \(ignored\)/.test(l)));
      assert.ok(lines.some((l) => /undo: nothing was set up on source node1/.test(l)));
    });

    it('a failed release fails the job naming the leftover; the config already points at the target', async () => {
      const rpc = liveNodes({ 'InstanceRelease@node1': () => { throw nodeError('node1', 'UNAVAILABLE', 'connect ECONNREFUSED'); } });
      await fails(run(rpc), /web1 runs on node2 and the configuration says so, but releasing the copy on node1 failed: .*left on node1: run "gnt-instance migrate --cleanup web1"/);
      assert.equal(primary(), 'node2');
    });

    it('a failed MigrationFinish is not undone (the guest may run on the target): the job says to run --cleanup', async () => {
      const rpc = liveNodes({ 'MigrationFinish@node2': () => { throw nodeError('node2', 'DEADLINE_EXCEEDED', 'too slow'); } });
      await fails(run(rpc), /completed, but resuming it there failed: .*nothing was undone.*run "gnt-instance migrate --cleanup web1"/);
      assert.ok(!rpc.calls.some((c) => c.startsWith('MigrationAbort')));
      assert.equal(primary(), 'node1');
    });
  });

  describe('failover', () => {
    const failoverNodes = (extra: Record<string, Handler> = {}) =>
      new FakeNodes({
        'InstanceExport@node1': () => ({ name: 'web1', runtimeJson: '{"version":2}', running: true }),
        'MigrationStatus@node1': () => status({ qemuAlive: true, runState: 'running' }),
        'MigrationStatus@node2': () => { throw nodeError('node2', 'NOT_FOUND', 'unknown'); },
        InstanceInfo: () => runtime(),
        NodeInfo: (n) => info(n),
        'InstanceStop@node1': () => runtime({ running: false }),
        'InstanceReceive@node2': () => ({ migrationUri: '', runtime: runtime() }),
        'InstanceRelease@node1': () => ({}),
        'InstanceStart@node1': () => runtime(),
        ...extra,
      });

    it('stops on the source, boots on the target from the carried runtime file, moves the primary, releases', async () => {
      const rpc = failoverNodes();
      await run(rpc, { failover: true });
      assert.deepEqual(rpc.changes(), ['InstanceStop@node1', 'InstanceReceive@node2', 'InstanceRelease@node1']);
      assert.deepEqual(rpc.requests.find((r) => r.call === 'InstanceReceive@node2')!.arg, { runtimeJson: '{"version":2}', sourceNode: 'node1', incoming: false });
      assert.equal(primary(), 'node2');
    });

    it('a target failure after the stop starts the guest on the source again and says so', async () => {
      const rpc = failoverNodes({ 'InstanceReceive@node2': () => { throw nodeError('node2', 'RESOURCE_EXHAUSTED', 'not enough memory'); } });
      await fails(run(rpc, { failover: true }), /failed at InstanceReceive on node2: .*not enough memory.*; web1 was started again on node1; the configuration is unchanged/, 'RESOURCE_EXHAUSTED');
      assert.deepEqual(rpc.changes(), ['InstanceStop@node1', 'InstanceReceive@node2', 'InstanceStart@node1']);
      assert.equal(primary(), 'node1');
    });

    it('an unreachable source: starts on the target from the configuration and moves the primary', async () => {
      const down = () => { throw nodeError('node1', 'UNAVAILABLE', 'connect ECONNREFUSED'); };
      const rpc = failoverNodes({ 'InstanceExport@node1': down, 'MigrationStatus@node1': down, InstanceInfo: down, 'InstanceStart@node2': () => runtime() });
      await run(rpc, { failover: true });
      assert.deepEqual(rpc.changes(), ['InstanceStart@node2']);
      assert.equal(primary(), 'node2');
      assert.ok(lines.some((l) => /PCI slots may differ/.test(l)), lines.join('\n'));
    });
  });

  describe('cleanup', () => {
    it('asks every node, finishes forward, moves the primary and releases the source', async () => {
      const rpc = new FakeNodes({
        'MigrationStatus@node1': () => status({ role: 'source', peerNode: 'node2', qemuAlive: true, runState: 'postmigrate', state: 'completed' }),
        'MigrationStatus@node2': () => status({ role: 'target', peerNode: 'node1', qemuAlive: true, runState: 'paused', state: 'completed' }),
        'MigrationFinish@node2': () => runtime(),
        'InstanceRelease@node1': () => ({}),
      });
      await run(rpc, { cleanup: true });
      assert.deepEqual(rpc.changes(), ['MigrationFinish@node2', 'InstanceRelease@node1']);
      assert.equal(primary(), 'node2');
      assert.ok(lines.some((l) => /^decision \(finish-forward\): /.test(l)), lines.join('\n'));
      assert.match(lines[lines.length - 1], /cleanup done: web1 runs on node2/);
    });

    it('an unreachable node: nothing is changed and the job names it', async () => {
      const rpc = new FakeNodes({
        'MigrationStatus@node1': () => status({ qemuAlive: true, runState: 'running' }),
        'MigrationStatus@node2': () => { throw nodeError('node2', 'UNAVAILABLE', 'connect ECONNREFUSED'); },
      });
      await fails(run(rpc, { cleanup: true }), /node node2 cannot be asked/, 'UNAVAILABLE');
      assert.deepEqual(rpc.changes(), []);
    });

    it('a failing step stops the cleanup before anything that depends on it', async () => {
      const rpc = new FakeNodes({
        'MigrationStatus@node1': () => status({ role: 'source', peerNode: 'node2', qemuAlive: true, runState: 'postmigrate', state: 'completed' }),
        'MigrationStatus@node2': () => status({ role: 'target', peerNode: 'node1', qemuAlive: true, runState: 'paused', state: 'completed' }),
        'MigrationFinish@node2': () => { throw nodeError('node2', 'INTERNAL', 'cont failed'); },
      });
      await fails(run(rpc, { cleanup: true }), /cleanup of web1 stopped: MigrationFinish of web1 on node2 failed/);
      assert.deepEqual(rpc.changes(), ['MigrationFinish@node2']);
      assert.equal(primary(), 'node1');
    });
  });

  describe('helpers', () => {
    it('reads QEMU versions', () => {
      assert.deepEqual(parseQemuVersion('10.0.2'), { major: 10, minor: 0 });
      assert.deepEqual(parseQemuVersion('QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)'), { major: 7, minor: 2 });
      assert.equal(parseQemuVersion('unknown'), undefined);
      assert.equal(checkSameQemu('a', '10.0.2', 'b', '10.0.5'), '10.0');
      assert.throws(() => checkSameQemu('a', '10.0.2', 'b', '10.1.0'), /QEMU 10\.0 on a vs 10\.1 on b/);
    });
    it('formats progress without a division by zero', () => {
      assert.equal(formatProgress(status({ state: 'setup' })), 'migration setup: 0% transferred (0.0 MiB, 0.0 MiB remaining), 0.0 MiB/s');
    });
  });

  describe('submission while a migration is queued or running', () => {
    const modify: Op = { type: 'instance-modify', name: 'web1', nics: [], disks: [], hotplug: 'HOTPLUG', vcpus: 2, memoryMib: 0 };
    const migrate = (o: Partial<MigrateOp> = {}) => op(o);
    const refused = (o: Op, re: RegExp) =>
      assert.throws(() => checkMigrationConflict(jobs, o), (e: unknown) => e instanceof ConfigError && e.code === 'FAILED_PRECONDITION' && re.test(e.message));

    it('refuses a modify and a second migrate of the instance, for a queued and a running migration', async () => {
      let release!: () => void;
      const queue = new JobQueue(jobs, () => new Promise<void>((r) => (release = r)));
      const running = queue.submit('instance-migrate', migrate({ target: 'node2' }), 'migrate instance web1 to node2', ['instance:web1']);
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(jobs.get(running.id)!.status, 'running');
      refused(modify, new RegExp(`^instance web1: migration in progress \\(job ${running.id}\\); retry when it has finished$`));
      refused(migrate(), new RegExp(`another migration job is running \\(job ${running.id}\\)`));
      refused(migrate({ cleanup: true }), /another migration job is running/);
      // Other instances and other operations are not affected.
      checkMigrationConflict(jobs, { ...modify, name: 'db1' });
      checkMigrationConflict(jobs, { type: 'instance-stop', name: 'web1', timeoutMs: 0 });
      release();
      await queue.idle();
      checkMigrationConflict(jobs, modify);
      checkMigrationConflict(jobs, migrate());
    });

    it('a queued migration refuses too; a cleanup job does not block a modify', () => {
      const queued = jobs.create('instance-migrate', migrate({ failover: true }), 'failover instance web1', ['instance:web1']);
      refused(modify, new RegExp(`migration in progress \\(job ${queued.id}\\)`));
      jobs.finish(queued.id, 'canceled');
      jobs.create('instance-migrate', migrate({ cleanup: true }), 'clean up migration of web1', ['instance:web1']);
      checkMigrationConflict(jobs, modify);
    });
  });

  describe('start-up after a master killed during a migration', () => {
    it('the interrupted migrate job ends with the --cleanup hint; nothing is repaired and no node is asked', async () => {
      const started = jobs.create('instance-migrate', op({ target: 'node2' }), 'migrate instance web1 to node2', ['instance:web1']);
      jobs.setRunning(started.id);
      jobs.appendLog(started.id, 'fault injection: GNT_MASTERD_CRASH_POINT=after-migration-start, killing the master while the migration runs');
      const queued = jobs.create('instance-migrate', op({ failover: true }), 'failover instance web1', ['instance:web1']);
      db.transaction(() => addPending(config, jobs, jobs.failInterrupted()))();
      const report: string[] = [];
      const rpc = new Proxy({}, { get: () => () => { throw new Error('no node may be asked'); } }) as NodeRpc;
      await reconcilePending({ config, jobs, rpc, report: (l) => report.push(l) });
      const last = (id: number) => jobs.logs(id).map((l) => l.message).pop()!;
      assert.match(last(started.id), /^reconcile: this migration job of web1 was cut short.*run "gnt-instance migrate --cleanup web1"/);
      assert.match(last(queued.id), /had not started, nothing was touched/);
      assert.equal(jobs.get(started.id)!.status, 'error');
      assert.equal(primary(), 'node1');
      assert.ok(report.some((l) => l.includes(`(job ${started.id})`)));
      // A second start finds nothing left to do.
      await reconcilePending({ config, jobs, rpc });
      assert.equal(jobs.logs(started.id).filter((l) => /cut short/.test(l.message)).length, 1);
    });
  });
});
