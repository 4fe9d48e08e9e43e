/**
 * A generic gRPC client that sends raw bytes (identity serializer), so that
 * the server's own deserializer sees exactly what the fuzzer made, malformed
 * or not; and the outcome of one call as the properties need it.
 */
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import type { Identity } from '../../src/common/pki';
import type { FuzzMethod } from './fuzz-proto';

const identity = (b: Buffer): Buffer => b;

type RawClient = grpc.Client;
const RawClientCtor = grpc.makeGenericClientConstructor({}, 'FuzzRaw');

export interface CallOutcome {
  /** The gRPC status the call ended with (OK included). */
  code: grpc.status;
  details: string;
  ms: number;
  /** Server streaming: the number of messages received before the end. */
  messages: number;
  /** Server streaming: the call was cancelled by us at its bound (still streaming, no status). */
  cutAtBound: boolean;
}

export class RawChannel {
  private client: RawClient;

  constructor(private readonly address: string, private readonly id: Identity, private readonly serverName?: string) {
    this.client = this.open();
  }

  private open(): RawClient {
    const creds = grpc.credentials.createSsl(fs.readFileSync(this.id.ca), fs.readFileSync(this.id.key), fs.readFileSync(this.id.cert));
    const options: grpc.ChannelOptions = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };
    if (this.serverName) options['grpc.ssl_target_name_override'] = this.serverName;
    return new RawClientCtor(this.address, creds, options);
  }

  /** Drops the channel and makes a new one (after a hang, so that the rest of the run is still meaningful). */
  reopen(): void {
    this.client.close();
    this.client = this.open();
  }

  close(): void {
    this.client.close();
  }

  /** A unary call with `bytes`, ending at `deadlineMs` at the latest. */
  unary(path: string, bytes: Buffer, deadlineMs: number): Promise<CallOutcome> {
    const t0 = Date.now();
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(path, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err) => {
        resolve({ code: err ? err.code : grpc.status.OK, details: err ? err.details : '', ms: Date.now() - t0, messages: err ? 0 : 1, cutAtBound: false });
      });
    });
  }

  /** A server-streaming call, read until its end or until `boundMs`, when we cancel it. */
  stream(path: string, bytes: Buffer, boundMs: number): Promise<CallOutcome> {
    const t0 = Date.now();
    return new Promise((resolve) => {
      let messages = 0;
      let cut = false;
      let settled = false;
      const call = this.client.makeServerStreamRequest(path, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + boundMs + 5_000 });
      const timer = setTimeout(() => {
        cut = true;
        call.cancel();
      }, boundMs);
      const done = (code: grpc.status, details: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ code, details, ms: Date.now() - t0, messages, cutAtBound: cut });
      };
      call.on('data', () => messages++);
      call.on('error', (err: grpc.ServiceError) => done(err.code, err.details));
      call.on('status', (s: grpc.StatusObject) => done(s.code, s.details));
    });
  }

  call(method: FuzzMethod, bytes: Buffer, boundMs: number): Promise<CallOutcome> {
    return method.serverStreaming ? this.stream(method.path, bytes, boundMs) : this.unary(method.path, bytes, boundMs);
  }
}
