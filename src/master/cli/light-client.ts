/**
 * A small gRPC client over Node's own HTTP/2 for the master's local unix
 * socket (master/local-socket.ts), so that a CLI command on the master
 * loads neither @grpc/grpc-js nor the TLS stack: the request is one HTTP/2
 * POST of length-prefixed protobuf messages (the gRPC wire format), the
 * status comes in the trailers. The codecs are the static ones of
 * common/proto.ts, the same grpc-js uses.
 *
 * It offers what the CLI calls on a grpc-js MasterClient: unary methods
 * (request, [options,] callback) and server-streaming methods (request)
 * returning a stream with 'data', 'error' and 'end', and close(). Errors
 * carry the gRPC status code and details as grpc-js's ServiceError does.
 * TLS connections keep using grpc-js (client.ts).
 */
import { EventEmitter } from 'node:events';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { MAX_MESSAGE_BYTES, methodTable, type MethodCodec } from '../../common/proto';

/** The gRPC status codes used here (the numbers of grpc-js's `status`). */
export const Status = { OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, RESOURCE_EXHAUSTED: 8, INTERNAL: 13, UNAVAILABLE: 14 } as const;

/** A failed call, shaped as grpc-js's ServiceError (code, details, message). */
export class LightCallError extends Error {
  constructor(readonly code: number, readonly details: string) {
    super(`${code} ${details}`);
    this.name = 'LightCallError';
  }
}

/** The 5-byte gRPC message prefix (not compressed, big-endian length) and the message. */
function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** Cuts the response body into messages as it arrives. */
class Deframer {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.pending.length >= 5) {
      if (this.pending[0] !== 0) throw new LightCallError(Status.INTERNAL, 'the master sent a compressed message, which this client did not ask for');
      const len = this.pending.readUInt32BE(1);
      if (len > MAX_MESSAGE_BYTES) throw new LightCallError(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs. ${MAX_MESSAGE_BYTES})`);
      if (this.pending.length < 5 + len) break;
      out.push(this.pending.subarray(5, 5 + len));
      this.pending = this.pending.subarray(5 + len);
    }
    return out;
  }

  get leftover(): number {
    return this.pending.length;
  }
}

function decodeMessage(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

type Headers = http2.IncomingHttpHeaders;

/** The call's status from response headers (trailers-only) or trailers. */
function statusOf(h: Headers): { code: number; details: string } | undefined {
  const raw = h['grpc-status'];
  if (raw === undefined) return undefined;
  const code = Number(Array.isArray(raw) ? raw[0] : raw);
  const msg = h['grpc-message'];
  return { code: Number.isInteger(code) ? code : Status.UNKNOWN, details: decodeMessage(String(Array.isArray(msg) ? msg[0] : (msg ?? ''))) };
}

interface CallOptions {
  deadline?: number | Date;
}

/** A connection to one unix socket, opened at the first call. */
export class LightChannel {
  private session?: http2.ClientHttp2Session;
  private failure?: Error;

  constructor(readonly socketPath: string) {}

  private open(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(this.socketPath) });
    session.on('error', (err) => (this.failure = err));
    this.session = session;
    return session;
  }

  close(): void {
    this.session?.close();
  }

  /**
   * Starts one call: `onMessage` for each reply message, then exactly one
   * `onEnd` with an error or undefined. Returns a cancel function.
   */
  start(m: MethodCodec, request: unknown, options: CallOptions, onMessage: (msg: unknown) => void, onEnd: (err?: LightCallError) => void): () => void {
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    let stream: http2.ClientHttp2Stream | undefined;
    const end = (err?: LightCallError) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      if (err && stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      onEnd(err);
    };
    let body: Buffer;
    try {
      body = frame(m.serializeRequest(request));
    } catch (err) {
      process.nextTick(() => end(new LightCallError(Status.INTERNAL, `Request message serialization failure: ${(err as Error).message}`)));
      return () => undefined;
    }
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'POST', ':path': m.path, 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'gnt-cli-light/1',
    };
    if (options.deadline !== undefined) {
      const ms = Math.max(1, Math.ceil(Number(options.deadline) - Date.now()));
      // The gRPC timeout header has at most 8 digits.
      headers['grpc-timeout'] = ms <= 99_999_999 ? `${ms}m` : `${Math.min(99_999_999, Math.ceil(ms / 1000))}S`;
      timer = setTimeout(() => end(new LightCallError(Status.DEADLINE_EXCEEDED, 'Deadline exceeded')), ms);
    }
    const session = this.open();
    const unavailable = (err: Error) => end(new LightCallError(Status.UNAVAILABLE, `connect to unix:${this.socketPath} failed: ${err.message}`));
    if (this.failure) {
      const f = this.failure;
      process.nextTick(() => unavailable(f));
      return () => undefined;
    }
    session.once('error', unavailable);
    const s = session.request(headers);
    stream = s;
    const deframer = new Deframer();
    let status: { code: number; details: string } | undefined;
    s.on('response', (h: Headers) => {
      status = statusOf(h);
      if (!status && Number(h[":status"]) !== 200) status = { code: Status.UNKNOWN, details: `the master answered HTTP ${String(h[':status'])}` };
    });
    s.on('data', (chunk: Buffer) => {
      if (ended) return;
      try {
        for (const msg of deframer.push(chunk)) onMessage(m.deserializeResponse(msg));
      } catch (err) {
        end(err instanceof LightCallError ? err : new LightCallError(Status.INTERNAL, `Response message parsing error: ${(err as Error).message}`));
      }
    });
    s.on('trailers', (h: Headers) => (status = statusOf(h) ?? status));
    s.on('error', (err: Error) => end(new LightCallError(Status.UNAVAILABLE, err.message)));
    s.on('close', () => {
      session.off('error', unavailable);
      if (!status) return end(new LightCallError(this.failure ? Status.UNAVAILABLE : Status.INTERNAL, this.failure?.message ?? 'the master closed the call without a status'));
      if (status.code !== Status.OK) return end(new LightCallError(status.code, status.details));
      if (deframer.leftover) return end(new LightCallError(Status.INTERNAL, 'the master ended the call inside a message'));
      end();
    });
    s.end(body);
    return () => end(new LightCallError(Status.CANCELLED, 'Cancelled on client'));
  }
}

type Callback = (err: LightCallError | null, reply?: unknown) => void;

/**
 * A client for `service` of `file` whose methods have grpc-js's calling
 * conventions; cast by the caller to the generated client type.
 */
export function lightClient(channel: LightChannel, file: 'master.proto', service: string): Record<string, unknown> & { close(): void } {
  const methods = methodTable(file).get(service);
  if (!methods) throw new Error(`no service ${service} in ${file}`);
  const client: Record<string, unknown> & { close(): void } = { close: () => channel.close() };
  for (const m of Object.values(methods)) {
    if (m.requestStream) continue;
    if (!m.responseStream) {
      client[m.name] = (request: unknown, ...rest: unknown[]) => {
        const cb = rest.find((a): a is Callback => typeof a === 'function');
        if (!cb) throw new Error(`${m.name}: a callback is needed`);
        const options = (rest.find((a) => a && typeof a === 'object' && 'deadline' in a) ?? {}) as CallOptions;
        let reply: unknown;
        const cancel = channel.start(m, request, options, (msg) => (reply = msg), (err) => {
          if (err) cb(err);
          else if (reply === undefined) cb(new LightCallError(Status.INTERNAL, 'No message received'));
          else cb(null, reply);
        });
        return { cancel };
      };
    } else {
      client[m.name] = (request: unknown, options: CallOptions = {}) => {
        const stream = new EventEmitter() as EventEmitter & { cancel(): void };
        stream.cancel = channel.start(m, request, options, (msg) => stream.emit('data', msg), (err) => (err ? stream.emit('error', err) : stream.emit('end')));
        return stream;
      };
    }
  }
  return client;
}
