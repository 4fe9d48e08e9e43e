/** Jobs and their log lines in SQLite. Every state change is written before it is announced. */
import { nowIso, type Db } from '../config/db';

export type JobStatus = 'queued' | 'running' | 'success' | 'error' | 'canceled';

export const FINISHED: ReadonlySet<JobStatus> = new Set(['success', 'error', 'canceled']);

export const INTERRUPTED_ERROR = 'interrupted by a master restart';

export interface JobRow {
  id: number;
  op_type: string;
  op_json: string;
  summary: string;
  locks: string;
  status: JobStatus;
  error: string;
  error_code: string;
  created_at: string;
  started_at: string;
  ended_at: string;
}

export interface LogLine {
  seq: number;
  time: string;
  message: string;
}

export class JobStore {
  constructor(readonly db: Db) {}

  create(opType: string, op: unknown, summary: string, locks: string[]): JobRow {
    const info = this.db
      .prepare(
        `INSERT INTO jobs (op_type, op_json, summary, locks, status, created_at) VALUES (?, ?, ?, ?, 'queued', ?)`,
      )
      .run(opType, JSON.stringify(op), summary, JSON.stringify(locks), nowIso());
    return this.get(Number(info.lastInsertRowid))!;
  }

  get(id: number): JobRow | undefined {
    return this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  list(limit = 1000): JobRow[] {
    return (this.db.prepare('SELECT * FROM jobs ORDER BY id DESC LIMIT ?').all(limit) as JobRow[]).reverse();
  }

  withStatus(...statuses: JobStatus[]): JobRow[] {
    return this.db
      .prepare(`SELECT * FROM jobs WHERE status IN (${statuses.map(() => '?').join(',')}) ORDER BY id`)
      .all(...statuses) as JobRow[];
  }

  setRunning(id: number): void {
    this.db.prepare(`UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'`).run(nowIso(), id);
  }

  finish(id: number, status: 'success' | 'error' | 'canceled', error = '', errorCode = ''): void {
    this.db.prepare('UPDATE jobs SET status = ?, error = ?, error_code = ?, ended_at = ? WHERE id = ?').run(status, error, errorCode, nowIso(), id);
  }

  appendLog(id: number, message: string): LogLine {
    return this.db.transaction(() => {
      const { next } = this.db.prepare('SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM job_log WHERE job_id = ?').get(id) as { next: number };
      const line: LogLine = { seq: next, time: nowIso(), message };
      this.db.prepare('INSERT INTO job_log (job_id, seq, time, message) VALUES (?, ?, ?, ?)').run(id, line.seq, line.time, line.message);
      return line;
    })();
  }

  /** Records that job `id` is about to hot-plug a device (before the node is called). */
  recordHotplug(id: number, deviceUuid: string, action: 'add' | 'remove' | 'modify'): void {
    this.db.prepare('INSERT OR IGNORE INTO job_hotplug (job_id, device_uuid, action) VALUES (?, ?, ?)').run(id, deviceUuid, action);
  }

  /** The device uuids these jobs were hot-plugging. */
  hotplugged(ids: number[]): Set<string> {
    const q = this.db.prepare('SELECT device_uuid FROM job_hotplug WHERE job_id = ?');
    return new Set(ids.flatMap((id) => (q.all(id) as Array<{ device_uuid: string }>).map((r) => r.device_uuid)));
  }

  logs(id: number, afterSeq = 0): LogLine[] {
    return this.db.prepare('SELECT seq, time, message FROM job_log WHERE job_id = ? AND seq > ? ORDER BY seq').all(id, afterSeq) as LogLine[];
  }

  /**
   * At master start-up: every job still queued or running was cut short by
   * the previous master's end. Each is marked failed, with a log line saying
   * so; its earlier log lines stay. Returns the ids.
   */
  failInterrupted(): number[] {
    return this.db.transaction(() => {
      const jobs = this.withStatus('queued', 'running');
      for (const job of jobs) {
        this.appendLog(job.id, `job was ${job.status} when the master stopped; marked failed: ${INTERRUPTED_ERROR}`);
        this.finish(job.id, 'error', INTERRUPTED_ERROR, 'ABORTED');
      }
      return jobs.map((j) => j.id);
    })();
  }
}
