/**
 * Runs the steps of one hotplug and, when a step fails, undoes the steps
 * that succeeded, newest first. The error names the failed step, what was
 * rolled back, and any rollback that failed.
 *
 * A step whose outcome is unknown (the command timed out, or the monitor
 * went away: QEMU may have executed it) is not answered with undos, which
 * could tear down what a command that did run depends on (a netdev_del
 * under a device_add that took effect). The error says the outcome is
 * unknown; the caller keeps its intent record, and reconciliation settles
 * it against QEMU's own lists.
 *
 * Pipelined steps (`pipeline`) are QMP commands sent one after the other
 * without waiting for each answer: QEMU reads and executes a monitor's
 * commands strictly in order, one at a time, so the next one starts only
 * after the previous one has finished (its fds ride with its own bytes). But
 * QEMU runs a command even when an earlier one of the group failed, so the
 * answers are judged in order once all are in:
 *   - any answer missing (timeout, monitor gone): the outcome is unknown, as
 *     for a single step, and nothing is undone;
 *   - otherwise the first refusal is the failed step; a later command QEMU
 *     refused too only followed from it (`followers`, not a fault of its
 *     own); a later command QEMU did execute (e.g. a device_add that found a
 *     backend of the same id left from before) is undone with the others,
 *     so exactly what QEMU executed is rolled back.
 */
import { HotplugStepError, errorMessage, isOutcomeUnknown } from './errors';

type Undo = () => Promise<unknown> | unknown;

/** One command of a pipeline. */
export interface PipelinedStep<T = unknown> {
  name: string;
  /**
   * Sends the command and returns its answer. It must send before it
   * returns (QmpClient.execute does, and so does a wrapper that calls it at
   * once), so that the commands reach QEMU in the order of the steps.
   */
  send: () => Promise<T>;
  undo?: (result: T) => Promise<unknown> | unknown;
  /** Earlier steps whose effect this one takes over when it succeeds (netdev_add consumes getfd's named fd): their undo is dropped. */
  takesOver?: string[];
}

export class HotplugTransaction {
  private readonly undos: Array<{ step: string; undo: Undo }> = [];
  private current = 'start';
  /** Pipelined steps QEMU refused only because an earlier step of their pipeline had failed. */
  readonly followers: string[] = [];

  constructor(readonly action: string) {}

  /** Runs one step; `undo` (given the step's result) is kept for rollback. */
  async step<T>(name: string, run: () => Promise<T> | T, undo?: (result: T) => Promise<unknown> | unknown): Promise<T> {
    this.current = name;
    const result = await run();
    if (undo) this.undos.push({ step: name, undo: () => undo(result) });
    return result;
  }

  /** Drops the undo of an earlier step whose effect was taken over by a later one. */
  forget(step: string): void {
    const i = this.undos.findIndex((u) => u.step === step);
    if (i >= 0) this.undos.splice(i, 1);
  }

  /**
   * Sends every step's command at once and judges the answers in order (see
   * the head of this file). Returns the results; throws the first failure,
   * with the undos of every step QEMU executed kept for rollback.
   */
  async pipeline(steps: readonly PipelinedStep[]): Promise<unknown[]> {
    const answers = await Promise.allSettled(steps.map((s) => sendNow(s)));
    const unknown = answers.findIndex((a) => a.status === 'rejected' && isOutcomeUnknown(a.reason));
    if (unknown >= 0) {
      this.current = steps[unknown].name;
      throw (answers[unknown] as PromiseRejectedResult).reason;
    }
    let failed: { name: string; reason: unknown } | undefined;
    steps.forEach((s, i) => {
      const a = answers[i];
      if (a.status === 'rejected') {
        if (failed) this.followers.push(s.name);
        else failed = { name: s.name, reason: a.reason };
        return;
      }
      for (const earlier of s.takesOver ?? []) this.forget(earlier);
      const undo = s.undo;
      if (undo) this.undos.push({ step: s.name, undo: () => undo(a.value) });
    });
    if (failed) {
      this.current = failed.name;
      throw failed.reason;
    }
    return answers.map((a) => (a as PromiseFulfilledResult<unknown>).value);
  }

  async rollback(cause: unknown): Promise<never> {
    if (isOutcomeUnknown(cause)) throw new HotplugStepError(this.action, this.current, cause, [], [], true);
    const undone: string[] = [];
    const failures: string[] = [];
    for (const { step, undo } of this.undos.reverse()) {
      try {
        await undo();
        undone.push(step);
      } catch (err) {
        failures.push(`${step} (${errorMessage(err)})`);
      }
    }
    throw new HotplugStepError(this.action, this.current, cause, undone, failures);
  }
}

/** Calls `send` now; a synchronous throw becomes a rejection. */
function sendNow<T>(s: PipelinedStep<T>): Promise<T> {
  try {
    return s.send();
  } catch (err) {
    return Promise.reject(err);
  }
}

export async function inTransaction<T>(action: string, body: (tx: HotplugTransaction) => Promise<T>): Promise<T> {
  const tx = new HotplugTransaction(action);
  try {
    return await body(tx);
  } catch (err) {
    return tx.rollback(err);
  }
}
