/**
 * The job log's batching (src/master/jobs/job-log.ts) on a real SQLite file:
 * how many transactions a job commits (counted in the WAL file), when lines
 * reach watchers, and a real SIGKILL of a process in the middle of a job.
 */
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openDb, type Db } from '../../src/master/config/db';
import { JobStore, type LogLine } from '../../src/master/jobs/job-store';
import { JobQueue, type JobContext } from '../../src/master/jobs/queue';
import { walCommits } from '../support/wal-commits';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('job log: one transaction per job step (real SQLite, commits counted in the WAL)', () => {
  let dir: string;
  let file: string;
  let db: Db;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-job-log-'));
    file = path.join(dir, 'config.db');
    db = openDb(file, { create: true });
    db.pragma('wal_autocheckpoint = 0');
  });
  afterEach(() => {
    if (db.open) db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const setting = (key: string) => db.prepare("INSERT INTO cluster (key, value) VALUES (?, 'v')").run(key);
  const messages = (store: JobStore, id: number) => store.logs(id).map((l) => l.message);

  it('a job that logs 7 lines around one step commits 4 times: created, running, the step, finished', async () => {
    // a flush delay far beyond the test, so that only state changes commit
    const store = new JobStore(db, 60_000);
    const queue = new JobQueue(store, async (_job, ctx) => {
      ctx.log('a');
      ctx.log('b');
      ctx.log('c');
      ctx.commit(() => setting('step'));
      ctx.log('d');
      await tick(5);
      ctx.log('e');
      ctx.log('f');
      ctx.log('g');
    });
    const before = walCommits(file);
    const job = queue.submit('test', {}, 'batched', ['x']);
    assert.equal(walCommits(file) - before, 1, 'the job row and "submitted" are one commit');
    await queue.idle();
    assert.equal(walCommits(file) - before, 4);
    assert.deepEqual(messages(store, job.id), ['submitted: batched', 'started', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'finished: success']);
    assert.deepEqual(store.logs(job.id).map((l) => l.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(store.get(job.id)!.status, 'success');
    assert.equal(store.pendingLines(job.id), 0);
  });

  it('a failing job: its last lines, the error and the status in one commit', async () => {
    const store = new JobStore(db, 60_000);
    const queue = new JobQueue(store, async (_job, ctx) => {
      ctx.log('about to fail');
      await tick(1);
      throw new Error('boom');
    });
    const before = walCommits(file);
    const job = queue.submit('test', {}, 'fails', ['x']);
    await queue.idle();
    assert.equal(walCommits(file) - before, 3);
    assert.deepEqual(messages(store, job.id), ['submitted: fails', 'started', 'about to fail', 'failed: boom']);
    assert.equal(store.get(job.id)!.error, 'boom');
  });

  it('a line reaches watchers only once committed, in seq order, each once', async () => {
    const store = new JobStore(db, 60_000);
    let ctx!: JobContext;
    let release!: () => void;
    const queue = new JobQueue(store, (_job, c) => {
      ctx = c;
      return new Promise<void>((r) => (release = r));
    });
    const job = queue.submit('test', {}, 'watched', ['x']);
    const seen: LogLine[] = [];
    queue.onLog(job.id, (l) => seen.push(l));
    await tick(5);
    assert.deepEqual(seen.map((l) => l.message), ['started']);
    ctx.log('one');
    ctx.log('two');
    assert.equal(seen.length, 1, 'not yet committed: not shown');
    assert.deepEqual(messages(store, job.id), ['submitted: watched', 'started']);
    ctx.commit(() => {
      setting('k');
      assert.equal(seen.length, 1, 'inside the transaction: not shown');
    });
    assert.deepEqual(seen.map((l) => l.message), ['started', 'one', 'two']);
    release();
    await queue.idle();
    assert.deepEqual(seen.map((l) => l.message), ['started', 'one', 'two', 'finished: success']);
    assert.deepEqual(seen, store.logs(job.id).slice(1), 'what watchers saw is what the database has, seq and time included');
  });

  it('a state change that fails commits nothing: its lines stay buffered and go with the next commit', async () => {
    const store = new JobStore(db, 60_000);
    let ctx!: JobContext;
    let release!: () => void;
    const queue = new JobQueue(store, (_job, c) => {
      ctx = c;
      return new Promise<void>((r) => (release = r));
    });
    const job = queue.submit('test', {}, 'rollback', ['x']);
    await tick(5);
    const seen: string[] = [];
    queue.onLog(job.id, (l) => seen.push(l.message));
    ctx.log('before the failed step');
    assert.throws(() => ctx.commit(() => {
      setting('dup');
      setting('dup');
    }), /UNIQUE/);
    assert.equal((db.prepare("SELECT COUNT(*) AS n FROM cluster WHERE key = 'dup'").get() as { n: number }).n, 0);
    assert.deepEqual(seen, []);
    assert.equal(store.pendingLines(job.id), 1);
    release();
    await queue.idle();
    assert.deepEqual(seen, ['before the failed step', 'finished: success']);
  });

  it('a line no state change follows is committed on its own after the flush delay', async () => {
    const store = new JobStore(db, 20);
    let ctx!: JobContext;
    let release!: () => void;
    const queue = new JobQueue(store, (_job, c) => {
      ctx = c;
      return new Promise<void>((r) => (release = r));
    });
    const job = queue.submit('test', {}, 'slow step', ['x']);
    await tick(5);
    const seen: string[] = [];
    queue.onLog(job.id, (l) => seen.push(l.message));
    ctx.log('waiting for a long node call');
    ctx.log('still waiting');
    const before = walCommits(file);
    await tick(80);
    assert.deepEqual(seen, ['waiting for a long node call', 'still waiting']);
    assert.equal(walCommits(file) - before, 1, 'both lines in one commit');
    release();
    await queue.idle();
  });

  it('appendLog inside another transaction: written with it, shown after it committed; rolled back: its line dropped, the job\'s buffered lines kept', async () => {
    const store = new JobStore(db, 60_000);
    const job = store.create('test', {}, 'foreign', ['x'], 'submitted');
    const seen: string[] = [];
    store.onLine((id, l) => id === job.id && seen.push(l.message));
    store.log(job.id, 'buffered');
    db.transaction(() => {
      setting('settled');
      store.appendLog(job.id, 'settled by the convergence loop');
      assert.deepEqual(seen, []);
    })();
    assert.deepEqual(seen, [], 'announced on the next turn of the event loop, after checking the database');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, ['buffered', 'settled by the convergence loop']);

    store.log(job.id, 'buffered 2');
    assert.throws(() => db.transaction(() => {
      store.appendLog(job.id, 'this change is rolled back');
      throw new Error('rollback');
    })());
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, ['buffered', 'settled by the convergence loop']);
    store.commit(() => setting('next'));
    assert.deepEqual(seen, ['buffered', 'settled by the convergence loop', 'buffered 2']);
    assert.deepEqual(messages(store, job.id), ['submitted', 'buffered', 'settled by the convergence loop', 'buffered 2']);
  });

  it('two appendLogs in one foreign transaction, then a commit in the same tick: each line once', () => {
    const store = new JobStore(db, 60_000);
    const job = store.create('test', {}, 'twice', ['x'], 'submitted');
    const seen: string[] = [];
    store.onLine((id, l) => id === job.id && seen.push(l.message));
    db.transaction(() => {
      store.appendLog(job.id, 'first');
      store.appendLog(job.id, 'second');
    })();
    store.log(job.id, 'third');
    store.commit(() => setting('same tick'));
    assert.deepEqual(seen, ['first', 'second', 'third']);
    assert.deepEqual(messages(store, job.id), ['submitted', 'first', 'second', 'third']);
  });

  it('logging to a job that does not exist fails at once', () => {
    const store = new JobStore(db, 60_000);
    assert.throws(() => store.log(999, 'x'), /job 999 does not exist/);
  });

  it('SIGKILL in the middle of a job: every line a watcher saw is in the database, in order, under its seq', async function () {
    this.timeout(60_000);
    const child = path.join(__dirname, '../support/job-log-child.js');
    db.close();
    for (let run = 0; run < 6; run++) {
      const shown = await new Promise<{ job: number; lines: LogLine[] }>((resolve, reject) => {
        const p = spawn(process.execPath, [child, file, String(run + 1)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        let armed = false;
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          // killed at a moment of the job's run that differs from run to run, once it has started
          if (!armed && out.includes('\n')) setTimeout(() => p.kill('SIGKILL'), 60 + run * 37);
          armed = true;
        });
        p.on('error', reject);
        p.on('exit', () => {
          const rows = out.split('\n').filter(Boolean);
          const job = Number(rows.shift()!.replace('job ', ''));
          resolve({ job, lines: rows.filter((r) => r.startsWith('{')).map((r) => JSON.parse(r) as LogLine) });
        });
      });
      const check = openDb(file);
      try {
        const inDb = new JobStore(check).logs(shown.job);
        assert.ok(shown.lines.length > 3, `run ${run}: the child showed ${shown.lines.length} lines before it was killed`);
        const bySeq = new Map(inDb.map((l) => [l.seq, l]));
        for (const l of shown.lines) assert.deepEqual(bySeq.get(l.seq), l, `run ${run}: line ${l.seq} was shown but is not in the database as shown`);
        assert.deepEqual(inDb.map((l) => l.seq), inDb.map((_, i) => i + 1), `run ${run}: the committed lines are 1..n with no gap`);
        assert.deepEqual(shown.lines.map((l) => l.seq), shown.lines.map((_, i) => i + 2), `run ${run}: watchers saw 2, 3, ... in order`);
      } finally {
        check.close();
      }
    }
  });
});
