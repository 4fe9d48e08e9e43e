/**
 * A job's log lines, buffered until the job's next state change (issue 14).
 *
 * A line gets its seq and time when it is logged, but it is written to
 * SQLite only in the next transaction that commit() runs: the job's creation,
 * setRunning, the operation record committed before a node is called, the
 * configuration commit, the job's end. So a job step is one commit (one
 * synchronous=FULL WAL fsync) however many lines it logs. A line that no
 * state change follows within flushMs (a long node call, a migration's
 * progress) is committed on its own then, so watchers never wait long.
 *
 * The rule for watchers: a line is announced (to the onLine listeners, and
 * so to WatchJob and RunJob streams) only after the transaction that wrote
 * it has committed. A master killed at any point therefore loses only lines
 * nobody has seen; every line a watcher saw is in the database, in order,
 * under the seq it was shown with.
 *
 * commit() inside a transaction it did not open (someone else's, e.g. the
 * convergence loop's) runs its function only: the lines wait for the next
 * top-level commit. appendLog() there (writeNow) must put its line in that
 * transaction, since the caller's change and its line belong together: the
 * job's buffered lines are written with it, and whether they committed is
 * checked (against the database) before the next commit and on the next
 * turn of the event loop; only then are they announced. If that transaction
 * rolled back, the line of writeNow is dropped (what it describes did not
 * happen) and the job's earlier lines are written again with the next commit.
 */
import { nowIso, type Db } from '../config/db';

export interface LogLine {
  seq: number;
  time: string;
  message: string;
}

/** How long a line may wait for its job's next state change before it is committed on its own, ms. */
export const LOG_FLUSH_MS = 50;

export type LineListener = (jobId: number, line: LogLine) => void;

interface Pending extends LogLine {
  /** Written by writeNow inside a foreign transaction: dropped if that rolled back. */
  own?: boolean;
}

interface JobLog {
  /** The seq of the next line. */
  next: number;
  /** Lines not known to be committed, in seq order. */
  pending: Pending[];
  /** Some pending lines were written inside a foreign transaction: check the database. */
  tentative: boolean;
  /** The job has ended: forget this entry once nothing is pending. */
  ended: boolean;
}

export class JobLogBuffer {
  private readonly jobs = new Map<number, JobLog>();
  private readonly listeners = new Set<LineListener>();
  private timer: NodeJS.Timeout | undefined;
  /** True while commit() runs its own transaction. */
  private committing = false;

  constructor(private readonly db: Db, private readonly flushMs = LOG_FLUSH_MS) {}

  onLine(fn: LineListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Buffers a line of job `jobId`; it is committed with the next commit(), at the latest after flushMs. */
  add(jobId: number, message: string): LogLine {
    const j = this.state(jobId);
    const line: Pending = { seq: j.next++, time: nowIso(), message };
    j.pending.push(line);
    this.schedule();
    return { seq: line.seq, time: line.time, message: line.message };
  }

  /**
   * Adds a line and makes it durable now: in its own commit, or in the
   * transaction that is open (see the file comment).
   */
  writeNow(jobId: number, message: string): LogLine {
    const line = this.add(jobId, message);
    if (!this.db.inTransaction) this.commit(() => undefined);
    else if (!this.committing) this.writeInForeign(jobId);
    return line;
  }

  /**
   * Runs `fn` and writes every buffered line in one transaction; announces
   * the lines once it has committed. Nested in another transaction: runs
   * `fn` only (the lines wait).
   */
  commit<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    this.settleTentative();
    const written: Array<[number, number]> = [];
    this.committing = true;
    let result: T;
    try {
      result = this.db.transaction(() => {
        const r = fn();
        for (const [id, j] of this.jobs) if (j.pending.length) written.push([id, this.insert(id, j.pending)]);
        return r;
      })();
    } finally {
      this.committing = false;
    }
    for (const [id, n] of written) this.announce(id, n);
    return result;
  }

  /** Commits whatever is buffered (before the database is closed). */
  flush(): void {
    if (!this.db.open) return;
    if ([...this.jobs.values()].some((j) => j.pending.length || j.tentative)) this.commit(() => undefined);
  }

  /** The job has ended: its entry is dropped once its lines are committed. */
  ended(jobId: number): void {
    const j = this.jobs.get(jobId);
    if (j) j.ended = true;
    this.forgetIfDone(jobId);
  }

  /** Lines of this job logged but not committed yet (tests, diagnostics). */
  pendingCount(jobId: number): number {
    return this.jobs.get(jobId)?.pending.length ?? 0;
  }

  private state(jobId: number): JobLog {
    let j = this.jobs.get(jobId);
    if (!j) {
      const row = this.db
        .prepare('SELECT (SELECT COALESCE(MAX(seq), 0) FROM job_log WHERE job_id = ?) AS last, EXISTS (SELECT 1 FROM jobs WHERE id = ?) AS known')
        .get(jobId, jobId) as { last: number; known: number };
      if (!row.known) throw new Error(`job ${jobId} does not exist: cannot log to it`);
      j = { next: row.last + 1, pending: [], tentative: false, ended: false };
      this.jobs.set(jobId, j);
    }
    return j;
  }

  /**
   * Inserts the lines; returns how many. In a foreign transaction OR IGNORE:
   * an earlier foreign transaction may have committed some of them already.
   */
  private insert(jobId: number, lines: readonly LogLine[], orIgnore = false): number {
    const q = this.db.prepare(`INSERT${orIgnore ? ' OR IGNORE' : ''} INTO job_log (job_id, seq, time, message) VALUES (?, ?, ?, ?)`);
    for (const l of lines) q.run(jobId, l.seq, l.time, l.message);
    return lines.length;
  }

  /** The first `n` pending lines of the job have committed: announce them, in order. */
  private announce(jobId: number, n: number): void {
    const j = this.jobs.get(jobId);
    if (!j) return;
    const lines = j.pending.splice(0, n);
    for (const l of lines) {
      const line: LogLine = { seq: l.seq, time: l.time, message: l.message };
      for (const fn of this.listeners) fn(jobId, line);
    }
    this.forgetIfDone(jobId);
  }

  private writeInForeign(jobId: number): void {
    const j = this.jobs.get(jobId)!;
    // all of the job's pending lines, so that whether they committed is one MAX(seq) (settleTentative)
    this.insert(jobId, j.pending, true);
    j.pending[j.pending.length - 1].own = true;
    j.tentative = true;
    setImmediate(() => this.settleTentative());
  }

  /** Outside any transaction: which tentatively written lines did commit (announced) and which did not (kept, or dropped if own). */
  private settleTentative(): void {
    if (!this.db.open || this.db.inTransaction) return;
    for (const [id, j] of this.jobs) {
      if (!j.tentative) continue;
      j.tentative = false;
      const { last } = this.db.prepare('SELECT COALESCE(MAX(seq), 0) AS last FROM job_log WHERE job_id = ?').get(id) as { last: number };
      const committed = j.pending.filter((l) => l.seq <= last).length;
      this.announce(id, committed);
      j.pending = j.pending.filter((l) => !l.own);
      this.forgetIfDone(id);
    }
  }

  private forgetIfDone(jobId: number): void {
    const j = this.jobs.get(jobId);
    if (j?.ended && !j.pending.length && !j.tentative) this.jobs.delete(jobId);
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      try {
        this.flush();
      } catch (err) {
        process.stderr.write(`gnt-masterd: could not commit job log lines (kept, retried): ${String(err)}\n`);
        this.schedule();
      }
    }, this.flushMs);
    this.timer.unref();
  }
}
