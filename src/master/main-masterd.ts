/**
 * gnt-masterd --cluster-dir DIR [--listen HOST:PORT]
 *
 * Serves the master API with mutual TLS and runs jobs. Jobs left queued or
 * running by an earlier master are marked failed at start-up, and the
 * configuration of the instances they touched is reconciled with the
 * nodes' runtime (jobs/reconcile.ts) before serving. Prints
 * "gnt-masterd listening on HOST:PORT" once ready.
 */
import { ClusterDir } from './cluster-dir';
import { MasterDaemon } from './server';
import { parseArgs } from './cli/args';
import { UsageError } from './validate';

export async function masterdMain(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs(argv, { values: ['cluster-dir', 'listen'], flags: ['help'] });
    if (args.flags.has('help')) {
      process.stdout.write('usage: gnt-masterd [--cluster-dir DIR] [--listen HOST:PORT]\n');
      return 0;
    }
    if (args.positional.length) throw new UsageError(`unexpected argument "${args.positional[0]}"`);
  } catch (err) {
    process.stderr.write(`Failure: ${(err as Error).message}\n`);
    return 2;
  }
  const dir = ClusterDir.resolve(args.value('cluster-dir'));
  let master: MasterDaemon;
  let bound: string;
  try {
    master = new MasterDaemon({ clusterDir: dir, listen: args.value('listen') });
    for (const id of master.interrupted) process.stderr.write(`gnt-masterd: job ${id} was interrupted by a master restart; marked failed\n`);
    // Before serving: no new job may touch an instance whose config is being repaired.
    await master.reconcile((line) => process.stderr.write(`${line}\n`));
    bound = await master.listen();
  } catch (err) {
    process.stderr.write(`Failure: ${(err as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`gnt-masterd listening on ${bound}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      const running = master.queue.runningIds();
      process.stderr.write(
        `gnt-masterd: ${signal}, shutting down` +
          (running.length ? `; running jobs ${running.join(', ')} will be marked interrupted at the next start` : '') + '\n',
      );
      master.close().then(() => resolve(0), () => resolve(1));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
