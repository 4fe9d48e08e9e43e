/**
 * Cost as work grows, part 2: `gnt-instance list` with 10, 1,000 and 10,000
 * instances in the configuration, as the master's ListInstances call and as
 * a CLI process. The extra instances are config-only (stopped, on the one
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
    db.transaction(() => {
      for (let i = have; i < total; i++)
        store.addInstance({
          name: `cfg${String(i).padStart(5, '0')}`, nodeUuid: node.uuid, vcpus: SHAPE.vcpus, maxvcpus: SHAPE.maxVcpus,
          memoryMib: SHAPE.memoryMiB, maxmemMib: SHAPE.maxMemoryMiB, kernel: GUEST.kernel, initrd: GUEST.initrd, kernelArgs: '',
          hvparams: {}, nics: [], disks: [],
        });
    })();
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
        const r = await call<object, ListInstancesReply__Output>(client, address, 'ListInstances', { live: true });
        if (r.instances.length !== total) throw new Error(`ListInstances gave ${r.instances.length} instances, not ${total}`);
      });
      await rec.time(CLI, listOp(total), () => mc.cliOk('gnt-instance', 'list'));
    }
  }
}
