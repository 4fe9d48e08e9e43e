/**
 * The job queue. Each job names the locks it needs (e.g. "instance:web1");
 * a job starts when none of its locks is held and no earlier queued job
 * wants one of them, so jobs on the same instance run one after the other in
 * submission order and jobs on different instances run in parallel.
 */
import { EventEmitter } from 'node:events';
import { JobStore, type JobRow, type LogLine } from './job-store';
import { runRequestedBy } from './requested-by';
import { masterMetrics } from '../metrics';

export interface JobContext {
  readonly jobId: number;
  /** Buffers a log line: it is committed with the job's next state change (commit), and only then shown to watchers. */
  log(message: string): void;
  /**
   * Runs `fn` (a state change of the job: an operation record, a
   * configuration commit) in one transaction with the lines logged so far;
   * durable when it returns.
   */
  commit<T>(fn: () => T): T;
  /** Durably notes that the job is about to hot-plug this device (read by start-up reconciliation). */
  recordHotplug(deviceUuid: string, action: 'add' | 'remove' | 'modify'): void;
  /** Aborted when `gnt-job cancel` stops this running job (only while it allows it). */
  readonly signal: AbortSignal;
  /** Opens or closes the window in which a running job may be canceled: the part it knows how to undo. */
  allowCancel(on: boolean): void;
}

/** A running job's cancel state. */
interface Live {
  controller: AbortController;
  cancellable: boolean;
}

/** An error with a gRPC-style code (e.g. from a node) that the job records. */
export class JobError extends Error {
  constructor(message: string, readonly code = '') {
    super(message);
    this.name = 'JobError';
  }
}

export type JobRunner = (job: JobRow, ctx: JobContext) => Promise<void>;

export class JobQueue {
  private readonly events = new EventEmitter();
  private readonly pending: { id: number; locks: string[] }[] = [];
  private readonly held = new Set<string>();
  private readonly running = new Map<number, Promise<void>>();
  private readonly live = new Map<number, Live>();

  constructor(readonly store: JobStore, private readonly runner: JobRunner) {
    this.events.setMaxListeners(0);
    store.onLine((id, line) => this.events.emit(`log:${id}`, line));
  }

  /** Persists the job with its first line in one commit and queues it. */
  submit(opType: string, op: unknown, summary: string, locks: string[], requestedBy = ''): JobRow {
    const first = `submitted: ${summary}${requestedBy ? `; requested by ${requestedBy}` : ''}`;
    const job = this.store.create(opType, op, summary, locks, first, requestedBy);
    this.pending.push({ id: job.id, locks });
    setImmediate(() => this.pump());
    return job;
  }

  /**
   * Cancels a queued job, or asks a running one that allows it (a live
   * migration before its switch-over) to stop: it undoes what it did and
   * ends as canceled. Other running jobs and finished ones cannot be canceled.
   */
  cancel(id: number): JobRow | undefined {
    const job = this.store.get(id);
    if (!job) return undefined;
    const live = this.live.get(id);
    if (live && job.status === 'running') {
      if (!live.cancellable)
        throw new JobError(`job ${id} is running and past the point where it can be undone (or cannot be undone at all); only queued jobs and live migrations before their switch-over can be canceled`, 'FAILED_PRECONDITION');
      if (!live.controller.signal.aborted) this.log(id, 'cancel requested: the job stops at its next step and undoes what it did');
      live.controller.abort();
      return this.store.get(id);
    }
    const i = this.pending.findIndex((p) => p.id === id);
    if (i < 0 || job.status !== 'queued') throw new JobError(`job ${id} is ${job.status}; only queued jobs can be canceled`, 'FAILED_PRECONDITION');
    this.pending.splice(i, 1);
    this.log(id, 'canceled');
    this.store.finish(id, 'canceled', 'canceled by request');
    this.events.emit(`done:${id}`, this.store.get(id));
    setImmediate(() => this.pump());
    return this.store.get(id);
  }

  /** Buffers a line (job-log.ts): watchers get it once it is committed. */
  log(id: number, message: string): LogLine {
    return this.store.log(id, message);
  }

  /** `fn` is called with each line of job `id` once it is committed, in seq order. */
  onLog(id: number, fn: (line: LogLine) => void): () => void {
    this.events.on(`log:${id}`, fn);
    return () => this.events.off(`log:${id}`, fn);
  }

  /** How many log and done listeners (watch streams) job `id` has now: 0 once every watcher has gone. */
  watchers(id: number): number {
    return this.events.listenerCount(`log:${id}`) + this.events.listenerCount(`done:${id}`);
  }

  onDone(id: number, fn: (job: JobRow) => void): () => void {
    this.events.on(`done:${id}`, fn);
    return () => this.events.off(`done:${id}`, fn);
  }

  /** Ids of the jobs running now. */
  runningIds(): number[] {
    return [...this.running.keys()];
  }

  /** Resolves when no job is queued or running. */
  async idle(): Promise<void> {
    while (this.pending.length > 0 || this.running.size > 0) {
      await Promise.allSettled([...this.running.values()]);
      await new Promise((r) => setImmediate(r));
    }
  }

  private pump(): void {
    const wanted = new Set<string>();
    for (let i = 0; i < this.pending.length; ) {
      const p = this.pending[i];
      const blocked = p.locks.some((l) => this.held.has(l) || wanted.has(l));
      p.locks.forEach((l) => wanted.add(l));
      if (blocked) {
        i++;
        continue;
      }
      this.pending.splice(i, 1);
      this.start(p.id, p.locks);
    }
  }

  private start(id: number, locks: string[]): void {
    locks.forEach((l) => this.held.add(l));
    this.log(id, 'started');
    this.store.setRunning(id);
    const job = this.store.get(id)!;
    const live: Live = { controller: new AbortController(), cancellable: false };
    this.live.set(id, live);
    const ctx: JobContext = {
      jobId: id,
      log: (m) => void this.log(id, m),
      commit: (fn) => this.store.commit(fn),
      recordHotplug: (uuid, action) => this.store.recordHotplug(id, uuid, action),
      signal: live.controller.signal,
      allowCancel: (on) => void (live.cancellable = on),
    };
    const t0 = process.hrtime.bigint();
    const run = (async () => {
      try {
        // Every node request the job sends carries who asked (requested-by.ts).
        await runRequestedBy(job.requested_by, () => this.runner(job, ctx));
        this.log(id, 'finished: success');
        this.store.finish(id, 'success');
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        const code = err instanceof JobError ? err.code : (err as { code?: unknown }).code;
        const canceled = live.controller.signal.aborted;
        try {
          this.log(id, `${canceled ? 'canceled' : 'failed'}: ${message}`);
          this.store.finish(id, canceled ? 'canceled' : 'error', message, canceled ? 'CANCELLED' : typeof code === 'string' ? code : '');
        } catch (dbErr) {
          console.error(`gnt-masterd: could not record the failure of job ${id}: ${String(dbErr)}`);
        }
      } finally {
        locks.forEach((l) => this.held.delete(l));
        this.running.delete(id);
        this.live.delete(id);
        const done = this.store.get(id);
        if (done) masterMetrics?.jobDone(done, Number(process.hrtime.bigint() - t0) / 1e9);
        this.events.emit(`done:${id}`, done);
        this.pump();
      }
    })();
    this.running.set(id, run);
  }
}
