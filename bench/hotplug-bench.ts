/**
 * Hotplug latency and throughput, every layer against the raw QMP floor, in
 * one run on one machine: the bare QMP sequences, the hypervisor layer,
 * gnt-noded over mutual-TLS gRPC, `gnt-instance modify --hotplug` through the
 * master (API and CLI process), the time until the guest shows the device,
 * throughput with 1..16 guests, and the cost as devices and instances grow.
 * Prints the tables and writes the same as JSON (bench/results/latest.json).
 * Run: npm run bench (inside a private network namespace).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BENCH, REPO } from './config';
import { BenchGuest } from './guest';
import { benchGuestVisible, GUEST_BLOCK, GUEST_EVENT } from './guest-visible';
import { HypervisorLayer, LIB } from './hypervisor-layer';
import { benchList, LIST_LEVELS, listOp } from './list-bench';
import { API, CLI, MasterCluster, MasterLayer, INSTANCE } from './master-layer';
import { benchReferences, NODE_STARTUP, NODE_STARTUP_OP, RPC_OP } from './references';
import { NODED, NodedBench, NodedLayer } from './noded-layer';
import { benchDevices, benchDimms, OPS, type LayerOps } from './ops';
import { RawLayer } from './raw-layer';
import { reapQemus } from './reaper';
import { benchScaling, LEVELS, scalingOp } from './scaling';
import { judgeTargets } from './targets';
import { benchThroughput, bootThroughputGuests, throughputTable, type ThroughputRow } from './throughput';
import { RAW, Recorder, summarize, table, type Summary } from './stats';

const NODED_INSTANCE = 'bench2';

interface Rig {
  work: string;
  disk: string;
  guest: BenchGuest;
  nd: NodedBench;
  mc: MasterCluster;
}

const cleanups: Array<() => Promise<void>> = [];

async function cleanup(): Promise<void> {
  while (cleanups.length) await (cleanups.pop() as () => Promise<void>)().catch((err: unknown) => console.error(`cleanup: ${String(err)}`));
}

function log(msg: string): void {
  console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

async function setUp(): Promise<Rig> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-bench-'));
  cleanups.push(async () => {
    const killed = reapQemus(work);
    if (killed.length) log(`killed QEMU processes left behind: ${killed.join(', ')}`);
    // GNT_BENCH_KEEP=1 keeps the daemons' logs and runtime files (QEMUs are still killed).
    if (process.env.GNT_BENCH_KEEP === '1') log(`kept ${work}`);
    else fs.rmSync(work, { recursive: true, force: true });
  });
  const disk = RawLayer.diskFile(work);
  const nd = await NodedBench.start(work);
  cleanups.push(() => nd.stop());
  const mc = new MasterCluster(work);
  cleanups.push(() => mc.stop());
  const [guest] = await Promise.all([BenchGuest.boot(work, 'bench1'), nd.bootInstance(NODED_INSTANCE), mc.start()]);
  cleanups.push(() => guest.stop());
  return { work, disk, guest, nd, mc };
}

function layers(rig: Rig): { raw: RawLayer; lib: HypervisorLayer; noded: NodedLayer; api: MasterLayer; cli: MasterLayer } {
  return {
    raw: new RawLayer(rig.guest, rig.disk),
    lib: new HypervisorLayer(rig.guest, rig.disk),
    // gnt-noded takes disk files only beneath its --storage-dir (NodedBench.start makes <work>/noded-storage).
    noded: new NodedLayer(rig.nd, NODED_INSTANCE, RawLayer.diskFile(path.join(rig.work, 'noded-storage'))),
    api: new MasterLayer(rig.mc, 'api'),
    cli: new MasterLayer(rig.mc, 'cli'),
  };
}

async function latency(rec: Recorder, l: ReturnType<typeof layers>): Promise<void> {
  const order: LayerOps[] = [l.raw, l.lib, l.noded, l.api, l.cli];
  // interleaved rounds spread any drift of the machine (e.g. other work on it) over all layers
  const perRound = Array.from({ length: BENCH.rounds }, (_, i) => Math.floor((BENCH.iterations + i) / BENCH.rounds));
  for (const n of perRound.filter((k) => k > 0)) for (const ops of order) {
    log(`NIC/disk/CPU: ${ops.layer}, ${n} samples`);
    await benchDevices(ops, n, rec);
  }
  const fresh = new Map<LayerOps, boolean>([[l.raw, true], [l.lib, false], [l.noded, true], [l.api, true], [l.cli, false]]);
  for (const ops of order) {
    log(`DIMM: ${ops.layer}, ${BENCH.dimmIterations} samples`);
    await benchDimms(ops, BENCH.dimmIterations, rec, fresh.get(ops) ?? false);
  }
}

async function throughput(rig: Rig): Promise<ThroughputRow[]> {
  log(`throughput: booting ${BENCH.throughputGuests} guests`);
  const names = await bootThroughputGuests(rig.nd, BENCH.throughputGuests);
  try {
    log('throughput: running');
    return await benchThroughput(rig.nd, names);
  } finally {
    await Promise.all(names.map((n) => rig.nd.stopInstance(n).catch(() => undefined)));
  }
}

const OP_ORDER = [NODE_STARTUP_OP, RPC_OP, ...OPS, ...LEVELS.map(scalingOp), ...LIST_LEVELS.map(listOp)];
const LAYER_ORDER = [NODE_STARTUP, RAW, LIB, NODED, API, CLI, GUEST_EVENT, GUEST_BLOCK];

function ordered(rows: Summary[]): Summary[] {
  return [...rows].sort((a, b) => OP_ORDER.indexOf(a.op) - OP_ORDER.indexOf(b.op) || LAYER_ORDER.indexOf(a.layer) - LAYER_ORDER.indexOf(b.layer));
}

function report(rows: Summary[], tp: ThroughputRow[], meta: Record<string, unknown>): void {
  const head = `gnt-hotplug hotplug benchmark, ${meta.date}: QEMU under TCG, ${os.cpus().length} CPUs, ` +
    `${Math.round(os.totalmem() / 2 ** 30)} GiB; load average ${meta.loadBefore} before, ${meta.loadAfter} after`;
  console.log(`${head}\n\nLatency (ms; "x raw" = median / raw QMP median of the same operation in this run)\n`);
  console.log(table(rows));
  console.log(`\nThroughput: NIC add/remove pairs through gnt-noded HotplugDevice, all guests at once, ${BENCH.throughputSeconds} s per step\n`);
  console.log(throughputTable(tp));
  const out = path.join(REPO, 'bench/results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'latest.json'), JSON.stringify({ ...meta, settings: BENCH, rows, throughput: tp }, null, 2) + '\n');
  console.log('\nJSON: bench/results/latest.json');
}

async function main(): Promise<void> {
  if (process.env.GNT_IN_TEST_NETNS !== '1') throw new Error('run through "npm run bench" (needs a private network namespace)');
  const started = Date.now();
  const loadBefore = os.loadavg()[0].toFixed(2);
  log('setting up: a guest for the hypervisor layer, gnt-noded with a guest, a one-node cluster with a guest');
  const rig = await setUp();
  const rec = new Recorder();
  const l = layers(rig);
  await benchReferences(rec, BENCH.iterations, rig.nd, rig.mc);
  await latency(rec, l);
  log('until the guest sees it');
  await benchGuestVisible(rig.guest, l.raw, rec);
  const tp = await throughput(rig);
  log('NIC add as devices accumulate');
  await benchScaling(rec, l.raw, rig.nd, l.noded);
  log(`gnt-instance list with ${LIST_LEVELS.join(', ')} instances (${INSTANCE} plus config-only ones)`);
  await benchList(rig.mc, rec);
  const rows = ordered(judgeTargets(summarize(rec.all())));
  const meta = { date: new Date().toISOString(), seconds: Math.round((Date.now() - started) / 1000), loadBefore, loadAfter: os.loadavg()[0].toFixed(2) };
  report(rows, tp, meta);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });

main()
  .catch((err: unknown) => {
    console.error(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
