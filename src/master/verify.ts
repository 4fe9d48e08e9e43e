/**
 * gnt-cluster verify [--fix] and gnt-instance verify [--fix] INSTANCE.
 *
 * A verification is a job ("cluster-verify"), so a --fix holds the locks of
 * the instances it covers and never races a modify job; every line of the
 * report is also a line of the job's log, and every change of the
 * configuration is written to the instance's history. Per node it calls
 * InstanceVerify (the node compares runtime files, QEMU and the host, and
 * with fix repairs them, see src/noded/verify-service.ts), then compares the
 * configuration with what the node reports after its repairs
 * (verify-compare.ts) and with fix brings the configuration of running
 * instances in line where the node is the truth.
 */
import type { ConfigStore, InstanceConfig, NodeRow } from './config/config-store';
import { ConfigError, nicParams } from './config/config-store';
import { addHistory } from './config/history';
import type { JobRow, JobStore } from './jobs/job-store';
import { JobError, type JobContext, type JobQueue } from './jobs/queue';
import { NodeRpcError, type NodeRpc } from './node-rpc';
import { checkName } from './validate';
import { compareConfig, describeFix, orderFixes, truthFrom, type ConfigDiff, type ConfigFix, type ConfigView, type JobHistory, type NodeView } from './verify-compare';
import type { InstanceRuntime__Output } from '../generated/gnt/node/v1/InstanceRuntime';
import type { InstanceVerifyReply__Output } from '../generated/gnt/node/v1/InstanceVerifyReply';
import type { InstanceVerifyResult__Output } from '../generated/gnt/node/v1/InstanceVerifyResult';
import type { VerifyFinding__Output } from '../generated/gnt/node/v1/VerifyFinding';
import type { VerifyLine } from '../generated/gnt/master/v1/VerifyLine';
import type { VerifyReport } from '../generated/gnt/master/v1/VerifyReport';
import type { VerifyRequest__Output } from '../generated/gnt/master/v1/VerifyRequest';
import { flavourOfNodeDisk } from './jobs/disk-backing';

export const VERIFY_OP = 'cluster-verify';

export interface VerifyOp {
  type: typeof VERIFY_OP;
  /** '' the whole cluster. */
  instance: string;
  fix: boolean;
}

type Severity = 'ERROR' | 'FIXED' | 'FIX-FAILED' | 'NOTE' | 'INFO';

/** A report line (VerifyLine with every field set). */
export interface Line extends VerifyLine {
  severity: Severity;
  node: string;
  instance: string;
  device: string;
  message: string;
}

const COUNTED: ReadonlySet<string> = new Set(['ERROR', 'FIXED', 'FIX-FAILED']);
const LEFT: ReadonlySet<string> = new Set(['ERROR', 'FIX-FAILED']);

/** One report line as the CLI prints it (and the job log keeps it). */
export function formatLine(l: Line): string {
  const where = [l.node ? `node ${l.node}` : '', l.instance ? `instance ${l.instance}` : ''].filter(Boolean).join(' ');
  return `${l.severity}: ${where}${l.device ? `: ${l.device}` : ''}: ${l.message}`;
}

/** An orphan disk file the node kept because the configuration listed its disk. */
const isKeptFile = (f: VerifyFinding__Output): boolean => f.code === 'orphan-file' && !f.repair && !f.note;

function severityOf(f: VerifyFinding__Output): Severity {
  if (f.note) return 'NOTE';
  if (!f.repair) return 'ERROR';
  return f.repaired ? 'FIXED' : 'FIX-FAILED';
}

function findingLine(node: string, f: VerifyFinding__Output): Line {
  const sev = severityOf(f);
  const tail = sev === 'FIXED' ? ` -> ${f.repair}` : sev === 'FIX-FAILED' ? ` -> ${f.repair} FAILED: ${f.repairError}` : '';
  return { severity: sev, node, instance: f.instance, device: f.device, message: `${f.problem}${tail}` };
}

/** The configuration as verify-compare.ts sees it. */
function configView(i: InstanceConfig): ConfigView {
  return {
    name: i.name, vcpus: i.vcpus, maxvcpus: i.maxvcpus, memoryMib: i.memory_mib, maxmemMib: i.maxmem_mib,
    nics: i.nics.map((n) => ({ uuid: n.uuid, mac: n.mac, link: n.link, removalPending: !!n.removal_pending, params: nicParams(n) })),
    disks: i.disks.map((d) => ({ uuid: d.uuid, sizeBytes: d.size_bytes, removalPending: !!d.removal_pending })),
  };
}

/** The node's view after its repairs; vCPUs and memory as they will be at the next start when a shrink waits for it. */
function nodeView(rt: InstanceRuntime__Output, pendingVcpus: number): NodeView {
  const r = rt.resources;
  const pending = r ? Number(r.pendingMemoryMib) : -1;
  return {
    running: rt.running,
    nics: rt.nics.map((n) => ({ uuid: n.uuid, mac: n.mac, link: n.link, state: n.state ?? '', params: nicParams({ link_state: n.linkState, rate_mbit: n.rateMbit, queues: n.queues, model: n.model }) })),
    disks: rt.disks.map((d) => ({ uuid: d.uuid, sizeBytes: Number(d.sizeBytes) || 0, state: d.state ?? '', ...flavourOfNodeDisk(d) })),
    ...(r ? { resources: { vcpus: pendingVcpus > 0 ? pendingVcpus : r.vcpus, memoryMib: pending >= 0 ? pending : Number(r.memoryMib) } } : {}),
  };
}

type JobSummary = Pick<JobRow, 'id' | 'op_type' | 'op_json' | 'status'>;

interface ModifyJson {
  type?: string;
  name?: string;
  noStart?: boolean;
  hotplug?: string;
  nics?: unknown[];
  disks?: unknown[];
  vcpus?: number;
  memoryMib?: number;
}

export class Verifier {
  private readonly reports = new Map<number, VerifyReport>();
  /** The instance jobs of the verification running now (reset per run). */
  private rowsCache: Array<JobSummary & { op: ModifyJson }> | undefined;

  constructor(
    private readonly config: ConfigStore,
    private readonly jobs: JobStore,
    private readonly rpc: NodeRpc,
  ) {}

  /** The Verify RPC: submits the job, waits for it, answers its report. */
  async request(queue: JobQueue, req: VerifyRequest__Output): Promise<VerifyReport> {
    if (req.instance) {
      checkName('instance', req.instance);
      this.config.getInstance(req.instance);
    }
    const names = req.instance ? [req.instance] : this.config.listInstances().map((i) => i.name);
    const op: VerifyOp = { type: VERIFY_OP, instance: req.instance, fix: req.fix };
    const summary = `verify${req.fix ? ' --fix' : ''} ${req.instance ? `instance ${req.instance}` : 'cluster'}`;
    const job = queue.submit(VERIFY_OP, op, summary, req.fix ? names.map((n) => `instance:${n}`) : []);
    await new Promise<void>((resolve) => {
      const off = queue.onDone(job.id, () => {
        off();
        resolve();
      });
    });
    const report = this.reports.get(job.id);
    this.reports.delete(job.id);
    if (!report) {
      const row = this.jobs.get(job.id);
      throw new JobError(`verification job ${job.id} ${row?.status ?? 'ended'} without a report: ${row?.error ?? ''}`, row?.error_code || 'ABORTED');
    }
    return report;
  }

  /** The job's work (called by the job queue for op type cluster-verify). */
  async run(job: JobRow, ctx: JobContext): Promise<void> {
    const op = JSON.parse(job.op_json) as VerifyOp;
    const lines: Line[] = [];
    const emit = (l: Line): void => {
      lines.push(l);
      ctx.log(formatLine(l));
    };
    this.rowsCache = undefined;
    const scope = op.instance ? [this.config.getInstance(op.instance)] : this.config.listInstances();
    const nodes = op.instance ? [scope[0].node] : this.config.listNodes();
    for (const node of nodes) await this.verifyNode(node, scope, op, emit, ctx.jobId);
    const differences = lines.filter((l) => COUNTED.has(l.severity)).length;
    const unrepaired = lines.filter((l) => LEFT.has(l.severity)).length;
    ctx.log(`verify: ${differences} difference(s)${op.fix ? `, ${differences - unrepaired} repaired` : ''}, ${lines.filter((l) => l.severity === 'NOTE').length} note(s)`);
    this.reports.set(ctx.jobId, { jobId: String(ctx.jobId), lines, differences, unrepaired });
    if (unrepaired > 0) throw new JobError(`${unrepaired} difference(s) left${op.fix ? ' after --fix' : ' (gnt-cluster verify --fix repairs what it can)'}`, 'FAILED_PRECONDITION');
  }

  private async verifyNode(node: NodeRow, scope: InstanceConfig[], op: VerifyOp, emit: (l: Line) => void, jobId: number): Promise<void> {
    const mine = scope.filter((i) => i.node.uuid === node.uuid);
    let reply: InstanceVerifyReply__Output;
    try {
      reply = await this.callNode(node, op.instance ? [op.instance] : [], op.fix, !op.instance);
    } catch (err) {
      if (op.instance && err instanceof NodeRpcError && err.code === 'NOT_FOUND') return this.neverStarted(node, mine[0], emit);
      emit({ severity: 'ERROR', node: node.name, instance: op.instance, device: '', message: `cannot verify: ${(err as Error).message}` });
      return;
    }
    emit({ severity: 'INFO', node: node.name, instance: '', device: 'gnt-noded', message: `${reply.nodedFds} open fds` });
    for (const f of reply.nodeFindings) emit(findingLine(node.name, f));
    const byName = new Map(reply.instances.map((r) => [r.name, r]));
    for (const inst of mine) {
      const r = byName.get(inst.name);
      if (r) await this.verifyInstance(node, inst, r, op.fix, emit, jobId);
      else this.neverStarted(node, inst, emit);
    }
    if (op.instance) return;
    const known = new Set(mine.map((i) => i.name));
    for (const r of reply.instances)
      if (!known.has(r.name))
        emit({ severity: 'ERROR', node: node.name, instance: r.name, device: '', message: `the node has this instance (${r.running ? `running, pid ${r.pid}` : 'stopped'}), the configuration does not place it on this node` });
  }

  /** InstanceVerify on one node, with what only the configuration knows. */
  private callNode(node: NodeRow, instances: string[], fix: boolean, nodeWide: boolean): Promise<InstanceVerifyReply__Output> {
    const all = this.config.listInstances();
    return this.rpc.instanceVerify({ name: node.name, address: node.address }, {
      instances,
      fix,
      nodeWide,
      foreignInstances: all.filter((i) => i.node.uuid !== node.uuid).map((i) => i.name),
      configuredDisks: all.flatMap((i) => i.disks.map((d) => d.uuid)),
    });
  }

  /**
   * One instance: the node's findings, then the configuration against the
   * node's view after its repairs. A disk file the node kept because the
   * configuration still listed its disk is deleted by a second node pass
   * once a fix has dropped that disk from the configuration.
   */
  private async verifyInstance(node: NodeRow, inst: InstanceConfig, r: InstanceVerifyResult__Output, fix: boolean, emit: (l: Line) => void, jobId: number): Promise<void> {
    if (r.running) emit({ severity: 'INFO', node: node.name, instance: inst.name, device: `QEMU pid ${r.pid}`, message: `${r.qemuFds} open fds` });
    let findings = r.findings;
    const config: Line[] = [];
    if (!r.migrating && r.runtime) {
      // A device the node reports a difference of that its repairs did not settle is judged there, not twice.
      const unsettled = new Set(findings.filter((f) => f.deviceUuid && !f.note && !f.repaired).map((f) => f.deviceUuid));
      const diffs = compareConfig(configView(inst), nodeView(r.runtime, r.pendingVcpus), truthFrom(this.history(inst.name), r.gone)).filter((d) => !d.uuid || !unsettled.has(d.uuid));
      for (const d of orderFixes(diffs)) config.push(this.configLine(node, inst, d, fix, jobId));
    }
    const droppedDisk = config.some((l) => l.severity === 'FIXED' && /^disk /.test(l.device) && / dropped from the configuration$/.test(l.message));
    if (fix && droppedDisk && findings.some(isKeptFile)) {
      const again = await this.callNode(node, [inst.name], true, false).catch(() => undefined);
      const second = again?.instances[0]?.findings ?? [];
      findings = findings.map((f) => (isKeptFile(f) ? (second.find((s) => s.device === f.device && s.code === f.code) ?? f) : f));
    }
    for (const f of findings) emit(findingLine(node.name, f));
    this.adminState(node, inst, r.running, emit);
    config.forEach(emit);
  }

  private neverStarted(node: NodeRow, inst: InstanceConfig, emit: (l: Line) => void): void {
    const up = inst.admin_state === 'up';
    emit({ severity: up ? 'ERROR' : 'NOTE', node: node.name, instance: inst.name, device: '', message: `the node has no runtime file for it${up ? ', yet it should be running' : ' (never started)'}` });
  }

  private adminState(node: NodeRow, inst: InstanceConfig, running: boolean, emit: (l: Line) => void): void {
    if ((inst.admin_state === 'up') === running) return;
    emit({ severity: 'ERROR', node: node.name, instance: inst.name, device: '', message: running ? 'runs on the node, but is marked down in the configuration' : 'is marked up in the configuration, but does not run on the node' });
  }

  /** One configuration difference, repaired when asked and the node is the truth for it. */
  private configLine(node: NodeRow, inst: InstanceConfig, d: ConfigDiff, fix: boolean, jobId: number): Line {
    const base = { node: node.name, instance: inst.name, device: d.device };
    if (d.note) return { ...base, severity: 'NOTE', message: d.problem };
    if (!fix || !d.fix) return { ...base, severity: 'ERROR', message: d.problem };
    try {
      this.applyFix(inst, d.fix);
    } catch (err) {
      return { ...base, severity: 'FIX-FAILED', message: `${d.problem} -> ${describeFix(d.fix)} FAILED: ${(err as Error).message}` };
    }
    addHistory(this.config.db, inst.uuid, `verify --fix (job ${jobId}): ${d.device}: ${d.problem}: ${describeFix(d.fix)}`);
    return { ...base, severity: 'FIXED', message: `${d.problem} -> ${describeFix(d.fix)}` };
  }

  private applyFix(inst: InstanceConfig, f: ConfigFix): void {
    switch (f.kind) {
      case 'drop-nic':
        return this.config.removeDevice('nics', f.uuid);
      case 'drop-disk':
        return this.config.removeDevice('disks', f.uuid);
      case 'add-nic':
        return this.config.appendNic(inst.uuid, f.uuid, f.mac, f.link);
      case 'add-disk':
        if (f.sizeBytes <= 0) throw new ConfigError(`the node reports no size for disk ${f.uuid}`, 'FAILED_PRECONDITION');
        return this.config.appendDisk(inst.uuid, f.uuid, f.sizeBytes, f);
      case 'update-nic':
        return this.config.modifyNic(f.uuid, f.mac, f.link, f.params);
      case 'set-resources':
        return this.config.setResources(inst.name, f.vcpus, f.memoryMib);
    }
  }

  // ---- job history --------------------------------------------------------------

  /** The instance jobs, read once per verification (verify covers every instance). */
  private jobRows(): Array<JobSummary & { op: ModifyJson }> {
    this.rowsCache ??= (this.config.db.prepare(`SELECT id, op_type, op_json, status FROM jobs WHERE op_type IN ('instance-add', 'instance-start', 'instance-modify') ORDER BY id`).all() as JobSummary[])
      .map((r) => ({ ...r, op: parseOp(r.op_json) }));
    return this.rowsCache;
  }

  /** What the job tables say about the instance's changes (see verify-compare.ts). */
  history(name: string): JobHistory {
    const rows = this.jobRows().filter((r) => r.op.name === name);
    const ids = new Set(rows.map((r) => r.id));
    const live = liveChanges(this.config, name).filter((l) => ids.has(l.jobId));
    const lastLive = new Map<string, number>();
    for (const l of live) if (l.device) lastLive.set(l.device, Math.max(lastLive.get(l.device) ?? 0, l.jobId));
    const liveJobs = new Set(live.map((l) => l.jobId));
    const ran = (s: string): boolean => s === 'success' || s === 'error';
    const resize = (o: ModifyJson): boolean => !!(o.vcpus || o.memoryMib);
    let lastSync = 0;
    let lastLiveResize = 0;
    const configOnly: Array<JobHistory['configOnly'][number]> = [];
    for (const r of rows) {
      if (r.status === 'success' && (r.op_type === 'instance-start' || (r.op_type === 'instance-add' && !r.op.noStart))) lastSync = r.id;
      if (r.op_type !== 'instance-modify' || !ran(r.status)) continue;
      if (r.op.hotplug === 'HOTPLUG' && resize(r.op)) lastLiveResize = r.id;
      const configOnlyDevices = r.op.hotplug === 'NONE' || (r.op.hotplug === 'IF_POSSIBLE' && !liveJobs.has(r.id));
      const configOnlyResize = r.op.hotplug !== 'HOTPLUG' && resize(r.op);
      if (configOnlyDevices || configOnlyResize)
        configOnly.push({ id: r.id, nics: configOnlyDevices && !!r.op.nics?.length, disks: configOnlyDevices && !!r.op.disks?.length, resources: configOnlyResize });
    }
    return { lastSync, lastLive, lastLiveResize, configOnly };
  }
}

function parseOp(json: string): ModifyJson {
  try {
    const v = JSON.parse(json) as unknown;
    return typeof v === 'object' && v !== null ? (v as ModifyJson) : {};
  } catch {
    return {};
  }
}

/** Live changes recorded for an instance's jobs: job_hotplug rows and operation rows (when that table exists). */
function liveChanges(config: ConfigStore, name: string): Array<{ jobId: number; device: string }> {
  const db = config.db;
  const out = (db.prepare('SELECT job_id AS jobId, device_uuid AS device FROM job_hotplug').all() as Array<{ jobId: number; device: string }>);
  try {
    out.push(...(db.prepare('SELECT job_id AS jobId, device_uuid AS device FROM operations WHERE instance_name = ? AND job_id IS NOT NULL').all(name) as Array<{ jobId: number; device: string }>));
  } catch {
    /* no operations table in this schema */
  }
  return out;
}
