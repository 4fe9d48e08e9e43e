/** A bench guest run by the hypervisor layer in this process (used by the raw QMP floor and the library layer). */
import * as fs from 'node:fs';
import { HostPathPolicy } from '../src/hypervisor/host-paths';
import { KvmInstance } from '../src/hypervisor/kvm-instance';
import type { InstanceSpec } from '../src/hypervisor/qemu-command';
import { GUEST, GUEST_DIR, KERNEL_ARGS, SHAPE } from './config';
import { sleep } from './stats';

export const BOOT_TIMEOUT_MS = 120_000;

/** Waits until the console log holds a first complete state block of the test guest. */
export async function waitBooted(consoleLog: string, what: string, timeoutMs = BOOT_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(consoleLog) || !fs.readFileSync(consoleLog, 'utf8').includes('gnt-guest end')) {
    if (Date.now() > deadline) throw new Error(`${what} did not boot within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

export function benchSpec(name: string): InstanceSpec {
  return {
    name, memoryMiB: SHAPE.memoryMiB, maxMemoryMiB: SHAPE.maxMemoryMiB, vcpus: SHAPE.vcpus, maxVcpus: SHAPE.maxVcpus,
    kernel: GUEST.kernel, initrd: GUEST.initrd, kernelArgs: KERNEL_ARGS,
  };
}

export class BenchGuest {
  /** DIMMs and vCPUs added since the last boot, by any client. */
  dimmsUsed = 0;
  cpuAdds = 0;
  /** Called before a restart, e.g. to close a raw monitor connection. */
  beforeRestart: Array<() => void> = [];

  private constructor(readonly inst: KvmInstance, private readonly spec: InstanceSpec) {}

  static async boot(dataDir: string, name: string): Promise<BenchGuest> {
    const spec = benchSpec(name);
    const g = new BenchGuest(KvmInstance.create(dataDir, spec, {}, { unplugTimeoutMs: 20_000, hostPaths: new HostPathPolicy({ storageDir: dataDir, imageDir: GUEST_DIR }) }), spec);
    await g.inst.start();
    await waitBooted(g.inst.paths.consoleLog, name);
    return g;
  }

  /** Stops QEMU and starts it again from the spec alone: no hot-added vCPU or DIMM. */
  async restart(): Promise<void> {
    for (const f of this.beforeRestart) f();
    await this.inst.stop();
    fs.rmSync(this.inst.paths.consoleLog, { force: true });
    await this.inst.reconfigureAndStart(this.spec, {});
    await waitBooted(this.inst.paths.consoleLog, this.spec.name);
    this.dimmsUsed = 0;
    this.cpuAdds = 0;
  }

  room(): { cpuAdds: number; dimms: number } {
    return { cpuAdds: SHAPE.cpuAddsPerBoot - this.cpuAdds, dimms: SHAPE.dimmsPerBoot - this.dimmsUsed };
  }

  async stop(): Promise<void> {
    await this.inst.stop().catch(() => undefined);
  }
}
