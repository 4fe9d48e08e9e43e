/**
 * A monitor that answers from a script, for the faults a real QEMU cannot be
 * made to produce at a chosen command: a refusal, a timeout, a monitor that
 * goes away. It keeps what was sent, in order, and answers in that order on
 * a later turn of the event loop (as QEMU does: one command after the other).
 */
import { QmpCommandError, QmpTimeoutError, QmpUnavailableError } from '../../src/hypervisor/errors';
import type { EventWait, ExecuteOptions, Monitor, QmpArgs, QmpEvent } from '../../src/hypervisor/qmp-client';

export type Answer = { ok: unknown } | { error: string; class?: string } | 'timeout' | 'gone';

export interface Sent {
  command: string;
  args?: QmpArgs;
  fds?: number[];
}

/** What to answer to one command: by name (a function may look at the arguments). */
export type Script = Record<string, Answer | ((args: QmpArgs | undefined, n: number) => Answer)>;

export class ScriptedMonitor implements Monitor {
  readonly sent: Sent[] = [];
  private readonly counts = new Map<string, number>();
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly script: Script) {}

  commands(): string[] {
    return this.sent.map((s) => s.command);
  }

  execute<T = unknown>(command: string, args?: QmpArgs, options?: ExecuteOptions): Promise<T> {
    this.sent.push({ command, ...(args ? { args } : {}), ...(options?.fds ? { fds: options.fds } : {}) });
    const n = this.counts.get(command) ?? 0;
    this.counts.set(command, n + 1);
    const rule = this.script[command];
    const answer: Answer = rule === undefined ? { ok: {} } : typeof rule === 'function' ? rule(args, n) : rule;
    const reply = this.chain.then(() => new Promise((r) => setImmediate(r))).then((): T => {
      if (answer === 'timeout') throw new QmpTimeoutError(command, 'scripted', 10);
      if (answer === 'gone') throw new QmpUnavailableError('QEMU monitor at scripted went away');
      if ('error' in answer) throw new QmpCommandError(command, answer.class ?? 'GenericError', answer.error);
      return answer.ok as T;
    });
    this.chain = reply.catch(() => undefined);
    return reply;
  }

  hmp(commandLine: string): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine });
  }

  /** No events: every wait ends at its timeout, as a poll interval. */
  waitForEvent(_match: (e: QmpEvent) => boolean, timeoutMs: number, what: string): EventWait {
    let timer: NodeJS.Timeout | undefined;
    const promise = new Promise<QmpEvent>((_resolve, reject) => {
      timer = setTimeout(() => reject(new QmpTimeoutError(`wait for ${what}`, 'scripted', timeoutMs)), Math.min(timeoutMs, 5));
    });
    return { promise, cancel: () => clearTimeout(timer) };
  }
}

/** The lists that say a device is gone (qom-list of /machine/peripheral, query-pci). */
export const GONE: Script = { 'qom-list': { ok: [] }, 'query-pci': { ok: [{ bus: 0, devices: [] }] } };
