/** The hypervisor layer (KvmInstance library calls in this process) as a layer. */
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import type { BenchGuest } from './guest';
import type { LayerOps } from './ops';
import { SHAPE } from './config';

export const LIB = 'hypervisor layer';

export class HypervisorLayer implements LayerOps {
  readonly layer = LIB;
  private nic = '';
  private disk = '';

  constructor(private readonly guest: BenchGuest, private readonly diskPath: string) {}

  private get capacity(): { cpus: number; freeMemoryMiB: number } {
    return { cpus: os.cpus().length, freeMemoryMiB: Math.floor(os.freemem() / 2 ** 20) };
  }

  async nicAdd(): Promise<void> {
    this.nic = randomUUID();
    await this.guest.inst.hotAddNic({ uuid: this.nic, mac: '52:54:00:be:00:02' });
  }

  async nicRemove(): Promise<void> {
    await this.guest.inst.hotRemoveNic(this.nic);
  }

  async diskAdd(): Promise<void> {
    this.disk = randomUUID();
    await this.guest.inst.hotAddDisk({ uuid: this.disk, path: this.diskPath });
  }

  async diskRemove(): Promise<void> {
    await this.guest.inst.hotRemoveDisk(this.disk);
  }

  async cpuAdd(): Promise<void> {
    await this.guest.inst.resize({ vcpus: SHAPE.vcpus + 1 }, this.capacity);
    this.guest.cpuAdds++;
  }

  async cpuRemove(): Promise<void> {
    await this.guest.inst.resize({ vcpus: SHAPE.vcpus }, this.capacity);
  }

  async dimmAdd(): Promise<void> {
    const memoryMiB = SHAPE.memoryMiB + SHAPE.dimmMiB * (this.guest.dimmsUsed + 1);
    await this.guest.inst.resize({ memoryMiB }, this.capacity);
    this.guest.dimmsUsed++;
  }

  room(): { cpuAdds: number; dimms: number } {
    return this.guest.room();
  }

  async reset(): Promise<void> {
    await this.guest.restart();
  }
}
