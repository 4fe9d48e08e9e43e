/**
 * Cost as work grows, part 2: `gnt-instance list` with 10, 1,000 and 10,000
 * instances in the configuration, as the master's ListInstances call and as
 * a CLI process (the API call as the CLI table makes it: live state and the
 * summary form). The extra instances are config-only (stopped, on the one
 * node), inserted straight into the master's SQLite through the config store.
 */
import { openDb } from '../src/master/config/db';
import { ConfigStore } from '../src/master/config/config-store';
import type { ListInstancesReply__Output } from '../src/generated/gnt/master/v1/ListInstancesReply';
import { call } from '../src/master/cli/client';
import { BENCH, GUEST, SHAPE } from './config';
import { API, CLI, type MasterCluster } from './master-layer';
import type { Recorder } from './stats';

export const LIST_LEVELS = [10, 1000, 10_000];
export const listOp = (n: number): string => `gnt-instance list, ${n.toLocaleString('en-US')} instances`;

/** Adds config-only instances until the configuration holds `total`. */
function fillTo(mc: MasterCluster, total: number): void {
  const db = openDb(mc.dir.dbFile);
  try {
    const store = new ConfigStore(db);
    const have = store.listInstances().length;
    const node = store.listNodes()[0];
    // IMMEDIATE: takes the write lock first, so the master's own commits meanwhile cannot make it SQLITE_BUSY
    db.transaction(() => {
      for (let i = have; i < total; i++)
        store.addInstance({
          name: `cfg${String(i).padStart(5, '0')}`, nodeUuid: node.uuid, vcpus: SHAPE.vcpus, maxvcpus: SHAPE.maxVcpus,
          memoryMib: SHAPE.memoryMiB, maxmemMib: SHAPE.maxMemoryMiB, kernel: GUEST.kernel, initrd: GUEST.initrd, kernelArgs: '',
          hvparams: {}, nics: [], disks: [],
        });
    }).immediate();
  } finally {
    db.close();
  }
}

export async function benchList(mc: MasterCluster, rec: Recorder): Promise<void> {
  for (const total of LIST_LEVELS) {
    fillTo(mc, total);
    const { client, address } = mc.client;
    for (let i = 0; i < BENCH.listIterations; i++) {
      await rec.time(API, listOp(total), async () => {
        const r = await call<object, ListInstancesReply__Output>(client, address, 'ListInstances', { live: true, summary: true });
        if (r.instances.length !== total) throw new Error(`ListInstances gave ${r.instances.length} instances, not ${total}`);
      });
      await rec.time(CLI, listOp(total), () => mc.cliOk('gnt-instance', 'list'));
    }
  }
}

/**
 * `node dist/bench/list-bench.js` (inside scripts/in-netns.sh): only the
 * master's lines, for work on the master: the raw QMP floor on a guest of
 * its own and `gnt-instance modify --hotplug` through the master API
 * (NIC, disk and CPU; GNT_BENCH_ITERATIONS samples, default 12 here), then
 * the list levels. GNT_BENCH_QUICK=latency or =list runs only that part.
 */
/** NIC add/remove, disk add/remove and CPU add, as benchDevices, but a failed sample is reported and skipped. */
async function quickDevices(ops: import('./ops').LayerOps, n: number, rec: Recorder): Promise<void> {
  const { sleep } = await import('./stats');
  const { BENCH: B } = await import('./config');
  const step = (op: string, fn: () => Promise<void>): Promise<unknown> =>
    rec.time(ops.layer, op, fn).catch((err: unknown) => console.error(`${ops.layer} ${op}: ${String(err).split('\n')[0]}`));
  await ops.begin?.();
  try {
    for (let i = 0; i < n; i++) {
      await step('NIC add', () => ops.nicAdd());
      await sleep(B.settleMs);
      await step('NIC remove', () => ops.nicRemove());
      await step('disk add', () => ops.diskAdd());
      await sleep(B.settleMs);
      await step('disk remove', () => ops.diskRemove());
      if (ops.room().cpuAdds === 0) break;
      await step('CPU add', () => ops.cpuAdd());
      await sleep(B.settleMs);
      await ops.cpuRemove();
    }
  } finally {
    await ops.end?.();
  }
}

async function quickMain(): Promise<void> {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { BenchGuest } = await import('./guest');
  const { RawLayer } = await import('./raw-layer');
  const { MasterCluster, MasterLayer } = await import('./master-layer');
  const { reapQemus } = await import('./reaper');
  const { Recorder: Rec, summarize, table } = await import('./stats');
  if (process.env.GNT_IN_TEST_NETNS !== '1') throw new Error('run inside scripts/in-netns.sh');
  const part = process.env.GNT_BENCH_QUICK ?? 'all';
  const n = Number(process.env.GNT_BENCH_ITERATIONS ?? 12);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-bench-'));
  const mc = new MasterCluster(work);
  let guest: Awaited<ReturnType<typeof BenchGuest.boot>> | undefined;
  const rec = new Rec();
  const loadBefore = os.loadavg()[0].toFixed(2);
  try {
    const latency = part === 'all' || part === 'latency';
    [guest] = await Promise.all([latency ? BenchGuest.boot(work, 'bench1') : Promise.resolve(undefined), mc.start()]);
    if (latency && guest) {
      const raw = new RawLayer(guest, RawLayer.diskFile(work));
      const api = new MasterLayer(mc, 'api');
      for (let round = 0; round < 2; round++) for (const ops of [raw, api]) await quickDevices(ops, Math.ceil(n / 2), rec);
    }
    if (part === 'all' || part === 'list') await benchList(mc, rec);
  } finally {
    await mc.stop().catch((e: unknown) => console.error(`stop: ${String(e)}`));
    await guest?.stop();
    reapQemus(work);
    fs.rmSync(work, { recursive: true, force: true });
  }
  console.log(`load average ${loadBefore} before, ${os.loadavg()[0].toFixed(2)} after`);
  console.log(table(summarize(rec.all())));
}

if (require.main === module)
  quickMain().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
