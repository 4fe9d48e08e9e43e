/**
 * Who asked for the job that is running (docs/audit.md): the queue runs each
 * job inside runRequestedBy, and NodeRpc puts currentRequestedBy() into the
 * `requested_by` field of every node request that changes an instance, so no
 * job step has to pass it along by hand.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

const scope = new AsyncLocalStorage<string>();

export function runRequestedBy<T>(requestedBy: string, fn: () => Promise<T>): Promise<T> {
  return scope.run(requestedBy, fn);
}

/** The identity of the job running in this async context; '' outside a job. */
export function currentRequestedBy(): string {
  return scope.getStore() ?? '';
}
