/**
 * gnt-masterd's Prometheus metrics (prefix gnt_masterd_), on a registry of
 * its own. The daemon sets `masterMetrics` at start when --metrics-listen is
 * given; the hook in the job queue is a no-op without it.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { JobRow, JobStore } from './jobs/job-store';

export class MasterMetrics {
  readonly registry = new Registry();
  readonly jobSeconds = new Histogram({
    name: 'gnt_masterd_job_duration_seconds',
    help: 'jobs from start to end, by op type and final status',
    labelNames: ['op', 'status'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
    registers: [this.registry],
  });
  readonly jobsFinished = new Counter({
    name: 'gnt_masterd_jobs_finished_total',
    help: 'jobs that ended, by op type and final status (success, error, canceled)',
    labelNames: ['op', 'status'] as const,
    registers: [this.registry],
  });

  constructor(store: JobStore) {
    new Gauge({
      name: 'gnt_masterd_job_queue_length',
      help: 'jobs queued or running now, by status',
      labelNames: ['status'] as const,
      registers: [this.registry],
      collect() {
        for (const status of ['queued', 'running'] as const) this.set({ status }, store.withStatus(status).length);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'gnt_masterd_' });
  }

  jobDone(job: JobRow, seconds: number): void {
    this.jobSeconds.observe({ op: job.op_type, status: job.status }, seconds);
    this.jobsFinished.inc({ op: job.op_type, status: job.status });
  }
}

/** The daemon's metrics, when --metrics-listen was given. */
export let masterMetrics: MasterMetrics | undefined;

export function enableMasterMetrics(m: MasterMetrics): void {
  masterMetrics = m;
}
