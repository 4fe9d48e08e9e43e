import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openDb, type Db } from '../../src/master/config/db';
import { ConfigError, ConfigStore } from '../../src/master/config/config-store';
import { INTERRUPTED_ERROR, JobStore } from '../../src/master/jobs/job-store';
import { JobQueue } from '../../src/master/jobs/queue';

describe('master config and jobs on a real SQLite file', () => {
  let dir: string;
  let file: string;
  let db: Db;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-master-db-'));
    file = path.join(dir, 'config.db');
    db = openDb(file, { create: true });
  });
  afterEach(() => {
    try {
      db.close();
    } catch {
      /* closed by the test */
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('opens in WAL mode with foreign keys on, file mode 0600', () => {
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    assert.equal(db.pragma('synchronous', { simple: true }), 2);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name);
    for (const t of ['nodes', 'instances', 'disks', 'nics', 'jobs', 'job_log']) assert.ok(tables.includes(t), t);
  });

  it('refuses to open a missing database without create', () => {
    assert.throws(() => openDb(path.join(dir, 'nope.db')), /gnt-cluster init/);
  });

  it('stores nodes and instances with uuids; devices stay dense after a remove', () => {
    const c = new ConfigStore(db);
    const node = c.addNode('n1', '127.0.0.1:1811');
    assert.throws(() => c.addNode('n1', '127.0.0.1:1812'), (e: unknown) => e instanceof ConfigError && e.code === 'ALREADY_EXISTS');
    const inst = c.addInstance({
      name: 'web1', nodeUuid: node.uuid, vcpus: 1, maxvcpus: 2, memoryMib: 256, maxmemMib: 512, kernel: '/k', initrd: '',
      kernelArgs: '', hvparams: {}, nics: [{ mac: '52:54:00:00:00:01', link: 'br0' }, { mac: '52:54:00:00:00:02', link: '' }, { mac: '52:54:00:00:00:03', link: '' }],
      disks: [{ sizeBytes: 1024 ** 3 }],
    });
    assert.match(inst.uuid, /^[0-9a-f-]{36}$/);
    assert.deepEqual(inst.nics.map((n) => n.idx), [0, 1, 2]);
    assert.ok(inst.nics.every((n) => /^[0-9a-f-]{36}$/.test(n.uuid)));
    c.removeDevice('nics', inst.nics[1].uuid);
    const after = c.getInstance('web1');
    assert.deepEqual(after.nics.map((n) => [n.idx, n.mac]), [[0, '52:54:00:00:00:01'], [1, '52:54:00:00:00:03']]);
    // MACs are unique in the cluster.
    assert.throws(() => c.appendNic(inst.uuid, 'u-x', '52:54:00:00:00:01', ''), /already used/);
    assert.ok(c.macInUse('52:54:00:00:00:03'));
    assert.match(c.generateMac(), /^52:54:00(:[0-9a-f]{2}){3}$/);
    // Foreign keys: a node with instances cannot go; an instance's devices go with it.
    assert.throws(() => db.prepare('DELETE FROM nodes WHERE uuid = ?').run(node.uuid), /FOREIGN KEY/);
    c.removeInstance('web1');
    assert.equal((db.prepare('SELECT COUNT(*) AS n FROM nics').get() as { n: number }).n, 0);
    assert.throws(() => c.getInstance('web1'), /instance "web1" is unknown/);
  });

  it('persists jobs with their log; a job left running or queued is failed at start-up, log kept', () => {
    const jobs = new JobStore(db);
    const a = jobs.create('instance-start', { name: 'a' }, 'start instance a', ['instance:a']);
    jobs.appendLog(a.id, 'submitted');
    jobs.setRunning(a.id);
    jobs.appendLog(a.id, 'starting instance a on node n1');
    const b = jobs.create('instance-stop', { name: 'b' }, 'stop instance b', ['instance:b']);
    const c = jobs.create('instance-stop', { name: 'c' }, 'stop instance c', ['instance:c']);
    jobs.finish(c.id, 'success');
    db.close();

    // "Master restart": a new connection to the same file.
    db = openDb(file);
    const again = new JobStore(db);
    assert.deepEqual(again.failInterrupted(), [a.id, b.id]);
    const ra = again.get(a.id)!;
    assert.equal(ra.status, 'error');
    assert.equal(ra.error, INTERRUPTED_ERROR);
    const log = again.logs(a.id).map((l) => l.message);
    assert.equal(log[0], 'submitted');
    assert.equal(log[1], 'starting instance a on node n1');
    assert.match(log[2], /was running when the master stopped.*interrupted by a master restart/);
    assert.equal(again.get(b.id)!.status, 'error');
    assert.equal(again.get(c.id)!.status, 'success');
    assert.deepEqual(again.failInterrupted(), []);
  });

  it('serializes jobs on one instance and runs jobs on different instances in parallel', async () => {
    const events: string[] = [];
    const gates = new Map<number, () => void>();
    const queue = new JobQueue(new JobStore(db), (job, ctx) => {
      events.push(`start ${job.summary}`);
      ctx.log(`working on ${job.summary}`);
      return new Promise<void>((resolve, reject) =>
        gates.set(job.id, () => {
          events.push(`end ${job.summary}`);
          if (job.summary === 'a2') reject(new Error('boom'));
          else resolve();
        }),
      );
    });
    const a1 = queue.submit('t', {}, 'a1', ['instance:a']);
    const a2 = queue.submit('t', {}, 'a2', ['instance:a']);
    const b1 = queue.submit('t', {}, 'b1', ['instance:b']);
    const tick = () => new Promise((r) => setTimeout(r, 20));
    await tick();
    assert.deepEqual(events, ['start a1', 'start b1']);
    assert.equal(queue.store.get(a2.id)!.status, 'queued');
    gates.get(a1.id)!();
    await tick();
    assert.deepEqual(events, ['start a1', 'start b1', 'end a1', 'start a2']);
    gates.get(a2.id)!();
    gates.get(b1.id)!();
    await queue.idle();
    assert.equal(queue.store.get(a1.id)!.status, 'success');
    assert.equal(queue.store.get(a2.id)!.status, 'error');
    assert.equal(queue.store.get(a2.id)!.error, 'boom');
    assert.equal(queue.store.get(b1.id)!.status, 'success');
    assert.ok(queue.store.logs(a2.id).some((l) => l.message === 'failed: boom'));
  });

  it('cancels a queued job but not a running one', async () => {
    let release!: () => void;
    const queue = new JobQueue(new JobStore(db), () => new Promise<void>((r) => (release = r)));
    const j1 = queue.submit('t', {}, 'j1', ['instance:a']);
    const j2 = queue.submit('t', {}, 'j2', ['instance:a']);
    await new Promise((r) => setTimeout(r, 20));
    assert.throws(() => queue.cancel(j1.id), /running/);
    assert.equal(queue.cancel(j2.id)!.status, 'canceled');
    release();
    await queue.idle();
    assert.equal(queue.store.get(j1.id)!.status, 'success');
  });

  it('cancels a running job only while it allows it; the job then ends canceled with its message', async () => {
    let open!: () => void;
    const queue = new JobQueue(new JobStore(db), async (_job, ctx) => {
      await new Promise<void>((r) => (open = r));
      ctx.allowCancel(true);
      await new Promise<void>((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('stopped and undone'))));
    });
    const j = queue.submit('instance-migrate', {}, 'j', ['instance:b']);
    await new Promise((r) => setTimeout(r, 20));
    assert.throws(() => queue.cancel(j.id), /past the point where it can be undone/);
    open();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(queue.cancel(j.id)!.status, 'running', 'the cancel is a request; the job ends by itself');
    await queue.idle();
    const done = queue.store.get(j.id)!;
    assert.equal(done.status, 'canceled');
    assert.match(done.error, /stopped and undone/);
  });
});
