/** Measuring a disk's I/O rate inside QEMU (the guest has no command channel). */
import * as fs from 'node:fs';
import type { Monitor } from '../../src/hypervisor/qmp-client';

/**
 * `ops` 4 KiB reads, one after the other, through the device's BlockBackend
 * (HMP qemu-io -d: the one the guest's I/O goes through, throttled as the
 * guest's is). qemu-io prints each read's own rate ("... (X ops/sec)") on
 * QEMU's stdout, the instance's QEMU log; the median of those is returned.
 */
export async function qemuIoReadRate(mon: Monitor, qemuLog: string, qdevId: string, ops: number): Promise<number> {
  const from = fs.statSync(qemuLog).size;
  for (let i = 0; i < ops; i++) {
    const out = await mon.execute<string>('human-monitor-command', { 'command-line': `qemu-io -d ${qdevId} "read ${(i % 64) * 4096} 4k"` });
    if (out.trim()) throw new Error(`qemu-io said: ${out}`);
  }
  const fd = fs.openSync(qemuLog, 'r');
  const buf = Buffer.alloc(fs.fstatSync(fd).size - from);
  fs.readSync(fd, buf, 0, buf.length, from);
  fs.closeSync(fd);
  const rates = [...buf.toString('utf8').matchAll(/and ([\d.]+) ops\/sec\)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (rates.length !== ops) throw new Error(`qemu-io reported ${rates.length} of ${ops} reads: ${buf.toString('utf8').slice(-500)}`);
  return rates[Math.floor(rates.length / 2)];
}

