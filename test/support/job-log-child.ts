/**
 * The child of the job log crash test (test/unit/job-log.test.ts): runs a
 * job through the real JobQueue on the database given, logging lines and
 * committing steps in a pattern from the seed, prints every line the
 * moment it is announced to watchers (a pipe write, synchronous on Linux),
 * and is killed by its parent with SIGKILL at a random moment.
 *
 *   node job-log-child.js DBFILE SEED
 */
import { openDb } from '../../src/master/config/db';
import { JobStore } from '../../src/master/jobs/job-store';
import { JobQueue } from '../../src/master/jobs/queue';

const [file, seedText] = process.argv.slice(2);
let seed = Number(seedText) >>> 0 || 1;
const rand = (n: number): number => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed % n;
};

const db = openDb(file);
const store = new JobStore(db, 5);
const queue = new JobQueue(store, async (_job, ctx) => {
  for (let step = 0; ; step++) {
    for (let i = rand(4); i >= 0; i--) ctx.log(`step ${step} line ${i}`);
    if (rand(2)) ctx.commit(() => db.prepare("INSERT INTO cluster (key, value) VALUES (?, 'x')").run(`step-${process.pid}-${step}`));
    await new Promise((r) => setTimeout(r, rand(8)));
  }
});
const job = queue.submit('test', {}, 'crash test', ['x']);
queue.onLog(job.id, (line) => process.stdout.write(`${JSON.stringify(line)}\n`));
process.stdout.write(`job ${job.id}\n`);
