/**
 * Jobs and their log lines in SQLite. Every state change is written before
 * it is announced. Each state change is one transaction that also carries
 * the lines logged since the last one (job-log.ts).
 */
import { nowIso, type Db } from '../config/db';
import { JobLogBuffer, LOG_FLUSH_MS, type LineListener, type LogLine } from './job-log';

export type { LogLine } from './job-log';

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
  /** Who submitted it (docs/audit.md); '' for jobs from before migration 10. */
  requested_by: string;
}

export class JobStore {
  private readonly buffer: JobLogBuffer;

  constructor(readonly db: Db, flushMs = LOG_FLUSH_MS) {
    this.buffer = new JobLogBuffer(db, flushMs);
  }

  /** Inserts a queued job; with `firstLine`, its first log line in the same transaction. */
  create(opType: string, op: unknown, summary: string, locks: string[], firstLine?: string, requestedBy = ''): JobRow {
    const id = this.commit(() => {
      const info = this.db
        .prepare(`INSERT INTO jobs (op_type, op_json, summary, locks, status, created_at, requested_by) VALUES (?, ?, ?, ?, 'queued', ?, ?)`)
        .run(opType, JSON.stringify(op), summary, JSON.stringify(locks), nowIso(), requestedBy);
      const jobId = Number(info.lastInsertRowid);
      if (firstLine !== undefined) this.buffer.add(jobId, firstLine);
      return jobId;
    });
    return this.get(id)!;
  }

  /**
   * Runs `fn` in one transaction together with every buffered log line (a
   * job step's state change); the lines reach watchers once it committed.
   */
  commit<T>(fn: () => T): T {
    return this.buffer.commit(fn);
  }

  /** Buffers a log line: committed with the job's next state change (commit()), at the latest after the flush delay. */
  log(id: number, message: string): LogLine {
    return this.buffer.add(id, message);
  }

  /** Called with every log line once it is committed. */
  onLine(fn: LineListener): () => void {
    return this.buffer.onLine(fn);
  }

  /** Commits the buffered log lines now (before closing the database). */
  flush(): void {
    this.buffer.flush();
  }

  /** Log lines of the job not committed yet. */
  pendingLines(id: number): number {
    return this.buffer.pendingCount(id);
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
    this.commit(() => this.db.prepare(`UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'`).run(nowIso(), id));
  }

  finish(id: number, status: 'success' | 'error' | 'canceled', error = '', errorCode = ''): void {
    this.commit(() => this.db.prepare('UPDATE jobs SET status = ?, error = ?, error_code = ?, ended_at = ? WHERE id = ?').run(status, error, errorCode, nowIso(), id));
    this.buffer.ended(id);
  }

  /**
   * A log line written now, with the job's buffered ones: in its own commit,
   * or in the caller's transaction when one is open (for writers outside the
   * job: convergence, reconcile, start-up).
   */
  appendLog(id: number, message: string): LogLine {
    return this.buffer.writeNow(id, message);
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
