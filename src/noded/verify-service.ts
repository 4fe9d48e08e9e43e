/**
 * The InstanceVerify handler (gnt-cluster verify, gnt-instance verify).
 *
 * Each instance is verified inside its own queue (KvmInstance.exclusive), so
 * no hotplug of it runs meanwhile: its runtime file, its QEMU's lists
 * (src/hypervisor/inventory.ts) and its taps and disk files are compared at
 * one moment. With fix, the repairs run in the same queue entry, in this
 * order:
 *   1. devices: a device QEMU has that the runtime file lacks is removed
 *      (device_del, wait, backends released); an "attaching" record whose
 *      device QEMU has is completed; a record QEMU lacks is dropped; the tap
 *      QEMU really uses is recorded; a tap is put back on its bridge;
 *   2. backends: QEMU is read again and every netdev, block node, fdset and
 *      memory backend no device uses is released;
 *   3. disk files in the instance's storage directory that no record
 *      references are deleted.
 * The node-wide part (node_wide) then deletes taps nobody owns and disk
 * files of instances the node does not know, each under the name lock.
 */
import type * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errorMessage } from '../hypervisor/errors';
import { parseDeviceId } from '../hypervisor/device-id';
import { deviceKind } from '../hypervisor/device-kinds';
import { assertInstanceName } from '../hypervisor/instance-paths';
import {
  compareBackends,
  compareInstance,
  compareStopped,
  describeRepair,
  fdCount,
  findOrphanFiles,
  findStrayTaps,
  readHostTaps,
  readQemuInventory,
  storageCandidates,
  tapHolders,
  type DeviceKind,
  type Finding,
  type Repair,
} from '../hypervisor/inventory';
import { applyHostRepair, applyQemuRepair, isQemuRepair } from '../hypervisor/inventory-repair';
import type { KvmInstance } from '../hypervisor/kvm-instance';
import type { Monitor } from '../hypervisor/qmp-client';
import { bridgeExists } from '../hypervisor/tap';
import type { InstanceVerifyReply } from '../generated/gnt/node/v1/InstanceVerifyReply';
import type { InstanceVerifyRequest__Output } from '../generated/gnt/node/v1/InstanceVerifyRequest';
import type { InstanceVerifyResult } from '../generated/gnt/node/v1/InstanceVerifyResult';
import type { VerifyFinding } from '../generated/gnt/node/v1/VerifyFinding';
import type { VerifyGone } from '../generated/gnt/node/v1/VerifyGone';
import { describeReconcile, type InstanceRegistry, type Logger } from './instance-registry';
import { runtimeToProto } from './spec';
import type { Storage } from './storage';

export interface VerifyServiceOptions {
  registry: InstanceRegistry;
  storage: Storage;
  log: Logger;
}

/** A finding with what --fix did about it. */
interface Checked extends Finding {
  repaired?: boolean;
  repairError?: string;
}

/** Rounds of backend release: netdevs and block nodes, then the fdsets they held. */
const BACKEND_ROUNDS = 3;

function toProto(instance: string, f: Checked): VerifyFinding {
  return {
    instance,
    device: f.device,
    problem: f.problem,
    code: f.code,
    note: !!f.note,
    repair: f.repair && f.repaired !== undefined ? describeRepair(f.repair) : '',
    repaired: !!f.repaired,
    repairError: f.repairError ?? '',
    deviceUuid: f.uuid ?? '',
  };
}

/** Runs one repair and notes its outcome on the finding. */
async function attempt(f: Checked, fn: () => Promise<unknown> | unknown): Promise<boolean> {
  try {
    await fn();
    f.repaired = true;
    return true;
  } catch (err) {
    f.repaired = false;
    f.repairError = errorMessage(err);
    return false;
  }
}

export class VerifyService {
  constructor(private readonly opts: VerifyServiceOptions) {}

  /** The unplug timeout of one device kind for this instance, as its own operations use it. */
  private unplugTimeoutMs(inst: KvmInstance, kind: DeviceKind): number {
    return inst.unplugTimeout(kind === 'dimm' ? 'memory' : kind === 'other' ? 'nic' : kind);
  }

  async verify(req: InstanceVerifyRequest__Output): Promise<InstanceVerifyReply> {
    const registry = this.opts.registry;
    const instances = req.instances.length ? req.instances.map((n) => registry.get(n)) : registry.all();
    const results: InstanceVerifyResult[] = [];
    const owned = new Set<string>();
    const keep = keepConfigured(new Set(req.configuredDisks));
    for (const inst of instances) {
      // --fix first settles open intents by the same rules as after a
      // restart (reconcile), then repairs what is left.
      if (req.fix && inst.pid !== undefined) {
        await inst.reconcile().then(
          (r) => this.opts.log(`verify --fix: reconciled ${inst.name}: ${describeReconcile(r)}`),
          (err: unknown) => this.opts.log(`verify --fix: reconcile of ${inst.name} failed: ${err instanceof Error ? err.message : String(err)}`),
        );
      }
      results.push(await inst.exclusive(() => this.verifyOne(inst, req.fix, owned, keep)));
    }
    const nodeFindings = req.nodeWide ? await this.verifyNode(req, owned, keep) : [];
    if (req.fix) this.logRepairs(results, nodeFindings);
    return { instances: results, nodeFindings, nodedFds: fdCount(process.pid) };
  }

  private logRepairs(results: InstanceVerifyResult[], node: VerifyFinding[]): void {
    for (const f of [...results.flatMap((r) => r.findings ?? []), ...node]) {
      if (!f.repair) continue;
      const where = f.instance ? `instance ${f.instance}: ` : '';
      this.opts.log(`verify --fix: ${where}${f.device}: ${f.problem}: ${f.repaired ? 'repaired' : 'repair FAILED'}: ${f.repair}${f.repairError ? ` (${f.repairError})` : ''}`);
    }
  }

  // ---- one instance, inside its queue --------------------------------------

  private async verifyOne(inst: KvmInstance, fix: boolean, owned: Set<string>, keep: Keep): Promise<InstanceVerifyResult> {
    const rt = inst.runtime;
    const pid = inst.pid;
    const base = { name: inst.name, running: pid !== undefined, pid: pid ?? 0 };
    const gone: VerifyGone[] = [];
    let findings: Checked[];
    if (rt.migration) {
      findings = [{ device: 'instance', problem: `migration ${rt.migration.role === 'source' ? 'to' : 'from'} node ${rt.migration.peer} recorded (since ${rt.migration.since}); not verified`, code: 'not-verified', note: true }];
    } else if (pid === undefined) {
      findings = compareStopped(rt);
    } else {
      try {
        findings = await this.verifyRunning(inst, pid, fix, gone, owned);
      } catch (err) {
        findings = [{ device: 'instance', problem: `could not be verified: ${errorMessage(err)}`, code: 'not-verified' }];
      }
    }
    if (!rt.migration) findings.push(...(await this.instanceFiles(inst, fix, keep)));
    const now = inst.pid;
    return {
      ...base,
      qemuFds: now === undefined ? -1 : fdCount(now),
      runtime: runtimeToProto(inst.runtime, now, this.opts.registry.guest(inst.name)),
      findings: findings.map((f) => toProto(inst.name, f)),
      gone,
      migrating: !!rt.migration,
      pendingVcpus: inst.runtime.resources?.pendingVcpus ?? -1,
    };
  }

  private async verifyRunning(inst: KvmInstance, pid: number, fix: boolean, gone: VerifyGone[], owned: Set<string>): Promise<Checked[]> {
    const mon = await inst.monitor();
    const q = await readQemuInventory(mon, pid);
    for (const tap of q.tunFds.values()) owned.add(tap);
    for (const nic of inst.runtime.nics) if (nic.tap) owned.add(nic.tap);
    const findings: Checked[] = compareInstance(inst.runtime, q, readHostTaps(), bridgeExists);
    if (!fix) return findings;
    for (const f of findings) if (f.repair && !isBackend(f.repair)) await this.repairDevice(inst, mon, f, gone);
    // Backends again, after the device repairs (a removed device's backends go with it, a dropped
    // record's stay), in rounds: an fdset is unused only once its block node has gone.
    for (let round = 0; round < BACKEND_ROUNDS; round++) {
      const left = compareBackends(inst.runtime, await readQemuInventory(mon, pid)).filter((b) => b.repair && !findings.some((f) => f.device === b.device && f.repaired === false));
      if (!left.length) break;
      for (const b of left) await this.releaseBackend(mon, findings, b);
    }
    for (const f of findings) if (f.repair && isBackend(f.repair) && f.repaired === undefined) f.repaired = true; // already gone
    return findings;
  }

  /** Releases one unused backend, noting the outcome on the finding that reported it (or a new one). */
  private async releaseBackend(mon: Monitor, findings: Checked[], b: Finding): Promise<void> {
    const same = findings.find((f) => f.device === b.device && f.code === b.code);
    const f: Checked = same ?? { ...b, problem: `${b.problem} (left by a repair above)` };
    if (!same) findings.push(f);
    const r = b.repair;
    if (r && isQemuRepair(r) && r.kind !== 'remove-device') await attempt(f, () => applyQemuRepair(mon, r, 0));
  }

  private async repairDevice(inst: KvmInstance, mon: Monitor, f: Checked, gone: VerifyGone[]): Promise<void> {
    const r = f.repair as Repair;
    switch (r.kind) {
      case 'remove-device':
        if (await attempt(f, () => applyQemuRepair(mon, r, this.unplugTimeoutMs(inst, r.device)))) {
          const parsed = parseDeviceId(r.id);
          if (parsed && (parsed.kind === 'nic' || parsed.kind === 'disk')) gone.push({ kind: parsed.kind, uuid: parsed.uuidPart, prefixOnly: true });
        }
        return;
      case 'complete-attach':
        await attempt(f, () => inst.verifyCompleteAttach(r.record, r.uuid));
        return;
      case 'drop-record':
        if (await attempt(f, () => inst.verifyDropRecord(r.record, r.key)) && r.record !== 'cpu' && r.record !== 'dimm')
          gone.push({ kind: deviceKind(r.record).operationKind as 'nic' | 'disk', uuid: r.key, prefixOnly: false });
        return;
      case 'record-tap':
        await attempt(f, () => inst.verifyRecordTap(r.uuid, r.tap));
        return;
      case 'connect-tap':
      case 'set-rate':
        await attempt(f, () => applyHostRepair(r));
        return;
      default:
        return;
    }
  }

  // ---- disk files -------------------------------------------------------------

  /** The node's own disk file names of `instance`: exactly <storage>/<instance>/<uuid>.img. */
  private ownFiles(instance: string): string[] {
    const storage = this.opts.storage;
    const dir = storage.instanceDir(instance);
    return storageCandidates(dir, (name) => {
      if (!name.endsWith('.img')) return false;
      try {
        return storage.defaultDiskPath(instance, name.slice(0, -4)) === path.join(dir, name) && storage.owns(instance, path.join(dir, name));
      } catch {
        return false;
      }
    });
  }

  /** Disk files in the instance's storage directory that its runtime file does not reference. Runs in its queue. */
  private async instanceFiles(inst: KvmInstance, fix: boolean, keep: Keep): Promise<Checked[]> {
    const rt = inst.runtime;
    const referenced = new Set([...rt.block_devices, ...(rt.scsi_disks ?? []), ...(rt.pmem_devices ?? [])].map((d) => path.resolve(d.path)));
    const findings: Checked[] = findOrphanFiles(this.ownFiles(inst.name), referenced, keep);
    if (fix) for (const f of findings) await deleteFile(f);
    return findings;
  }

  // ---- node-wide ----------------------------------------------------------------

  private async verifyNode(req: InstanceVerifyRequest__Output, owned: Set<string>, keep: Keep): Promise<VerifyFinding[]> {
    const registry = this.opts.registry;
    // Taps of running instances this request did not look at are owned too.
    for (const inst of registry.all()) if (inst.pid !== undefined) for (const n of inst.runtime.nics) if (n.tap) owned.add(n.tap);
    const taps: Checked[] = findStrayTaps(readHostTaps(), owned, tapHolders());
    if (req.fix) for (const f of taps) await attempt(f, () => applyHostRepair(f.repair as Extract<Repair, { kind: 'delete-tap' }>));
    const files = await this.unknownDirs(new Set(req.foreignInstances), req.fix, keep);
    return [...taps.map((f) => toProto('', f)), ...files];
  }

  /** Directories of the storage directory that belong to no instance of this node (nor, by the master's word, of another node). */
  private async unknownDirs(foreign: ReadonlySet<string>, fix: boolean, keep: Keep): Promise<VerifyFinding[]> {
    const registry = this.opts.registry;
    const out: VerifyFinding[] = [];
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(this.opts.storage.dir, { withFileTypes: true });
    } catch {
      return out;
    }
    for (const e of entries) {
      if (!e.isDirectory() || foreign.has(e.name) || !validName(e.name) || registry.find(e.name)) continue;
      out.push(...(await registry.withName(e.name, () => this.unknownDir(e.name, fix, keep))));
    }
    return out;
  }

  /** Under the name lock: no start can be creating this instance's files meanwhile. */
  private async unknownDir(name: string, fix: boolean, keep: Keep): Promise<VerifyFinding[]> {
    const registry = this.opts.registry;
    if (registry.find(name)) return [];
    if (fs.existsSync(path.join(registry.dataDir, name, 'runtime.json')))
      return [toProto('', { device: `directory ${this.opts.storage.instanceDir(name)}`, problem: `instance ${name} has a runtime file this node could not load (see its log); its disk files are not judged`, code: 'not-verified' })];
    const findings: Checked[] = findOrphanFiles(this.ownFiles(name), new Set(), keep);
    if (fix) {
      for (const f of findings) await deleteFile(f);
      if (findings.every((f) => f.repaired)) removeEmptyDir(this.opts.storage.instanceDir(name));
    }
    return findings.map((f) => toProto('', f));
  }
}

const isBackend = (r: Repair): boolean => isQemuRepair(r) && r.kind !== 'remove-device';

function validName(name: string): boolean {
  try {
    assertInstanceName(name);
    return true;
  } catch {
    return false;
  }
}

/** Why a disk file must stay although no runtime file references it, if it must. */
type Keep = (file: string) => string | undefined;

function keepConfigured(disks: ReadonlySet<string>): Keep {
  return (file) => {
    const uuid = path.basename(file).replace(/\.img$/, '');
    return disks.has(uuid) ? `the cluster configuration still lists disk ${uuid}` : undefined;
  };
}

/** An orphan file's repair (none for one that must stay). */
async function deleteFile(f: Checked): Promise<void> {
  const r = f.repair;
  if (r?.kind === 'delete-file') await attempt(f, () => applyHostRepair(r));
}

/** Removes a directory if it is empty (an orphan's directory after its files went). */
function removeEmptyDir(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not empty, or gone */
  }
}

/** NodeService's wrapper of a handler (one log line per call, errors as status codes). */
export type UnaryWrapper = <Req, Res>(method: string, instanceOf: (req: Req) => string, fn: (req: Req) => Promise<Res>) => grpc.handleUnaryCall<Req, Res>;

/** The InstanceVerify entry of NodeService's handler table. */
export function verifyHandler(opts: VerifyServiceOptions, unary: UnaryWrapper): grpc.handleUnaryCall<InstanceVerifyRequest__Output, InstanceVerifyReply> {
  const service = new VerifyService(opts);
  return unary('InstanceVerify', (r: InstanceVerifyRequest__Output) => r.instances.join(',') || (r.nodeWide ? '(node)' : ''), (r) => service.verify(r));
}
