/**
 * gnt-masterd --cluster-dir DIR [--listen HOST:PORT] [--outcome-window-ms MS]
 *             [--converge-interval-ms MS] [--fence-after-ms MS] [--max-in-flight N]
 *             [--local-socket PATH|none]
 *
 * Serves the master API with mutual TLS and runs jobs. The local CLI is
 * also served without certificates on a unix socket only root can open
 * (local-socket.ts): CLUSTER_DIR/masterd.sock unless --local-socket (or
 * GNT_MASTERD_SOCKET) gives another path, or "none" for TLS only. Jobs left queued or
 * running by an earlier master are marked failed at start-up; the outcomes
 * of their operations are settled by the convergence loop (convergence.ts),
 * whose first pass runs before serving, and older interrupted jobs without
 * operations are reconciled with the nodes' runtime (jobs/reconcile.ts).
 * Prints "gnt-masterd listening on HOST:PORT" once ready.
 *
 * The three timings can also come from GNT_MASTERD_OUTCOME_WINDOW_MS,
 * GNT_MASTERD_CONVERGE_INTERVAL_MS and GNT_MASTERD_FENCE_AFTER_MS (the
 * options win). --max-in-flight (or GNT_MASTERD_MAX_IN_FLIGHT): calls one
 * client certificate may have running at once (default 64); the excess is
 * answered RESOURCE_EXHAUSTED.
 */
import * as path from 'node:path';
import { ClusterDir } from './cluster-dir';
import { MasterDaemon } from './server';
import { refuseLiveMaster } from './local-socket';
import { parseArgs } from './cli/args';
import { checkCount, UsageError } from './validate';
import type { ParsedArgs } from './cli/args';
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from '../common/metrics-http';
import { enableMasterMetrics, MasterMetrics } from './metrics';

const TIMINGS = {
  outcomeWindowMs: ['outcome-window-ms', 'GNT_MASTERD_OUTCOME_WINDOW_MS'],
  convergeIntervalMs: ['converge-interval-ms', 'GNT_MASTERD_CONVERGE_INTERVAL_MS'],
  fenceAfterMs: ['fence-after-ms', 'GNT_MASTERD_FENCE_AFTER_MS'],
} as const;

type Timings = { -readonly [K in keyof typeof TIMINGS]?: number };

/** The timing options (ms, 10 ms to 1 h), from the command line or the environment. */
function timings(args: ParsedArgs): Timings {
  const out: Timings = {};
  for (const [key, [option, env]] of Object.entries(TIMINGS) as [keyof Timings, readonly [string, string]][]) {
    const text = args.value(option) ?? process.env[env];
    if (text !== undefined && text !== '') out[key] = checkCount(text, `--${option} (or ${env})`, 10, 3_600_000);
  }
  return out;
}

/** The local socket's path, or undefined for "none". */
function localSocket(args: ParsedArgs, dir: ClusterDir): string | undefined {
  const given = args.value('local-socket') ?? process.env.GNT_MASTERD_SOCKET;
  if (given === 'none') return undefined;
  if (given === undefined || given === '') return dir.localSocket;
  if (!path.isAbsolute(given)) throw new UsageError(`--local-socket (or GNT_MASTERD_SOCKET) must be an absolute path or "none", not "${given}"`);
  return given;
}

export async function masterdMain(argv: string[]): Promise<number> {
  let args;
  let metricsAddr: ReturnType<typeof parseMetricsAddress> | undefined;
  let metrics: MetricsServer | undefined;
  try {
    args = parseArgs(argv, { values: ['cluster-dir', 'listen', 'max-in-flight', 'local-socket', 'metrics-listen', ...Object.values(TIMINGS).map(([o]) => o)], flags: ['help'] });
    if (args.flags.has('help')) {
      process.stdout.write('usage: gnt-masterd [--cluster-dir DIR] [--listen HOST:PORT] [--outcome-window-ms MS] [--converge-interval-ms MS] [--fence-after-ms MS] [--max-in-flight N] [--local-socket PATH|none] [--metrics-listen HOST:PORT]\n');
      return 0;
    }
    if (args.positional.length) throw new UsageError(`unexpected argument "${args.positional[0]}"`);
    if (args.value('metrics-listen') !== undefined) metricsAddr = parseMetricsAddress(args.value('metrics-listen') as string);
  } catch (err) {
    process.stderr.write(`Failure: ${(err as Error).message}\n`);
    return 2;
  }
  const dir = ClusterDir.resolve(args.value('cluster-dir'));
  let master: MasterDaemon;
  let bound: string;
  try {
    const maxInFlight = args.value('max-in-flight') ?? process.env.GNT_MASTERD_MAX_IN_FLIGHT;
    const socket = localSocket(args, dir);
    if (socket) await refuseLiveMaster(socket);
    master = new MasterDaemon({
      clusterDir: dir, listen: args.value('listen'), ...timings(args),
      ...(socket ? { localSocket: socket } : {}),
      report: (line) => process.stderr.write(`gnt-masterd: ${line}\n`),
      ...(maxInFlight ? { maxInFlight: checkCount(maxInFlight, '--max-in-flight (or GNT_MASTERD_MAX_IN_FLIGHT)', 1, 10_000) } : {}),
    });
    for (const id of master.interrupted) process.stderr.write(`gnt-masterd: job ${id} was interrupted by a master restart; marked failed\n`);
    // Before serving: no new job may touch an instance whose config is being repaired.
    const report = (line: string) => process.stderr.write(`${line}\n`);
    await master.reconcile(report);
    await master.startConvergence(report);
    bound = await master.listen();
    if (metricsAddr) {
      const m = new MasterMetrics(master.jobs);
      enableMasterMetrics(m);
      metrics = await startMetricsServer(m.registry, metricsAddr).catch(async (err: unknown) => {
        await master.close();
        throw err;
      });
      process.stderr.write(`gnt-masterd: metrics on http://${metrics.address}/metrics\n`);
    }
  } catch (err) {
    process.stderr.write(`Failure: ${(err as Error).message}\n`);
    return 1;
  }
  if (master.localSocketPath) process.stderr.write(`gnt-masterd: the local CLI socket is ${master.localSocketPath}\n`);
  process.stdout.write(`gnt-masterd listening on ${bound}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      const running = master.queue.runningIds();
      process.stderr.write(
        `gnt-masterd: ${signal}, shutting down` +
          (running.length ? `; running jobs ${running.join(', ')} will be marked interrupted at the next start` : '') + '\n',
      );
      Promise.all([master.close(), metrics?.close()]).then(() => resolve(0), () => resolve(1));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
