/**
 * The `gnt-instance modify` job: a list of typed changes (device-changes/,
 * one module per kind), planned all at once against a copy of the
 * configuration, then run one by one in that order: live through an
 * operation (committed before the node is called, settled exactly once by
 * runOperation, jobs/op-call.ts), or in the configuration only (it applies
 * at the next start). A failure leaves the configuration of the failed
 * change as it was; the changes before it stay done.
 */
import type { ConfigStore, InstanceConfig } from '../config/config-store';
import type { NodeRpc, NodeTarget } from '../node-rpc';
import { JobError, type JobContext } from './queue';
import { nodeTarget } from './spec';
import { createOperation } from './operations';
import { runOperation, type OpCallDeps } from './op-call';
import type { MacSource, ModifyOp } from './device-changes/change-kind';
import { confirmInGuest, shouldWaitGuest } from './guest-confirm';
import type { GuestWaitTarget } from './device-changes/change-kind';
import { CHANGE_ORDER, changeKind, type ChangeKindName, type ModifyStep, type StepOf } from './device-changes/registry';

export interface ModifyDeps {
  config: ConfigStore;
  rpc: NodeRpc;
  /** Ids of the operations jobs are sending now. */
  inflight: Set<string>;
  /** How long a job keeps asking a node for an operation's outcome after an ambiguous failure, ms. */
  windowMs?: number;
  /** MACs for new NICs, reserved for this job. */
  macs: MacSource;
}

/**
 * Plans every change against a copy first: any bad index, limit or MAC
 * fails the job before anything is touched. Indices refer to the device
 * list as it is after the earlier changes of the same command (as in
 * Ganeti).
 */
export function planModify(inst: InstanceConfig, op: ModifyOp, macs: MacSource): ModifyStep[] {
  return CHANGE_ORDER.flatMap((kind): ModifyStep[] => changeKind(kind).plan({ inst, op, macs }));
}

export async function runModify(deps: ModifyDeps, op: ModifyOp, ctx: JobContext): Promise<void> {
  const inst = deps.config.getInstance(op.name);
  const steps = planModify(inst, op, deps.macs);
  const run = new ModifyRun(deps, inst, op, ctx);
  for (const s of steps) await run.step(s.kind, s);
  if (run.pending.length) ctx.log(`${run.pending.length} change(s) apply at the next start of instance ${inst.name}`);
}

/** One modify job while it runs: what it did, what waits for the next start, which kinds go live. */
class ModifyRun {
  readonly done: string[] = [];
  readonly pending: string[] = [];
  private readonly live = new Map<ChangeKindName, boolean>();
  private readonly node: NodeTarget;
  private readonly hotplug: ModifyOp['hotplug'];
  /** --wait-guest (or the node's default), decided at the first live change; false once no agent answered. */
  private waitGuest: boolean | undefined;

  constructor(
    private readonly deps: ModifyDeps,
    private readonly inst: InstanceConfig,
    private readonly op: ModifyOp,
    private readonly ctx: JobContext,
  ) {
    this.node = nodeTarget(inst);
    this.hotplug = op.hotplug;
  }

  async step<K extends ChangeKindName>(kind: K, s: StepOf<K>): Promise<void> {
    if (await this.isLive(kind)) await this.runLive(kind, s);
    else this.configOnly(kind, s);
  }

  /** Whether this kind is changed live: --hotplug yes, none no, --hotplug-if-possible asks once per kind. */
  private async isLive(kind: ChangeKindName): Promise<boolean> {
    if (this.hotplug === 'NONE') return false;
    if (this.hotplug === 'HOTPLUG') return true;
    let live = this.live.get(kind);
    if (live === undefined) {
      live = await changeKind(kind).liveSupported({ rpc: this.deps.rpc, node: this.node, inst: this.inst, log: (l) => this.ctx.log(l) });
      this.live.set(kind, live);
    }
    return live;
  }

  private configOnly<K extends ChangeKindName>(kind: K, s: StepOf<K>): void {
    const k = changeKind(kind);
    const text = k.configOnlyText(s);
    this.ctx.commit(() => {
      k.commit(this.deps.config, this.inst, s);
      this.ctx.log(`${text.log}; it applies at the next start of ${this.inst.name}`);
    });
    this.done.push(text.done);
    this.pending.push(s.what);
  }

  private opDeps(): OpCallDeps {
    const { config, rpc, inflight, windowMs } = this.deps;
    return { config, rpc, inflight, windowMs, commit: this.ctx.commit };
  }

  /** One live change: its operation is committed before the node is called and settled by runOperation, exactly once. */
  private async runLive<K extends ChangeKindName>(kind: K, s: StepOf<K>): Promise<void> {
    const { config, rpc } = this.deps;
    const { ctx, inst, node } = this;
    const k = changeKind(kind);
    // the operation record and the line that announces it, with the lines before, in one commit before the node is called
    const row = ctx.commit(() => {
      const r = createOperation(config, ctx.jobId, inst, s.change);
      ctx.log(`${k.liveStart(s, inst, node)} (operation ${r.id})`);
      return r;
    });
    const request = k.request(s, inst, row.id);
    const res = await runOperation(this.opDeps(), {
      op: row,
      node,
      log: ctx.log,
      send: () => k.send({ rpc, node, request, log: ctx.log, flush: () => ctx.commit(() => undefined) }),
      fromReply: (r) => k.fromReply(r),
    });
    const final = res.settle.op;
    if (final.state === 'failed') throw new JobError(k.failedMessage(s, final, { config, inst, done: this.done }), final.error_code);
    const out = k.succeeded(s, final, res.reply ?? k.replyOfRecord(res.record), !res.reply);
    ctx.log(out.line);
    out.notes.forEach((n) => ctx.log(`note: ${n}`));
    this.done.push(out.line);
    if (final.state === 'succeeded' && k.guestWait) await this.confirm(k.guestWait(s, res.reply ?? k.replyOfRecord(res.record)), s.what);
  }

  /** --wait-guest: the guest agent reports the change (guest-confirm.ts). */
  private async confirm(targets: GuestWaitTarget[] | string, what: string): Promise<void> {
    if (Array.isArray(targets) && !targets.length) return;
    this.waitGuest ??= await shouldWaitGuest(this.op, this.deps.rpc, this.node);
    if (!this.waitGuest) return;
    const deps = { rpc: this.deps.rpc, node: this.node, instance: this.inst.name, log: (l: string) => this.ctx.log(l) };
    this.waitGuest = await confirmInGuest(deps, targets, what, this.op.waitGuestTimeoutMs);
  }
}
