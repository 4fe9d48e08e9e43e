/**
 * Where the hypervisor layer's time goes on a NIC and a disk add: every QMP
 * command timed through a wrapped monitor, and the two kinds of runtime file
 * save (a journal append, what nearly every save is; a compaction, the whole
 * file written as every save was before the journal) timed on their own.
 * Run inside the netns:
 *   scripts/in-netns.sh node dist/bench/profile-steps.js
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HostPathPolicy } from '../src/hypervisor/host-paths';
import { KvmInstance } from '../src/hypervisor/kvm-instance';
import type { Monitor } from '../src/hypervisor/qmp-client';
import { RuntimeStore, saveRuntimeFile, type RuntimeData } from '../src/hypervisor/runtime-file';
import { GUEST_DIR } from './config';
import { benchSpec, waitBooted } from './guest';
import { RawLayer } from './raw-layer';
import { median, sleep, time } from './stats';

const steps = new Map<string, number[]>();
const note = (k: string, ms: number): void => void (steps.get(k) ?? steps.set(k, []).get(k))?.push(ms);

function timedMonitor(mon: Monitor): Monitor {
  return {
    execute: async (cmd, args, opts) => {
      const t = process.hrtime.bigint();
      try {
        return await mon.execute(cmd, args, opts);
      } finally {
        note(`qmp ${cmd}`, Number(process.hrtime.bigint() - t) / 1e6);
      }
    },
    hmp: async (line) => {
      const t = process.hrtime.bigint();
      try {
        return await mon.hmp(line);
      } finally {
        note(`hmp ${line}`, Number(process.hrtime.bigint() - t) / 1e6);
      }
    },
    waitForEvent: (m, ms, what) => mon.waitForEvent(m, ms, what),
  };
}

function timeSync(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** Both kinds of save, of the instance's real runtime data, in a scratch directory beside it. */
function timeSaves(work: string, data: RuntimeData): void {
  console.log(`runtime data: ${Buffer.byteLength(JSON.stringify(data))} bytes as a journal record's payload`);
  const dir = path.join(work, 'scratch');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'runtime.json');
  for (let i = 0; i < 40; i++) {
    note('runtime save: compaction', timeSync(() => saveRuntimeFile(file, data)));
    const { store } = RuntimeStore.open(file, data.instance);
    for (let j = 0; j < 5; j++) note('runtime save: journal append', timeSync(() => store.save(data)));
  }
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'gnt-prof-'));
  const inst = KvmInstance.create(work, benchSpec('prof1'), {}, { wrapMonitor: timedMonitor, hostPaths: new HostPathPolicy({ storageDir: work, imageDir: GUEST_DIR }) });
  try {
    await inst.start();
    await waitBooted(inst.paths.consoleLog, 'prof1');
    const disk = RawLayer.diskFile(work);
    for (let i = 0; i < 20; i++) {
      const nic = randomUUID();
      note('NIC add total', await time(() => inst.hotAddNic({ uuid: nic, mac: '52:54:00:be:00:09' })));
      await sleep(150);
      await inst.hotRemoveNic(nic);
      const d = randomUUID();
      note('disk add total', await time(() => inst.hotAddDisk({ uuid: d, path: disk })));
      await sleep(150);
      await inst.hotRemoveDisk(d);
    }
    timeSaves(work, inst.runtime);
    for (const [k, v] of [...steps.entries()].sort()) console.log(`${k.padEnd(28)} n=${String(v.length).padStart(3)}  median ${median(v).toFixed(2)} ms`);
  } finally {
    await inst.stop().catch(() => undefined);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
