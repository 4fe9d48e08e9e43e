/**
 * Reference lines that explain the overheads: a bare `node -e 0` (what any
 * CLI process pays before its first line of code), and a gRPC round trip
 * that does no hotplug, to gnt-noded (NodeInfo) and to the master (GetJob).
 */
import { spawn } from 'node:child_process';
import { callNode, deadlineIn } from '../src/common/node-client';
import { call } from '../src/master/cli/client';
import { API, type MasterCluster } from './master-layer';
import { NODED, type NodedBench } from './noded-layer';
import type { Recorder } from './stats';

export const NODE_STARTUP = 'reference';
export const NODE_STARTUP_OP = 'node start-up (node -e 0)';
export const RPC_OP = 'gRPC round trip, no hotplug';

function runNode(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
}

export async function benchReferences(rec: Recorder, n: number, nd: NodedBench, mc: MasterCluster): Promise<void> {
  const { client, address } = mc.client;
  // the channel is up before the first sample; GetJob reads one job (one row and its log) from SQLite
  const { jobs } = await call<object, { jobs: Array<{ id: string }> }>(client, address, 'ListJobs', {});
  for (let i = 0; i < n; i++) {
    await rec.time(NODE_STARTUP, NODE_STARTUP_OP, runNode);
    await rec.time(NODED, RPC_OP, () => callNode(nd.client, 'NodeInfo', {}, { deadline: deadlineIn(10_000) }));
    await rec.time(API, RPC_OP, () => call(client, address, 'GetJob', { id: jobs[0].id }));
  }
}
