/** gnt-job: list, info, watch, cancel. */
import type { ParsedArgs } from './args';
import type { CommandGroup } from './common';
import { positionals } from './common';
import { call, connectMaster, finishedJobExit, watchJob } from './client';
import { block, json, table } from './output';
import { UsageError } from '../validate';
import type { ListJobsReply__Output } from '../../generated/gnt/master/v1/ListJobsReply';
import type { Job__Output } from '../../generated/gnt/master/v1/Job';

function jobId(args: ParsedArgs): number {
  const [id] = positionals(args, ['JOB_ID']);
  if (!/^\d+$/.test(id)) throw new UsageError(`job id "${id}" is not a number`);
  return Number(id);
}

export const jobCommands: CommandGroup = {
  list: {
    usage: 'gnt-job list [--output json]',
    spec: {},
    async run(args, { dir, output }) {
      positionals(args, []);
      const { client, address } = connectMaster(dir);
      try {
        const reply = await call<object, ListJobsReply__Output>(client, address, 'ListJobs', {});
        if (output === 'json') process.stdout.write(json(reply.jobs.map(({ log: _log, ...j }) => j)));
        else process.stdout.write(table(['ID', 'Status', 'Operation', 'Summary', 'Error'], reply.jobs.map((j) => [j.id, j.status, j.opType, j.summary, j.error])));
        return 0;
      } finally {
        client.close();
      }
    },
  },
  info: {
    usage: 'gnt-job info [--output json] JOB_ID',
    spec: {},
    async run(args, { dir, output }) {
      const id = jobId(args);
      const { client, address } = connectMaster(dir);
      try {
        const j = await call<object, Job__Output>(client, address, 'GetJob', { id });
        if (output === 'json') process.stdout.write(json({ ...j, op: JSON.parse(j.opJson) }));
        else
          process.stdout.write(
            block([
              ['Job', j.id],
              ['Status', j.status],
              ['Operation', j.opType],
              ['Summary', j.summary],
              ['Requested by', j.requestedBy || '(not recorded)'],
              ['Error', j.error + (j.errorCode ? ` (${j.errorCode})` : '')],
              ['Created', j.createdAt],
              ['Started', j.startedAt],
              ['Ended', j.endedAt],
              ['Request', j.opJson],
              ['Log', j.log.map((l) => `${l.time} ${l.message}`)],
            ]),
          );
        return 0;
      } finally {
        client.close();
      }
    },
  },
  watch: {
    usage: 'gnt-job watch JOB_ID',
    spec: {},
    async run(args, { dir }) {
      const id = jobId(args);
      const { client, address } = connectMaster(dir);
      try {
        return finishedJobExit(await watchJob(client, address, id));
      } finally {
        client.close();
      }
    },
  },
  cancel: {
    usage: 'gnt-job cancel JOB_ID',
    spec: {},
    async run(args, { dir }) {
      const id = jobId(args);
      const { client, address } = connectMaster(dir);
      try {
        const j = await call<object, Job__Output>(client, address, 'CancelJob', { id });
        process.stdout.write(`job ${j.id} ${j.status}\n`);
        return 0;
      } finally {
        client.close();
      }
    },
  },
};
