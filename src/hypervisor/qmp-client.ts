/**
 * QMP client: one connection to one QEMU monitor socket.
 *
 * - negotiates capabilities on connect;
 * - matches replies to requests by `id`, so commands may overlap: execute
 *   writes the command before it returns, so calls made one after the other
 *   without awaiting reach QEMU in that order, and QEMU runs them one at a
 *   time in that order (pipelining, hotplug-transaction.ts);
 * - times out each command (QmpTimeoutError) without leaving it pending;
 * - hands events to listeners and to `waitForEvent`;
 * - when QEMU goes away every pending command and event wait rejects with
 *   QmpUnavailableError, and later commands fail at once;
 * - sends file descriptors along with a command by SCM_RIGHTS (getfd, add-fd).
 *
 * All writes go through the native sendmsg so that bytes and fds keep their order.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { isNativeError, sendWithFds, unixConnect } from './native';
import { QmpCommandError, QmpTimeoutError, QmpUnavailableError, errorMessage } from './errors';

export type QmpArgs = Record<string, unknown>;

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface ExecuteOptions {
  /** File descriptors to attach to this command (getfd, add-fd). */
  fds?: number[];
  timeoutMs?: number;
}

/** What the hotplug code needs of a monitor; tests may wrap a real client. */
export interface Monitor {
  /**
   * Sends the command and resolves with QEMU's answer. Pipelined steps rely
   * on it sending before it returns (a wrapper must call through at once or
   * keep the call order).
   */
  execute<T = unknown>(command: string, args?: QmpArgs, options?: ExecuteOptions): Promise<T>;
  hmp(commandLine: string): Promise<string>;
  waitForEvent(match: (e: QmpEvent) => boolean, timeoutMs: number, what: string): EventWait;
}

/** A registered wait; register it before the command that causes the event. */
export interface EventWait {
  promise: Promise<QmpEvent>;
  cancel(): void;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const CONNECT_RETRY_MS = 10;

async function connectSocket(socketPath: string, timeoutMs: number, retryRefusedMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    try {
      return unixConnect(socketPath);
    } catch (err) {
      const code = isNativeError(err) ? err.code : '';
      const waited = Date.now() - started;
      const retry = (code === 'EAGAIN' && waited < timeoutMs) || (code === 'ECONNREFUSED' && waited < retryRefusedMs);
      if (retry) {
        await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
        continue;
      }
      const hint =
        code === 'EAGAIN'
          ? ' (the monitor is busy: another client holds it)'
          : code === 'ENOENT' || code === 'ECONNREFUSED'
            ? ' (is the instance running?)'
            : '';
      throw new QmpUnavailableError(`cannot reach the QEMU monitor at ${socketPath}: ${errorMessage(err)}${hint}`, {
        cause: err,
      });
    }
  }
}

/** A command's name, its latency in seconds and whether QEMU answered without error. */
export type QmpObserver = (command: string, seconds: number, ok: boolean) => void;

function observed<T>(command: string, p: Promise<T>): Promise<T> {
  const obs = QmpClient.observer;
  if (!obs) return p;
  const t0 = process.hrtime.bigint();
  const report = (ok: boolean): void => {
    try {
      obs(command, Number(process.hrtime.bigint() - t0) / 1e9, ok);
    } catch {
      /* an observer's fault never fails a command */
    }
  };
  p.then(() => report(true), () => report(false));
  return p;
}

export class QmpClient extends EventEmitter implements Monitor {
  readonly socketPath: string;
  private readonly socket: net.Socket;
  private readonly fd: number;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closedError: Error | undefined;
  private greeting: { QMP: { version: { qemu: QmpVersion } } } | undefined;
  private greetingWaiter: ((err?: Error) => void) | undefined;
  readonly defaultTimeoutMs: number;
  /** Told of every command's latency and outcome (the node daemon sets it for its metrics; none by default). */
  static observer: QmpObserver | undefined;

  private constructor(socketPath: string, fd: number, defaultTimeoutMs: number) {
    super();
    this.socketPath = socketPath;
    this.fd = fd;
    this.defaultTimeoutMs = defaultTimeoutMs;
    this.socket = new net.Socket({ fd, readable: true, writable: true });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (err) => this.onClose(err));
    this.socket.on('close', () => this.onClose());
  }

  /**
   * Connects and negotiates capabilities. Throws QmpUnavailableError if
   * nothing listens. A monitor whose backlog is full (another client holds
   * it) is retried until `timeoutMs`; a refused connection only within
   * `retryRefusedMs` (for a QEMU that is still starting).
   */
  static async connect(
    socketPath: string,
    options: { timeoutMs?: number; retryRefusedMs?: number } = {},
  ): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const fd = await connectSocket(socketPath, timeoutMs, options.retryRefusedMs ?? 0);
    const client = new QmpClient(socketPath, fd, timeoutMs);
    try {
      await client.awaitGreeting();
      await client.execute('qmp_capabilities');
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  get qemuVersion(): QmpVersion | undefined {
    return this.greeting?.QMP.version.qemu;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  execute<T = unknown>(command: string, args?: QmpArgs, options: ExecuteOptions = {}): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const message: Record<string, unknown> = { execute: command, id };
    if (args && Object.keys(args).length > 0) message.arguments = args;
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    return observed(command, new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(command, this.socketPath, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        sendWithFds(this.fd, Buffer.from(JSON.stringify(message) + '\n'), options.fds ?? []);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new QmpUnavailableError(`cannot send ${command} to ${this.socketPath}: ${errorMessage(err)}`));
      }
    }));
  }

  async hmp(commandLine: string): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine });
  }

  waitForEvent(match: (e: QmpEvent) => boolean, timeoutMs: number, what: string): EventWait {
    let cancel = (): void => {};
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      if (this.closedError) {
        reject(this.closedError);
        return;
      }
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('disconnected', onClosed);
      };
      const onEvent = (e: QmpEvent): void => {
        if (!match(e)) return;
        cleanup();
        resolve(e);
      };
      const onClosed = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new QmpTimeoutError(`wait for ${what}`, this.socketPath, timeoutMs));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('disconnected', onClosed);
      cancel = (): void => {
        cleanup();
        resolve({ event: 'CANCELLED', data: {}, timestamp: { seconds: 0, microseconds: 0 } });
      };
    });
    return { promise, cancel: () => cancel() };
  }

  close(): void {
    this.onClose(new QmpUnavailableError(`QMP connection to ${this.socketPath} was closed`));
    this.socket.destroy();
  }

  private awaitGreeting(): Promise<void> {
    if (this.greeting) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        reject(new QmpTimeoutError('greeting (is another client holding the monitor?)', this.socketPath, this.defaultTimeoutMs));
      }, this.defaultTimeoutMs);
      this.greetingWaiter = (err) => {
        clearTimeout(timer);
        this.greetingWaiter = undefined;
        if (err) reject(err);
        else resolve();
      };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.emit('protocol-error', line);
      return;
    }
    if ('QMP' in msg) {
      this.greeting = msg as unknown as NonNullable<QmpClient['greeting']>;
      this.greetingWaiter?.();
    } else if ('event' in msg) {
      this.emit('event', { data: {}, ...msg } as QmpEvent);
    } else if (typeof msg.id === 'number') {
      this.settle(msg.id, msg);
    }
  }

  private settle(id: number, msg: Record<string, unknown>): void {
    const p = this.pending.get(id);
    if (!p) return; // timed out earlier; a late answer is dropped
    this.pending.delete(id);
    clearTimeout(p.timer);
    const error = msg.error as { class?: string; desc?: string } | undefined;
    if (error) p.reject(new QmpCommandError(p.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'));
    else p.resolve(msg.return);
  }

  private onClose(cause?: Error): void {
    if (this.closedError) return;
    const why = cause ? `: ${cause.message}` : '';
    this.closedError =
      cause instanceof QmpUnavailableError
        ? cause
        : new QmpUnavailableError(`QEMU monitor at ${this.socketPath} went away${why}`, { cause });
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(this.closedError);
      this.pending.delete(id);
    }
    this.greetingWaiter?.(this.closedError);
    this.emit('disconnected', this.closedError);
  }
}
