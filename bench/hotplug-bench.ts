/**
 * Hotplug latency: the raw QMP floor and the hypervisor layer, measured on
 * the same booted test guest in the same run. Prints a table of medians,
 * p95 and max with each layer's ratio to the raw floor, and writes the same
 * as JSON (bench/results/latest.json). Run: npm run bench
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KvmInstance } from '../src/hypervisor/kvm-instance';
import { RawQmp, rawDiskAdd, rawDiskRemove, rawNicAdd, rawNicRemove } from './raw-qmp';
import { benchNoded, startNoded } from './noded-layer';
import { summarize, table, time, type Series } from './stats';

const REPO = path.resolve(__dirname, '../..');
const ITERATIONS = Number(process.env.GNT_BENCH_ITERATIONS ?? 15);
const SLOT = 10;

async function bootGuest(dataDir: string): Promise<KvmInstance> {
  const guest = path.join(REPO, '.cache/guest');
  const inst = KvmInstance.create(dataDir, {
    name: 'bench1', memoryMiB: 256, maxMemoryMiB: 1024, vcpus: 1, maxVcpus: 4,
    kernel: path.join(guest, 'vmlinuz'), initrd: path.join(guest, 'initrd.gz'),
    kernelArgs: 'console=ttyS0 quiet loglevel=1 panic=-1',
  });
  await inst.start();
  // let the guest finish booting so that ejects are answered at full speed
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(inst.paths.consoleLog) || !fs.readFileSync(inst.paths.consoleLog, 'utf8').includes('gnt-guest end')) {
    if (Date.now() > deadline) throw new Error('guest did not boot');
    await new Promise((r) => setTimeout(r, 200));
  }
  return inst;
}

async function benchRaw(inst: KvmInstance, disk: string, series: Series[]): Promise<void> {
  inst.disconnect(); // the monitor takes one client
  const q = await RawQmp.connect(inst.paths.qmpSocket);
  const add = (op: string): Series => { const s = { name: op, layer: 'raw QMP', op, samplesMs: [] as number[] }; series.push(s); return s; };
  const [na, nr, da, dr] = [add('NIC add'), add('NIC remove'), add('disk add'), add('disk remove')];
  for (let i = 0; i < ITERATIONS; i++) {
    const nic = `nic-raw${i}-pci-${SLOT}`;
    na.samplesMs.push(await time(() => rawNicAdd(q, nic, SLOT, '52:54:00:be:00:01')));
    nr.samplesMs.push(await time(() => rawNicRemove(q, nic)));
    const d = `disk-raw${i}-pci-${SLOT}`;
    da.samplesMs.push(await time(() => rawDiskAdd(q, d, SLOT, disk)));
    dr.samplesMs.push(await time(() => rawDiskRemove(q, d)));
  }
  q.close();
}

async function benchLayer(inst: KvmInstance, disk: string, series: Series[]): Promise<void> {
  const add = (op: string): Series => { const s = { name: op, layer: 'hypervisor layer', op, samplesMs: [] as number[] }; series.push(s); return s; };
  const [na, nr, da, dr] = [add('NIC add'), add('NIC remove'), add('disk add'), add('disk remove')];
  await inst.monitor();
  for (let i = 0; i < ITERATIONS; i++) {
    const nicUuid = randomUUID();
    na.samplesMs.push(await time(() => inst.hotAddNic({ uuid: nicUuid, mac: '52:54:00:be:00:02', slot: SLOT })));
    nr.samplesMs.push(await time(() => inst.hotRemoveNic(nicUuid)));
    const diskUuid = randomUUID();
    da.samplesMs.push(await time(() => inst.hotAddDisk({ uuid: diskUuid, path: disk, slot: SLOT })));
    dr.samplesMs.push(await time(() => inst.hotRemoveDisk(diskUuid)));
  }
}

async function main(): Promise<void> {
  if (process.env.GNT_IN_TEST_NETNS !== '1') throw new Error('run through "npm run bench" (needs a private network namespace)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-bench-'));
  const disk = path.join(dataDir, 'bench.img');
  fs.writeFileSync(disk, '');
  fs.truncateSync(disk, 16 << 20);
  const inst = await bootGuest(dataDir);
  const guest = path.join(REPO, '.cache/guest');
  const noded = await startNoded(REPO, dataDir, { kernel: path.join(guest, 'vmlinuz'), initrd: path.join(guest, 'initrd.gz') });
  const series: Series[] = [];
  try {
    // interleave the layers twice to spread any drift over all of them
    for (let round = 0; round < 2; round++) {
      await benchRaw(inst, disk, series);
      await benchLayer(inst, disk, series);
      await benchNoded(noded, disk, ITERATIONS, series);
    }
  } finally {
    await noded.stop();
    await inst.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  const merged = new Map<string, Series>();
  for (const s of series) {
    const key = `${s.layer}|${s.op}`;
    const m = merged.get(key);
    if (m) m.samplesMs.push(...s.samplesMs);
    else merged.set(key, { ...s, samplesMs: [...s.samplesMs] });
  }
  const order = ['NIC add', 'NIC remove', 'disk add', 'disk remove'];
  const layers = ['raw QMP', 'hypervisor layer', 'gnt-noded gRPC (mTLS)'];
  const rows = summarize([...merged.values()]).sort((a, b) => order.indexOf(a.op) - order.indexOf(b.op) || layers.indexOf(a.layer) - layers.indexOf(b.layer));
  console.log(`gnt-hotplug hotplug latency, ${ITERATIONS * 2} runs per line, QEMU under TCG, ${os.cpus().length} CPUs\n`);
  console.log(table(rows));
  const out = path.join(REPO, 'bench/results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'latest.json'), JSON.stringify({ date: new Date().toISOString(), iterations: ITERATIONS * 2, rows }, null, 2) + '\n');
  console.log(`\nJSON: bench/results/latest.json`);
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exit(1);
});
