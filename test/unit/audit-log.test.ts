/**
 * The node's audit-log writer (src/noded/audit-log.ts) on real files, and
 * the master's side of the trail: the job's requested_by column and the
 * async context that carries it into node requests (docs/audit.md).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AuditLog, type AuditRecord } from '../../src/noded/audit-log';
import { openDb } from '../../src/master/config/db';
import { JobStore } from '../../src/master/jobs/job-store';
import { JobQueue } from '../../src/master/jobs/queue';
import { currentRequestedBy } from '../../src/master/jobs/requested-by';
import { tempDir } from '../support/guest';

const rec = (instance: string, action: string, outcome: AuditRecord['outcome'] = 'ok'): Omit<AuditRecord, 'time'> => ({
  instance, action, deviceKind: 'nic', deviceUuid: 'u-1', operationId: 'op-1', requestedBy: 'cli certificate AA', caller: 'master certificate BB', outcome, message: '',
});

describe('audit log writer (real files)', () => {
  let dir: string;
  let warnings: string[];
  let log: AuditLog;
  beforeEach(() => {
    dir = tempDir('audit');
    warnings = [];
    log = new AuditLog(dir, (l) => warnings.push(l));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('appends one JSON line per record, 0600, and reads them back in order with the filters', () => {
    assert.equal(log.append(rec('web1', 'start')), true);
    assert.equal(log.append({ ...rec('web2', 'stop'), time: '2030-01-01T00:00:00.000Z' }), true);
    assert.equal(log.append(rec('web1', 'hotplug-add', 'failed')), true);
    const lines = fs.readFileSync(path.join(dir, 'audit.log'), 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, 3);
    assert.equal((JSON.parse(lines[1]) as AuditRecord).instance, 'web2');
    assert.equal(fs.statSync(path.join(dir, 'audit.log')).mode & 0o777, 0o600);
    assert.deepEqual(log.read().records.map((r) => r.action), ['start', 'stop', 'hotplug-add']);
    assert.deepEqual(log.read({ instance: 'web1' }).records.map((r) => r.action), ['start', 'hotplug-add']);
    assert.deepEqual(log.read({ since: '2029-01-01T00:00:00.000Z' }).records.map((r) => r.instance), ['web2']);
    assert.deepEqual(log.read({ limit: 1 }).records.map((r) => r.action), ['hotplug-add']);
    assert.deepEqual(warnings, []);
  });

  it('calls fdatasync on the file before append returns, and the line is in the file then', () => {
    // The module object itself (the import is a read-only view of it): the writer's calls go through it.
    const mod = require('node:fs') as { fdatasyncSync: typeof fs.fdatasyncSync };
    const real = mod.fdatasyncSync;
    const synced: string[] = [];
    mod.fdatasyncSync = (fd: number) => {
      real(fd);
      synced.push(fs.readFileSync(path.join(dir, 'audit.log'), 'utf8'));
    };
    try {
      log.append(rec('web1', 'start'));
    } finally {
      mod.fdatasyncSync = real;
    }
    assert.equal(synced.length, 1);
    assert.match(synced[0], /"action":"start"/);
  });

  it('keeps the lines of two writers whole (O_APPEND)', () => {
    const other = new AuditLog(dir, (l) => warnings.push(l));
    for (let i = 0; i < 50; i++) {
      log.append(rec(`a${i}`, 'start'));
      other.append(rec(`b${i}`, 'stop'));
    }
    const { records, skipped } = log.read();
    assert.equal(skipped, 0);
    assert.equal(records.length, 100);
  });

  it('skips a torn last line (a crash while writing) with a warning, and the next append still reads', () => {
    log.append(rec('web1', 'start'));
    fs.appendFileSync(path.join(dir, 'audit.log'), '{"time":"2026-12-02T10:00:00.000Z","instance":"web1","act');
    const { records, skipped } = log.read();
    assert.equal(records.length, 1);
    assert.equal(skipped, 1);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /line 2 is not an audit record \(a torn last line/);
  });

  it('reports a write failure loudly and returns false instead of throwing', () => {
    const broken = new AuditLog(path.join(dir, 'no-such-dir'), (l) => warnings.push(l));
    assert.equal(broken.append(rec('web1', 'stop')), false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /AUDIT RECORD NOT WRITTEN .*ENOENT.*the change itself is unaffected/);
  });
});

describe('requested_by of a job (real SQLite)', () => {
  it('is stored with the job, named in its first log line, and is the async context of its run', async () => {
    const dir = tempDir('audit-db');
    const db = openDb(path.join(dir, 'config.db'), { create: true });
    try {
      const store = new JobStore(db, 0);
      const seen: string[] = [];
      const queue = new JobQueue(store, async () => {
        await new Promise((r) => setTimeout(r, 5));
        seen.push(currentRequestedBy());
      });
      const job = queue.submit('instance-start', { type: 'instance-start', name: 'web1' }, 'instance web1', ['instance:web1'], 'cli certificate AB:CD');
      await queue.idle();
      store.flush();
      assert.equal(store.get(job.id)!.requested_by, 'cli certificate AB:CD');
      assert.match(store.logs(job.id)[0].message, /requested by cli certificate AB:CD/);
      assert.deepEqual(seen, ['cli certificate AB:CD']);
      assert.equal(currentRequestedBy(), '');
    } finally {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
