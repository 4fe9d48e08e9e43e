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
 */
import { HotplugStepError, errorMessage, isOutcomeUnknown } from './errors';

type Undo = () => Promise<unknown> | unknown;

export class HotplugTransaction {
  private readonly undos: Array<{ step: string; undo: Undo }> = [];
  private current = 'start';

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

export async function inTransaction<T>(action: string, body: (tx: HotplugTransaction) => Promise<T>): Promise<T> {
  const tx = new HotplugTransaction(action);
  try {
    return await body(tx);
  } catch (err) {
    return tx.rollback(err);
  }
}
