/** The master's half of verify (src/master/verify-compare.ts, verify.ts): configuration against the node, and who is the truth. */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigStore } from '../../src/master/config/config-store';
import { openDb, type Db } from '../../src/master/config/db';
import { JobStore } from '../../src/master/jobs/job-store';
import { Verifier } from '../../src/master/verify';
import { compareConfig, orderFixes, truthFrom, type ConfigView, type JobHistory, type NodeView } from '../../src/master/verify-compare';

const N1 = '11111111-0000-4000-8000-000000000001';
const N2 = '22222222-0000-4000-8000-000000000002';
const D1 = '33333333-0000-4000-8000-000000000003';

const cfg = (over: Partial<ConfigView> = {}): ConfigView => ({
  name: 'web1', vcpus: 1, maxvcpus: 4, memoryMib: 256, maxmemMib: 1024,
  nics: [{ uuid: N1, mac: '52:54:00:00:00:01', link: 'br0', removalPending: false }],
  disks: [{ uuid: D1, sizeBytes: 1 << 26, removalPending: false }],
  ...over,
});

const node = (over: Partial<NodeView> = {}): NodeView => ({
  running: true,
  nics: [{ uuid: N1, mac: '52:54:00:00:00:01', link: 'br0', state: '' }],
  disks: [{ uuid: D1, sizeBytes: 1 << 26, state: '' }],
  resources: { vcpus: 1, memoryMib: 256 },
  ...over,
});

const history = (over: Partial<JobHistory> = {}): JobHistory => ({ lastSync: 10, lastLive: new Map(), lastLiveResize: 0, configOnly: [], ...over });
const nodeTruth = truthFrom(history(), []);

describe('verify: configuration against the node', () => {
  it('agreeing views give nothing', () => {
    assert.deepEqual(compareConfig(cfg(), node(), nodeTruth), []);
  });

  it('a NIC hot-added on the node but never committed: the node is the truth, the fix adds it', () => {
    const rt = node({ nics: [...node().nics, { uuid: N2, mac: '52:54:00:00:00:02', link: 'br0', state: '' }] });
    const t = truthFrom(history({ lastLive: new Map([[N2, 12]]) }), []);
    const [d] = compareConfig(cfg(), rt, t);
    assert.equal(d.note, false);
    assert.deepEqual(d.fix, { kind: 'add-nic', uuid: N2, mac: '52:54:00:00:00:02', link: 'br0' });
  });

  it('a config-only change after the last start and after the last live change is a note', () => {
    const t = truthFrom(history({ lastLive: new Map([[N1, 11]]), configOnly: [{ id: 12, nics: true, disks: false, resources: false }] }), []);
    const d = compareConfig(cfg({ nics: [] }), node(), t);
    assert.deepEqual(d.map((x) => [x.note, x.fix]), [[true, undefined]]);
    assert.match(d[0].problem, /without --hotplug/);
    // ... but one before the last start explains nothing.
    const old = truthFrom(history({ configOnly: [{ id: 5, nics: true, disks: true, resources: true }] }), []);
    assert.equal(compareConfig(cfg({ nics: [] }), node(), old)[0].note, false);
    // ... nor one before the device's last live change.
    const before = truthFrom(history({ lastLive: new Map([[N1, 14]]), configOnly: [{ id: 12, nics: true, disks: false, resources: false }] }), []);
    assert.equal(compareConfig(cfg({ nics: [] }), node(), before)[0].note, false);
  });

  it('a device the node\'s repairs took away is the node\'s truth even after a config-only change; a uuid prefix matches', () => {
    const h = history({ configOnly: [{ id: 12, nics: true, disks: true, resources: false }] });
    const t = truthFrom(h, [{ kind: 'disk', uuid: '33333333', prefixOnly: true }]);
    const d = compareConfig(cfg(), node({ disks: [] }), t);
    assert.deepEqual(d.map((x) => x.fix), [{ kind: 'drop-disk', uuid: D1 }]);
  });

  it('removal pending and unconfirmed hot-adds are notes', () => {
    const rt = node({
      nics: [{ ...node().nics[0], state: 'detaching' }, { uuid: N2, mac: '52:54:00:00:00:02', link: '', state: 'attaching' }],
    });
    const d = compareConfig(cfg(), rt, nodeTruth);
    assert.deepEqual(d.map((x) => [x.uuid, x.note]), [[N1, true], [N2, true]]);
    assert.match(d[0].problem, /removal pending/);
  });

  it('a MAC the node has differently is updated when the node is the truth', () => {
    const rt = node({ nics: [{ uuid: N1, mac: '52:54:00:00:00:09', link: 'br1', state: '' }] });
    assert.deepEqual(compareConfig(cfg(), rt, nodeTruth)[0].fix, { kind: 'update-nic', uuid: N1, mac: '52:54:00:00:00:09', link: 'br1' });
  });

  it('vCPUs/memory: a live resize not committed is fixed, a config-only one is a note, outside the limits nothing is fixed', () => {
    const rt = node({ resources: { vcpus: 2, memoryMib: 384 } });
    assert.deepEqual(compareConfig(cfg(), rt, nodeTruth)[0].fix, { kind: 'set-resources', vcpus: 2, memoryMib: 384 });
    const cfgOnly = truthFrom(history({ configOnly: [{ id: 11, nics: false, disks: false, resources: true }] }), []);
    assert.equal(compareConfig(cfg(), rt, cfgOnly)[0].note, true);
    const over = compareConfig(cfg({ maxvcpus: 1 }), rt, nodeTruth)[0];
    assert.equal(over.fix, undefined);
    assert.equal(over.note, false);
  });

  it('a stopped instance: every difference applies at the next start', () => {
    const d = compareConfig(cfg({ nics: [] }), node({ running: false }), nodeTruth);
    assert.deepEqual(d.map((x) => [x.note, x.fix]), [[true, undefined]]);
    assert.match(d[0].problem, /next start/);
  });

  it('fixes are ordered drops first, adds last (indices stay dense)', () => {
    const rt = node({ nics: [{ uuid: N2, mac: '52:54:00:00:00:02', link: 'br0', state: '' }] });
    assert.deepEqual(orderFixes(compareConfig(cfg(), rt, nodeTruth)).map((d) => d.fix?.kind), ['drop-nic', 'add-nic']);
  });
});

describe('verify: what the job history says (Verifier.history on a real SQLite file)', () => {
  let dir: string;
  let db: Db;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-verify-db-'));
    db = openDb(path.join(dir, 'config.db'), { create: true });
  });
  afterEach(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('finds the last start, the live changes per device and the config-only modify jobs', () => {
    const jobs = new JobStore(db);
    const job = (type: string, op: object, status: 'success' | 'error' = 'success'): number => {
      const row = jobs.create(type, { type, ...op }, 'test', []);
      jobs.finish(row.id, status);
      return row.id;
    };
    const modify = (o: object): object => ({ name: 'web1', nics: [], disks: [], vcpus: 0, memoryMib: 0, hotplug: 'NONE', ...o });
    job('instance-add', { name: 'web1', noStart: true });
    const start = job('instance-start', { name: 'web1' });
    const live = job('instance-modify', modify({ hotplug: 'HOTPLUG', nics: [{ action: 'ADD' }] }));
    jobs.recordHotplug(live, N2, 'add');
    const cfgOnlyNic = job('instance-modify', modify({ nics: [{ action: 'REMOVE', index: 0 }] }));
    const cfgOnlyResize = job('instance-modify', modify({ hotplug: 'IF_POSSIBLE', vcpus: 2 }));
    const liveResize = job('instance-modify', modify({ hotplug: 'HOTPLUG', memoryMib: 512 }));
    job('instance-modify', modify({ name: 'other', disks: [{ action: 'ADD' }] }));
    // A live change recorded the newer way, as an operation row (jobs/operations.ts).
    const opJob = job('instance-modify', modify({ hotplug: 'HOTPLUG', disks: [{ action: 'ADD' }] }));
    db.prepare(`INSERT INTO operations (id, job_id, instance_uuid, instance_name, node_uuid, kind, action, device_uuid, change_json, state, created_at)
      VALUES ('op-1', ?, 'i-uuid', 'web1', 'n-uuid', 'disk', 'add', ?, '{}', 'succeeded', '2026-12-01T00:00:00Z')`).run(opJob, D1);
    const v = new Verifier(new ConfigStore(db), jobs, {} as never);
    const h = v.history('web1');
    assert.equal(h.lastSync, start);
    assert.equal(h.lastLive.get(N2), live);
    assert.equal(h.lastLive.get(D1), opJob);
    assert.equal(h.lastLiveResize, liveResize);
    assert.deepEqual(h.configOnly, [
      { id: cfgOnlyNic, nics: true, disks: false, resources: false },
      { id: cfgOnlyResize, nics: false, disks: false, resources: true },
    ]);
    const t = truthFrom(h, []);
    assert.equal(t('nic', N1), false, 'the config-only NIC removal explains NIC differences');
    assert.equal(t('disk', D1), true, 'no config-only disk change: the node is the truth');
    assert.equal(t('resources', ''), true, 'the live resize came after the config-only one');
  });
});
