/**
 * Live vCPU and memory resize, as Cloud Hypervisor's `resize`: one request
 * names the wanted vCPU count and/or memory size; growth is hotplugged now,
 * within `maxvcpus`/`maxmem`; vCPUs shrink live down to the boot count by
 * unplugging the most recently added; ACPI memory shrink is recorded for the
 * next start; virtio-mem grows and shrinks live and reports what the guest
 * really plugged. The resource state lives in the runtime file.
 */
import { assertCpuReplugSafe, attachCpu, cpuBootArgs, cpuSlots, detachCpu, freeCpuSlots, withRecorded, type CpuRecord } from './cpu';
import { HypervisorError, InstanceStateError, InvalidArgumentError, isOutcomeUnknown } from './errors';
import { inTransaction } from './hotplug-transaction';
import {
  assertAcpiStep,
  assertVirtioMemSize,
  attachDimm,
  detachDimm,
  virtioMemBootArgs,
  nextDimmId,
  resizeVirtioMem,
  type DimmRecord,
  type VirtioMemRecord,
} from './memory';
import type { Monitor } from './qmp-client';

export type MemoryHotplug = 'none' | 'acpi' | 'virtio-mem';

/** vCPUs and memory of an instance: what it booted with, what was hot-added, its limits. */
export interface ResourceState {
  bootVcpus: number;
  maxVcpus: number;
  bootMemoryMiB: number;
  maxMemoryMiB: number;
  memoryHotplug: MemoryHotplug;
  cpus: CpuRecord[];
  dimms: DimmRecord[];
  virtioMem?: VirtioMemRecord;
  /** A memory size asked for that only a restart can give (ACPI shrink). */
  pendingMemoryMiB?: number;
  /** A vCPU count below the boot count, for the next start. */
  pendingVcpus?: number;
  /** The QEMU pid in which a vCPU was unplugged (QEMU < 8 cannot re-plug then). */
  cpuUnpluggedPid?: number;
  /**
   * vCPU threads the QEMU process `pid` has created so far (boot, command
   * line and hot-added; a removed vCPU's is never given back). Under TCG a
   * process can create at most maxvcpus of them: the next one aborts QEMU
   * (tcg_register_thread: n < tcg_max_ctxs), killing the guest.
   */
  cpuThreads?: { pid: number; created: number };
}

/** vCPU threads QEMU process `pid` has created: as recorded for it, else (no record of that process) its present vCPUs. */
function cpuThreadsCreated(s: ResourceState, pid: number): number {
  return s.cpuThreads?.pid === pid ? s.cpuThreads.created : s.bootVcpus + s.cpus.length;
}

/** How many more vCPUs QEMU process `pid` can hot-add under TCG before it would abort. */
export function tcgCpuThreadsLeft(s: ResourceState, pid: number): number {
  return Math.max(0, s.maxVcpus - cpuThreadsCreated(s, pid));
}

export const VIRTIO_MEM_ID = 'vmem0';

/**
 * The resources of a new (or re-specified) instance: hvparams
 * memory_hotplug=acpi|virtio-mem|none; by default ACPI when maxmem leaves room.
 * virtio-mem needs a PCI slot, `slotFor` gives it one.
 */
export function initialResources(
  spec: { vcpus: number; maxVcpus?: number; memoryMiB: number; maxMemoryMiB?: number },
  method: string | undefined,
  slotFor: () => number,
): ResourceState {
  const maxMemoryMiB = spec.maxMemoryMiB || spec.memoryMiB;
  const room = maxMemoryMiB > spec.memoryMiB;
  const memoryHotplug = (method ?? (room ? 'acpi' : 'none')) as MemoryHotplug;
  if (!['none', 'acpi', 'virtio-mem'].includes(memoryHotplug))
    throw new InvalidArgumentError(`memory_hotplug must be acpi, virtio-mem or none, not "${method}"`);
  const s: ResourceState = {
    bootVcpus: spec.vcpus,
    maxVcpus: spec.maxVcpus ?? spec.vcpus,
    bootMemoryMiB: spec.memoryMiB,
    maxMemoryMiB,
    memoryHotplug: room ? memoryHotplug : 'none',
    cpus: [],
    dimms: [],
  };
  if (s.memoryHotplug === 'virtio-mem')
    s.virtioMem = { id: VIRTIO_MEM_ID, maxMiB: maxMemoryMiB - spec.memoryMiB, requestedMiB: 0, pci: slotFor() };
  return s;
}

/**
 * QEMU arguments that recreate the hot-added vCPUs and the virtio-mem device
 * at boot. DIMMs are not among them: QEMU 10 under TCG aborts
 * (tlb_reset_dirty_range_all assertion) when it migrates away a pc-dimm
 * given on its command line, while one added by QMP migrates fine; so a
 * start with DIMMs runs QEMU with -S and plugs them before the guest runs
 * (KvmInstance.startNow).
 */
export function resourceBootArgs(s: ResourceState): string[] {
  return [...s.cpus.flatMap(cpuBootArgs), ...(s.virtioMem ? virtioMemBootArgs(s.virtioMem) : [])];
}

/**
 * At a start, a shrink that could not happen live takes effect: the boot
 * values become the wanted ones and the hot-added devices they replace go.
 * Returns whether anything changed.
 */
export function foldPending(s: ResourceState): boolean {
  let changed = false;
  if (s.pendingMemoryMiB !== undefined) {
    s.bootMemoryMiB = s.pendingMemoryMiB - (s.virtioMem?.requestedMiB ?? 0);
    s.dimms = [];
    delete s.pendingMemoryMiB;
    changed = true;
  }
  if (s.pendingVcpus !== undefined) {
    s.bootVcpus = s.pendingVcpus;
    s.cpus = [];
    delete s.pendingVcpus;
    changed = true;
  }
  return changed;
}

export interface ResizeRequest {
  vcpus?: number;
  memoryMiB?: number;
}

/** Nova's default cpu_allocation_ratio: vCPUs per node CPU. */
export const DEFAULT_CPU_OVERCOMMIT_RATIO = 16;

/**
 * What the node can still give: a grow beyond it is refused. vCPUs follow the
 * overcommit rule (assertVcpusFit): the running instances of a node may have
 * `floor(cpus * cpuOvercommitRatio)` vCPUs together.
 */
export interface NodeCapacity {
  freeMemoryMiB: number;
  /** The node's CPUs. */
  cpus: number;
  /** vCPUs per node CPU (default DEFAULT_CPU_OVERCOMMIT_RATIO). */
  cpuOvercommitRatio?: number;
  /** vCPUs of the node's other running, starting or growing instances (default 0). */
  otherVcpus?: number;
}

export interface ResizeResult {
  vcpus: number;
  memoryMiB: number;
  /** virtio-mem: what the guest actually plugged on top of boot memory. */
  pluggedMiB?: number;
  notes: string[];
}

export class ResourceExhaustedError extends HypervisorError {
  constructor(message: string) {
    super('RESOURCE_EXHAUSTED', message);
  }
}

export const currentVcpus = (s: ResourceState): number => s.bootVcpus + s.cpus.length;

export function currentMemoryMiB(s: ResourceState): number {
  const dimms = s.dimms.reduce((n, d) => n + d.sizeMiB, 0);
  return s.bootMemoryMiB + dimms + (s.virtioMem?.requestedMiB ?? 0);
}

function checkVcpus(instance: string, s: ResourceState, vcpus: number, node: NodeCapacity): void {
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new InvalidArgumentError(`vcpus must be at least 1, not ${vcpus}`);
  if (vcpus > s.maxVcpus)
    throw new InvalidArgumentError(`instance ${instance} can have at most ${s.maxVcpus} vCPUs (maxvcpus); ${vcpus} asked`);
  if (vcpus > currentVcpus(s)) assertVcpusFit(instance, vcpus, node, 'grow to');
}

/** How many vCPUs the running instances of a node may have together. */
export function vcpuLimit(cpus: number, ratio: number): number {
  return Math.floor(cpus * ratio + 1e-9); // 100 * 0.29 is 28.999999999999996 in floating point
}

/**
 * The vCPU overcommit rule, the same at boot and for a live grow: the
 * instance's vCPUs plus those of the node's other instances must stay within
 * vcpuLimit(cpus, ratio). Only a grow or a start is checked, so an instance
 * above the limit (the ratio was lowered) can always shrink.
 */
export function assertVcpusFit(instance: string, vcpus: number, node: NodeCapacity, action: 'start with' | 'grow to'): void {
  const ratio = node.cpuOvercommitRatio ?? DEFAULT_CPU_OVERCOMMIT_RATIO;
  const limit = vcpuLimit(node.cpus, ratio);
  const others = node.otherVcpus ?? 0;
  if (others + vcpus <= limit) return;
  throw new ResourceExhaustedError(
    `instance ${instance} cannot ${action} ${vcpus} vCPUs: the node has ${node.cpus} CPUs and a vCPU overcommit ratio of ${ratio}, ` +
      `so its instances may have ${limit} vCPUs together; the others have ${others}, so ${others + vcpus} asked in all. ` +
      `Ask for at most ${Math.max(0, limit - others)}, stop or move another instance, or start gnt-noded with a higher --cpu-overcommit-ratio`,
  );
}

function checkMemory(instance: string, s: ResourceState, memoryMiB: number, node: NodeCapacity, pmemMiB: number): void {
  if (!Number.isInteger(memoryMiB) || memoryMiB <= 0) throw new InvalidArgumentError(`memory must be a positive number of MiB, not ${memoryMiB}`);
  const current = currentMemoryMiB(s);
  if (memoryMiB === current) return;
  if (s.memoryHotplug === 'none' || s.maxMemoryMiB <= s.bootMemoryMiB)
    throw new InvalidArgumentError(
      `instance ${instance} was started without room for memory hotplug (maxmem ${s.maxMemoryMiB} MiB, memory_hotplug ${s.memoryHotplug}); change memory without --hotplug and restart it`,
    );
  if (memoryMiB > s.maxMemoryMiB)
    throw new InvalidArgumentError(`instance ${instance} can have at most ${s.maxMemoryMiB} MiB (maxmem); ${memoryMiB} MiB asked`);
  // pmem devices take device memory room too (pmem.ts): memory and pmem together stay within maxmem.
  if (pmemMiB && memoryMiB > current && memoryMiB + pmemMiB > s.maxMemoryMiB)
    throw new ResourceExhaustedError(
      `instance ${instance} has maxmem ${s.maxMemoryMiB} MiB, and its pmem devices hold ${pmemMiB} MiB of it: memory can grow to at most ${s.maxMemoryMiB - pmemMiB} MiB, ${memoryMiB} MiB asked (remove a pmem device or raise maxmem and restart it)`,
    );
  const grow = memoryMiB - current;
  if (grow > 0 && grow > node.freeMemoryMiB)
    throw new ResourceExhaustedError(
      `the node has ${node.freeMemoryMiB} MiB of memory free; instance ${instance} cannot grow by ${grow} MiB to ${memoryMiB} MiB`,
    );
  if (s.memoryHotplug === 'acpi' && grow > 0) assertAcpiStep(grow);
  if (s.memoryHotplug === 'virtio-mem' && s.virtioMem) assertVirtioMemSize(s.virtioMem, memoryMiB - s.bootMemoryMiB);
}

/**
 * Checks the whole request before anything changes. `cpuThreadsLeft`: under
 * TCG, how many vCPUs this QEMU process can still create (tcgCpuThreadsLeft).
 */
export function validateResize(instance: string, s: ResourceState, req: ResizeRequest, node: NodeCapacity, cpuThreadsLeft = Infinity, pmemMiB = 0): void {
  if (req.vcpus === undefined && req.memoryMiB === undefined) throw new InvalidArgumentError('nothing to resize: give vcpus and/or memory');
  if (req.vcpus !== undefined) checkVcpus(instance, s, req.vcpus, node);
  const adds = (req.vcpus ?? 0) - currentVcpus(s);
  if (adds > cpuThreadsLeft)
    throw new InstanceStateError(
      `instance ${instance}: QEMU under TCG creates at most ${s.maxVcpus} vCPU threads (maxvcpus) in one process and never frees a removed vCPU's; ` +
        `this one can add ${cpuThreadsLeft} more, ${adds} asked (one more would abort QEMU and kill the guest). Stop and start the instance to reset it`,
    );
  if (req.memoryMiB !== undefined) checkMemory(instance, s, req.memoryMiB, node, pmemMiB);
}

export interface ResizeContext {
  instance: string;
  mon: Monitor;
  qemuVersion?: { major: number };
  /** Whether a vCPU was unplugged in this QEMU process (QEMU < 8 cannot re-plug then). */
  cpuUnplugged: boolean;
  /** The QEMU pid, recorded with an unplug. */
  pid?: number;
  unplugTimeoutMs: number;
  /** Persists the state after each device that changed (the runtime file). */
  save(s: ResourceState): void;
}

/**
 * Runs one vCPU/DIMM step whose intent (`rec.state`) is already saved.
 * Success: `done` runs, the intent is cleared and saved. A definitive
 * failure: `undo` drops the record (an attach) or the intent is cleared (a
 * detach), saved, and the error goes on. An unknown outcome (timeout,
 * monitor gone): the intent stays for reconciliation (resource-intents.ts).
 */
async function withIntent(
  ctx: ResizeContext,
  s: ResourceState,
  rec: CpuRecord | DimmRecord,
  step: () => Promise<void>,
  undo?: () => unknown,
  done?: () => unknown,
): Promise<void> {
  try {
    await step();
  } catch (err) {
    if (isOutcomeUnknown(err)) throw err;
    if (undo) undo();
    else delete rec.state;
    ctx.save(s);
    throw err;
  }
  delete rec.state;
  done?.();
  ctx.save(s);
}

async function resizeCpus(ctx: ResizeContext, s: ResourceState, vcpus: number, notes: string[]): Promise<void> {
  const now = currentVcpus(s);
  if (vcpus > now) {
    assertCpuReplugSafe(ctx.instance, ctx.qemuVersion, ctx.cpuUnplugged);
    delete s.pendingVcpus;
    // The slots kept for this connection (cpu.ts), with our records on top: no query per add.
    const plan = freeCpuSlots(ctx.instance, withRecorded(await cpuSlots(ctx.mon), s.cpus), vcpus - now);
    for (const cpu of plan) {
      // Intent first (and the thread counted: over-counting is the safe side).
      if (ctx.pid !== undefined) s.cpuThreads = { pid: ctx.pid, created: cpuThreadsCreated(s, ctx.pid) + 1 };
      const rec: CpuRecord = { ...cpu, state: 'attaching' };
      s.cpus.push(rec);
      ctx.save(s);
      await withIntent(ctx, s, rec, () => attachCpu(ctx.mon, cpu), () => s.cpus.pop());
    }
  } else if (vcpus < now) {
    const live = Math.max(vcpus, s.bootVcpus);
    while (currentVcpus(s) > live) {
      const cpu = s.cpus[s.cpus.length - 1];
      ctx.cpuUnplugged = true;
      s.cpuUnpluggedPid = ctx.pid;
      cpu.state = 'detaching';
      ctx.save(s);
      await withIntent(ctx, s, cpu, () => detachCpu(ctx.mon, cpu, ctx.unplugTimeoutMs), undefined, () => s.cpus.pop());
    }
    if (vcpus < s.bootVcpus) {
      s.pendingVcpus = vcpus;
      ctx.save(s);
      notes.push(`the instance booted with ${s.bootVcpus} vCPUs; going down to ${vcpus} takes effect at the next start`);
    }
  }
}

async function resizeMemory(ctx: ResizeContext, s: ResourceState, memoryMiB: number, notes: string[]): Promise<number | undefined> {
  const now = currentMemoryMiB(s);
  if (s.memoryHotplug === 'virtio-mem' && s.virtioMem) {
    const vm = s.virtioMem;
    vm.requestedMiB = memoryMiB - s.bootMemoryMiB;
    ctx.save(s);
    const plugged = await resizeVirtioMem(ctx.mon, vm, vm.requestedMiB, ctx.unplugTimeoutMs);
    if (plugged !== vm.requestedMiB)
      notes.push(`the guest plugged ${plugged} MiB of the ${vm.requestedMiB} MiB asked of virtio-mem (it could not give more back yet)`);
    return plugged;
  }
  if (memoryMiB > now) {
    const dimm: DimmRecord = { id: nextDimmId(s.dimms.map((d) => d.id)), sizeMiB: memoryMiB - now, state: 'attaching' };
    s.dimms.push(dimm);
    ctx.save(s);
    await withIntent(ctx, s, dimm, () => attachDimm(ctx.mon, dimm), () => s.dimms.pop(), () => delete s.pendingMemoryMiB);
  } else if (memoryMiB < now) {
    s.pendingMemoryMiB = memoryMiB;
    ctx.save(s);
    notes.push(`ACPI memory cannot shrink live: ${memoryMiB} MiB is recorded and takes effect at the next start (now ${now} MiB)`);
  }
  return undefined;
}

/**
 * Applies a validated request: memory first (a guest with more memory takes
 * more CPUs better), then vCPUs. If the vCPU step fails after memory grew,
 * the memory growth is undone.
 */
export async function applyResize(ctx: ResizeContext, s: ResourceState, req: ResizeRequest): Promise<ResizeResult> {
  const notes: string[] = [];
  let plugged: number | undefined;
  await inTransaction(`resize of instance ${ctx.instance}`, async (tx) => {
    if (req.memoryMiB !== undefined && req.memoryMiB !== currentMemoryMiB(s)) {
      const dimmsBefore = s.dimms.length;
      plugged = await tx.step('memory', () => resizeMemory(ctx, s, req.memoryMiB as number, notes), async () => {
        for (const dimm of s.dimms.splice(dimmsBefore)) await detachDimm(ctx.mon, dimm, ctx.unplugTimeoutMs);
        ctx.save(s);
      });
    }
    if (req.vcpus !== undefined && req.vcpus !== currentVcpus(s)) await tx.step('vcpus', () => resizeCpus(ctx, s, req.vcpus as number, notes));
  });
  return { vcpus: currentVcpus(s), memoryMiB: currentMemoryMiB(s), pluggedMiB: plugged, notes };
}

