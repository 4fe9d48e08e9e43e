/**
 * Guest agent client: one connection to the unix socket behind an
 * instance's virtio-serial port `org.qemu.guest_agent.0`, where the QEMU
 * guest agent (qemu-ga) inside the guest answers.
 *
 * The agent's protocol is QMP-like JSON, one command at a time, with no
 * greeting and no ids. A connection may hold stale bytes: a reply to a
 * command whose caller gave up, or half a reply from before the agent
 * restarted. So every new connection is synchronised first with
 * `guest-sync-delimited`: the request starts with a 0xFF byte (the agent
 * drops what it had read), the reply starts with 0xFF too, and everything
 * before that byte is discarded; the reply must echo our random id.
 *
 * - every call has a timeout (AgentTimeoutError); after a timeout the
 *   connection is closed, since a late reply would be taken for the next
 *   command's, and the next call connects and synchronises again;
 * - a socket that does not accept, or an agent that does not answer the
 *   sync, is AgentNotAnsweringError: no agent runs in the guest (not
 *   installed, not started, the guest is still booting, or it hangs);
 * - an error reply is AgentCommandError with the agent's class and desc.
 */
import { randomInt } from 'node:crypto';
import * as net from 'node:net';
import { HypervisorError } from './errors';

/** The agent did not take the connection or did not answer the sync. */
export class AgentNotAnsweringError extends HypervisorError {
  constructor(socketPath: string, why: string) {
    super('UNAVAILABLE', `no guest agent answers on ${socketPath}: ${why} (is qemu-guest-agent installed and running in the guest?)`);
  }
}

/** A command got no reply in time. */
export class AgentTimeoutError extends HypervisorError {
  constructor(command: string, timeoutMs: number) {
    super('DEADLINE_EXCEEDED', `the guest agent did not answer ${command} within ${timeoutMs} ms`);
  }
}

/** The agent answered with an error. */
export class AgentCommandError extends HypervisorError {
  constructor(
    readonly command: string,
    readonly agentClass: string,
    readonly desc: string,
  ) {
    super('FAILED_PRECONDITION', `the guest agent refused ${command}: ${agentClass}: ${desc}`);
  }
}

export interface GuestAgentOptions {
  /** Connecting and synchronising (the first sync on a new connection takes up to ~100 ms under TCG). */
  syncTimeoutMs?: number;
  /** Default per-command timeout. */
  timeoutMs?: number;
}

const SYNC_TIMEOUT_MS = 3_000;
const CALL_TIMEOUT_MS = 5_000;
/** A reply longer than this is not one the agent sends: the stream is out of sync. */
const MAX_REPLY_BYTES = 4 * 1024 * 1024;

type Waiter = { resolve(line: string): void; reject(err: Error): void };

/** One socket with a line reader; `onFF` marks where a delimited sync reply starts. */
class AgentStream {
  private buf = Buffer.alloc(0);
  private waiter: Waiter | undefined;
  private closedWith: Error | undefined;
  private skipToFF = false;

  constructor(readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.deliver();
    });
    const gone = (err?: Error): void => this.fail(err ?? new Error('the agent socket closed'));
    sock.on('error', gone);
    sock.on('close', () => gone());
  }

  /** Drops everything up to and including the next 0xFF byte before reading lines. */
  expectDelimiter(): void {
    this.skipToFF = true;
    this.deliver();
  }

  nextLine(): Promise<string> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.deliver();
    });
  }

  private deliver(): void {
    if (this.skipToFF) {
      const ff = this.buf.indexOf(0xff);
      if (ff < 0) {
        this.buf = Buffer.alloc(0);
        return;
      }
      this.buf = this.buf.subarray(ff + 1);
      this.skipToFF = false;
    }
    if (!this.waiter) return;
    const nl = this.buf.indexOf(0x0a);
    if (nl < 0) {
      if (this.buf.length > MAX_REPLY_BYTES) this.fail(new Error(`a reply of over ${MAX_REPLY_BYTES} bytes without a line end`));
      return;
    }
    const line = this.buf.subarray(0, nl).toString('utf8');
    this.buf = this.buf.subarray(nl + 1);
    const w = this.waiter;
    this.waiter = undefined;
    w.resolve(line);
  }

  fail(err: Error): void {
    if (!this.closedWith) this.closedWith = err;
    this.sock.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function connect(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  return withTimeout(
    new Promise<net.Socket>((resolve, reject) => {
      const sock = net.createConnection(socketPath);
      sock.once('connect', () => resolve(sock));
      sock.once('error', (err) => reject(new AgentNotAnsweringError(socketPath, `cannot connect: ${err.message}`)));
    }),
    timeoutMs,
    () => new AgentNotAnsweringError(socketPath, `the socket did not accept within ${timeoutMs} ms`),
  );
}

/** One parsed reply line: the `return` value, or an error. */
function parseReply(command: string, line: string): unknown {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    throw new Error(`the guest agent sent a line that is not JSON in reply to ${command}: ${line.slice(0, 80)}`);
  }
  if (typeof msg !== 'object' || msg === null) throw new Error(`the guest agent sent ${line.slice(0, 80)} in reply to ${command}`);
  const m = msg as { return?: unknown; error?: { class?: unknown; desc?: unknown } };
  if (m.error) throw new AgentCommandError(command, String(m.error.class ?? 'GenericError'), String(m.error.desc ?? ''));
  if (!('return' in m)) throw new Error(`the guest agent's reply to ${command} has neither return nor error: ${line.slice(0, 80)}`);
  return m.return;
}

/** A client for one instance's agent socket; calls are serialised (the agent runs one at a time). */
export class GuestAgent {
  private stream: AgentStream | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly syncTimeoutMs: number;
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    options: GuestAgentOptions = {},
  ) {
    this.syncTimeoutMs = options.syncTimeoutMs ?? SYNC_TIMEOUT_MS;
    this.timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS;
  }

  /** Runs `command` and resolves with its `return` value (unchecked: see guest-agent-calls.ts). */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<unknown> {
    const run = this.chain.then(() => this.executeNow(command, args, timeoutMs));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Closes the connection; later calls fail. */
  close(): void {
    this.closed = true;
    this.drop(new Error('the guest agent client was closed'));
  }

  /** Closes the current connection only (QEMU restarted: the socket is a new one). */
  reset(): void {
    this.drop(new Error('the guest agent connection was reset'));
  }

  private drop(err: Error): void {
    this.stream?.fail(err);
    this.stream = undefined;
  }

  private async executeNow(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    if (this.closed) throw new AgentNotAnsweringError(this.socketPath, 'the client was closed');
    const stream = this.stream ?? (this.stream = await this.open());
    const line = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n';
    const reply = stream.nextLine();
    stream.sock.write(line);
    try {
      return parseReply(command, await withTimeout(reply, timeoutMs, () => new AgentTimeoutError(command, timeoutMs)));
    } catch (err) {
      // Out of sync or gone: the next call starts a new connection. A refusal keeps it.
      if (!(err instanceof AgentCommandError)) this.drop(err as Error);
      throw err;
    }
  }

  /** Connects and synchronises; stale bytes before the agent's 0xFF are dropped. */
  private async open(): Promise<AgentStream> {
    const sock = await connect(this.socketPath, this.syncTimeoutMs);
    const stream = new AgentStream(sock);
    try {
      await withTimeout(this.sync(stream), this.syncTimeoutMs, () => new AgentNotAnsweringError(this.socketPath, `no reply to guest-sync-delimited within ${this.syncTimeoutMs} ms`));
      return stream;
    } catch (err) {
      stream.fail(err as Error);
      if (err instanceof AgentNotAnsweringError) throw err;
      throw new AgentNotAnsweringError(this.socketPath, (err as Error).message);
    }
  }

  private async sync(stream: AgentStream): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    stream.expectDelimiter();
    stream.sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n')]));
    // Lines after the delimiter that are not our sync's reply are older replies: skip them.
    for (;;) {
      const value = parseReply('guest-sync-delimited', await stream.nextLine());
      if (value === id) return;
    }
  }
}
