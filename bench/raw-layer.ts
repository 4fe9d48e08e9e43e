/** The raw QMP floor as a layer: the bare sequences on a guest whose monitor this client takes over for a round. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BenchGuest } from './guest';
import type { LayerOps } from './ops';
import { RawQmp, rawCpuAdd, rawCpuRemove, rawDimmAdd, rawDiskAdd, rawDiskRemove, rawNicAdd, rawNicRemove } from './raw-qmp';
import { RAW } from './stats';
import { SHAPE } from './config';

/** The slot the raw sequences use (a minimal client does not look for a free one). */
export const RAW_SLOT = 10;

export class RawLayer implements LayerOps {
  readonly layer = RAW;
  private q: RawQmp | undefined;
  private n = 0;
  nicId = '';
  readonly mac = '52:54:00:be:00:01';
  diskId = '';
  cpuId = '';

  constructor(private readonly guest: BenchGuest, readonly diskPath: string, readonly slot = RAW_SLOT) {
    guest.beforeRestart.push(() => this.detach());
  }

  static diskFile(dir: string): string {
    const file = path.join(dir, 'bench.img');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 16 << 20);
    return file;
  }

  /** The monitor connection, taken from the hypervisor layer (QEMU's monitor serves one client). */
  async qmp(): Promise<RawQmp> {
    if (!this.q) {
      this.guest.inst.disconnect();
      this.q = await RawQmp.connect(this.guest.inst.paths.qmpSocket);
    }
    return this.q;
  }

  detach(): void {
    this.q?.close();
    this.q = undefined;
  }

  async begin(): Promise<void> {
    await this.qmp();
  }

  async end(): Promise<void> {
    this.detach();
  }

  async nicAdd(): Promise<void> {
    this.nicId = `nic-raw${++this.n}-pci-${this.slot}`;
    await rawNicAdd(await this.qmp(), this.nicId, this.slot, this.mac);
  }

  async nicRemove(): Promise<void> {
    await rawNicRemove(await this.qmp(), this.nicId);
  }

  async diskAdd(): Promise<void> {
    this.diskId = `disk-raw${++this.n}-pci-${this.slot}`;
    await rawDiskAdd(await this.qmp(), this.diskId, this.slot, this.diskPath);
  }

  async diskRemove(): Promise<void> {
    await rawDiskRemove(await this.qmp(), this.diskId);
  }

  async cpuAdd(): Promise<void> {
    this.cpuId = `rawcpu${++this.n}`;
    await rawCpuAdd(await this.qmp(), this.cpuId);
    this.guest.cpuAdds++;
  }

  async cpuRemove(): Promise<void> {
    await rawCpuRemove(await this.qmp(), this.cpuId);
  }

  async dimmAdd(): Promise<void> {
    await rawDimmAdd(await this.qmp(), `rawdimm${++this.n}`, SHAPE.dimmMiB);
    this.guest.dimmsUsed++;
  }

  room(): { cpuAdds: number; dimms: number } {
    return this.guest.room();
  }

  async reset(): Promise<void> {
    await this.guest.restart();
  }
}
