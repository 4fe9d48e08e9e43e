/**
 * A job as a stream of JobEvents (WatchJob and RunJob, proto/master.proto):
 * the committed log lines after `afterSeq`, then each new line as it is
 * committed (job-log.ts), in seq order with no duplicates, then `done` with
 * the finished job, then the end of the stream.
 *
 * The stream subscribes before it reads the lines already in the database,
 * and both happen in one synchronous step, so no line falls between them;
 * a line read twice (from the database and from the event) is sent once, by
 * its seq. When the client goes away (cancelled, connection closed) the
 * listeners are removed at once: a stream leaves nothing behind, and the
 * job runs on.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Job } from '../../generated/gnt/master/v1/Job';
import type { JobEvent } from '../../generated/gnt/master/v1/JobEvent';
import { FINISHED, type JobRow, type JobStore, type LogLine } from './job-store';
import type { JobQueue } from './queue';

export function toJob(row: JobRow, log?: LogLine[]): Job {
  return {
    id: row.id, opType: row.op_type, summary: row.summary, status: row.status, error: row.error, errorCode: row.error_code,
    createdAt: row.created_at, startedAt: row.started_at, endedAt: row.ended_at, opJson: row.op_json, log: log ?? [], requestedBy: row.requested_by ?? '',
  };
}

export interface JobStreamDeps {
  queue: JobQueue;
  store: JobStore;
}

/** Streams job `id` (which exists) on `call` until it has finished or the client has gone. */
export function streamJob(deps: JobStreamDeps, call: grpc.ServerWritableStream<unknown, JobEvent>, id: number, afterSeq = 0): void {
  const { queue, store } = deps;
  let lastSeq = afterSeq;
  let stopped = false;
  const send = (line: LogLine): void => {
    if (line.seq <= lastSeq || stopped) return;
    lastSeq = line.seq;
    call.write({ line });
  };
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    offLog();
    offDone();
  };
  const finish = (): void => {
    if (stopped) return;
    for (const l of store.logs(id, lastSeq)) send(l);
    stop();
    call.write({ done: toJob(store.get(id)!) });
    call.end();
  };
  const offLog = queue.onLog(id, send);
  const offDone = queue.onDone(id, finish);
  for (const ev of ['cancelled', 'close', 'error']) call.once(ev, stop);
  for (const l of store.logs(id, lastSeq)) send(l);
  if (FINISHED.has(store.get(id)!.status)) finish();
}
