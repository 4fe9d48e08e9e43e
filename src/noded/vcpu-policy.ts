/**
 * The node's vCPU overcommit policy: the rule is assertVcpusFit
 * (src/hypervisor/resize.ts); this supplies its numbers. The vCPUs an
 * instance holds are the larger of
 *   - its present vCPUs (boot plus hot-added, from the runtime file) while its
 *     QEMU runs, 0 while it is stopped, and
 *   - what a start or live grow of it in flight asked for (a claim),
 * and the limit counts the sum over all instances of the node, as Nova's
 * cpu_allocation_ratio does over a host. Claims are taken synchronously with
 * the count, so two instances starting or growing at the same time cannot
 * both fit into the same room.
 */
import * as os from 'node:os';
import { assertVcpusFit, currentVcpus, type NodeCapacity } from '../hypervisor/resize';
import type { KvmInstance } from '../hypervisor/kvm-instance';
import type { InstanceRegistry } from './instance-registry';

export interface VcpuPolicyOptions {
  registry: InstanceRegistry;
  /** vCPUs per node CPU (gnt-noded --cpu-overcommit-ratio). */
  ratio: number;
  /** The node's CPUs (default: os.availableParallelism(), as NodeInfo reports). */
  cpus?: () => number;
}

export class VcpuPolicy {
  /** In-flight starts and grows: instance name -> the vCPU counts asked. */
  private readonly claims = new Map<string, number[]>();

  constructor(private readonly opts: VcpuPolicyOptions) {}

  get ratio(): number {
    return this.opts.ratio;
  }

  /** What the rule needs for instance `name`: the node's CPUs, the ratio, the other instances' vCPUs. */
  capacity(name: string, freeMemoryMiB: number): NodeCapacity {
    const cpus = this.opts.cpus?.() ?? os.availableParallelism();
    return { freeMemoryMiB, cpus, cpuOvercommitRatio: this.opts.ratio, otherVcpus: this.otherVcpus(name) };
  }

  /**
   * A start of `name` with `vcpus`: checked against the rule now (RESOURCE_EXHAUSTED
   * with the numbers), then claimed until `start` settles, when the running
   * instance's own vCPUs take over.
   */
  async whileStarting<T>(name: string, vcpus: number, start: () => Promise<T>): Promise<T> {
    assertVcpusFit(name, vcpus, this.capacity(name, 0), 'start with');
    return this.holding(name, vcpus, start);
  }

  /**
   * A live resize of `name` to `vcpus` (0: memory only): `resize` gets the
   * capacity to validate against (the check runs in the instance's queue,
   * against its current vCPUs); the count is claimed until it settles.
   */
  whileResizing<T>(name: string, vcpus: number, freeMemoryMiB: number, resize: (node: NodeCapacity) => Promise<T>): Promise<T> {
    const node = this.capacity(name, freeMemoryMiB);
    return vcpus > 0 ? this.holding(name, vcpus, () => resize(node)) : resize(node);
  }

  /** vCPUs held by every instance but `name`. */
  otherVcpus(name: string): number {
    const names = new Set([...this.opts.registry.all().map((i) => i.name), ...this.claims.keys()]);
    names.delete(name);
    let sum = 0;
    for (const n of names) sum += this.held(n);
    return sum;
  }

  private held(name: string): number {
    const inst = this.opts.registry.find(name);
    return Math.max(inst ? runningVcpus(inst) : 0, ...(this.claims.get(name) ?? []));
  }

  private async holding<T>(name: string, vcpus: number, fn: () => Promise<T>): Promise<T> {
    const list = this.claims.get(name) ?? [];
    list.push(vcpus);
    this.claims.set(name, list);
    try {
      return await fn();
    } finally {
      list.splice(list.indexOf(vcpus), 1);
      if (!list.length && this.claims.get(name) === list) this.claims.delete(name);
    }
  }
}

/** Present vCPUs of a running instance, 0 for a stopped one. */
function runningVcpus(inst: KvmInstance): number {
  if (inst.pid === undefined) return 0;
  const r = inst.resources;
  return r ? currentVcpus(r) : 0;
}

/** Parses --cpu-overcommit-ratio: a number above 0, decimals allowed. */
export function parseCpuOvercommitRatio(text: string): number {
  const ratio = /^\d+(\.\d+)?$|^\.\d+$/.test(text) ? Number(text) : NaN;
  if (!(ratio > 0) || !Number.isFinite(ratio))
    throw new Error(`--cpu-overcommit-ratio must be a number above 0 (vCPUs per node CPU, such as 16 or 1.5), not "${text}"`);
  return ratio;
}
