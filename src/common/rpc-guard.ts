/**
 * The checks every gRPC call to a gnt-hotplug daemon passes before its
 * handler runs, in one wrapper around a service definition and its handlers
 * (used by src/noded/server.ts and src/master/server.ts):
 *
 *  1. who: the peer certificate's role (cert-roles.ts), or the local
 *     administrator on the master's unix socket (policy.caller), must be allowed for
 *     the method (policy.allow); no usable certificate or no role is
 *     UNAUTHENTICATED, a role not allowed or a revoked certificate is
 *     PERMISSION_DENIED, the message naming the role presented and what is
 *     needed;
 *  2. well-formed: a request that does not parse is INVALID_ARGUMENT (grpc-js
 *     itself would answer INTERNAL), and so is a string field longer than
 *     maxFieldChars (a name or a MAC is never kilobytes long);
 *  3. bounded work: at most maxInFlight calls per peer certificate run at
 *     once, the excess is RESOURCE_EXHAUSTED at once;
 *  4. bounded replies: every status message is cut to MAX_STATUS_DETAILS
 *     bytes, so an error that echoes a big input cannot overflow the HTTP/2
 *     header limit (the reply would never arrive and the channel would hang).
 *
 * The message sizes a server and a client accept are fixed by
 * CHANNEL_LIMITS (grpc.max_receive_message_length / max_send_message_length).
 */
import * as grpc from '@grpc/grpc-js';
import { CertRoleError, describeRole, peerFacts, type CertFacts, type CertRole } from './cert-roles';
import { boundedDetails, excerpt } from './excerpt';

import { MAX_MESSAGE_BYTES } from './proto';

export { MAX_MESSAGE_BYTES };

/** Channel and server options every gnt-hotplug server and client uses. */
export const CHANNEL_LIMITS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

/** Calls one peer certificate may have running at once, by default. */
export const DEFAULT_MAX_IN_FLIGHT = 64;

/** Characters a string field of a request may have, by default. */
export const DEFAULT_MAX_FIELD_CHARS = 8192;

export interface GuardPolicy {
  /** What is served, for messages ("node daemon node1", "master"). */
  service: string;
  /**
   * Whether `role` may call `method`: undefined when it may, else what is
   * needed ("the master certificate").
   */
  allow(method: string, role: CertRole): string | undefined;
  /** Why a certificate is refused although its role fits (revoked), or undefined. */
  refuse?(facts: CertFacts): string | undefined;
  /** Calls per peer certificate at once (default DEFAULT_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /** Characters per string field (default DEFAULT_MAX_FIELD_CHARS). */
  maxFieldChars?: number;
  /** Request fields (top-level, camelCase) that may be longer, per method, e.g. { InstanceReceive: ['runtimeJson'] }. */
  longFields?: Record<string, string[]>;
  /** Refusals are reported here (one line each). */
  log?: (line: string) => void;
  /**
   * Who the caller is. Default: the TLS peer certificate (callerOf). The
   * master's local unix socket, which only root can open, answers
   * cert-roles.ts LOCAL_ADMIN: never give this for a TCP listener.
   */
  caller?: (call: { getAuthContext(): { sslPeerCertificate?: object } | null }) => CertFacts;
}

/** The error a guard check raises, with its status code. */
export class GuardError extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
    this.name = 'GuardError';
  }
}

/** What requestDeserialize returns for bytes that are not a valid message. */
class MalformedRequest {
  constructor(readonly reason: string) {}
}

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

/** The role and fingerprint of the caller, or a GuardError. */
export function callerOf(call: { getAuthContext(): { sslPeerCertificate?: object } | null }): CertFacts {
  const peer = call.getAuthContext()?.sslPeerCertificate as { subjectaltname?: string; raw?: Buffer } | undefined;
  if (!peer || !peer.raw) throw new GuardError(grpc.status.UNAUTHENTICATED, 'no client certificate was presented: a certificate signed by the cluster CA is needed');
  try {
    return peerFacts(peer);
  } catch (err) {
    if (err instanceof CertRoleError) throw new GuardError(grpc.status.UNAUTHENTICATED, err.message);
    throw err;
  }
}

/** Finds the first string (or bytes) field longer than `max`, as "path (N chars)". */
function overlongField(value: unknown, max: number, skip: Set<string>, at = ''): string | undefined {
  if (typeof value === 'string') return value.length > max ? `${at || 'request'} (${value.length} characters)` : undefined;
  if (Buffer.isBuffer(value)) return value.length > max ? `${at || 'request'} (${value.length} bytes)` : undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = overlongField(value[i], max, skip, `${at}[${i}]`);
      if (found) return found;
    }
    return undefined;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const path = at ? `${at}.${k}` : k;
      if (!at && skip.has(k)) continue;
      const found = overlongField(v, max, skip, path);
      if (found) return found;
    }
  }
  return undefined;
}

/** A status error for a callback or a stream, with bounded details. */
function statusOf(code: grpc.status, message: string): grpc.ServiceError {
  const details = boundedDetails(message);
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

function boundError(err: grpc.ServerErrorResponse | Partial<grpc.StatusObject>): grpc.ServerErrorResponse | Partial<grpc.StatusObject> {
  const e = err as { details?: string; message?: string };
  const details = boundedDetails(e.details || e.message || 'error');
  if (err instanceof Error) {
    return Object.assign(err, { details, message: details });
  }
  return { ...err, details, ...('message' in err ? { message: details } : {}) };
}

export interface GuardedService {
  definition: grpc.ServiceDefinition;
  handlers: grpc.UntypedServiceImplementation;
  /** Calls running now, per peer fingerprint (tests and diagnostics). */
  inFlight(): Map<string, number>;
}

/**
 * Wraps `definition` and `handlers` with the checks of this module. Only
 * unary and server-streaming methods are served (the only kinds in proto/).
 */
export function guardService(definition: grpc.ServiceDefinition, handlers: object, policy: GuardPolicy): GuardedService {
  const maxInFlight = policy.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  const maxField = policy.maxFieldChars ?? DEFAULT_MAX_FIELD_CHARS;
  const running = new Map<string, number>();
  const guardedDef: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const guardedHandlers: grpc.UntypedServiceImplementation = {};
  const impl = handlers as Record<string, grpc.UntypedHandleCall>;

  for (const [method, def] of Object.entries(definition)) {
    if (def.requestStream) throw new Error(`rpc-guard: ${method} streams requests, which this guard does not serve`);
    const requestType = (def as { requestType?: { type?: { name?: string } } }).requestType?.type?.name ?? 'request';
    guardedDef[method] = {
      ...def,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return def.requestDeserialize(bytes);
        } catch (err) {
          return new MalformedRequest(`${requestType} does not parse: ${excerpt((err as Error).message, 80)}`);
        }
      },
    };
    const handler = impl[method];
    if (!handler) continue;
    const skip = new Set(policy.longFields?.[method] ?? []);

    /** Runs the checks; returns the caller's fingerprint, or throws a GuardError. */
    const admit = (call: AnyCall): string => {
      const caller = (policy.caller ?? callerOf)(call as unknown as Parameters<typeof callerOf>[0]);
      const needed = policy.allow(method, caller.role);
      if (needed)
        throw new GuardError(grpc.status.PERMISSION_DENIED, `${policy.service}: ${method} needs ${needed}; the caller presented the certificate of ${describeRole(caller.role)}`);
      const refused = policy.refuse?.(caller);
      if (refused) throw new GuardError(grpc.status.PERMISSION_DENIED, `${policy.service}: ${refused}`);
      const req = call.request as unknown;
      if (req instanceof MalformedRequest) throw new GuardError(grpc.status.INVALID_ARGUMENT, `malformed ${method} request: ${req.reason}`);
      const long = overlongField(req, maxField, skip);
      if (long) throw new GuardError(grpc.status.INVALID_ARGUMENT, `${method}: field ${long} is too long; at most ${maxField} are accepted`);
      const n = running.get(caller.fingerprint) ?? 0;
      if (n >= maxInFlight)
        throw new GuardError(grpc.status.RESOURCE_EXHAUSTED, `${policy.service}: ${n} calls of this certificate (${describeRole(caller.role)}) are already running, the limit is ${maxInFlight}; retry when some have finished`);
      running.set(caller.fingerprint, n + 1);
      return caller.fingerprint;
    };
    const release = (fingerprint: string): void => {
      const n = (running.get(fingerprint) ?? 1) - 1;
      if (n <= 0) running.delete(fingerprint);
      else running.set(fingerprint, n);
    };
    const refusal = (err: unknown): grpc.ServiceError => {
      const e = err instanceof GuardError ? err : new GuardError(grpc.status.INTERNAL, (err as Error).message);
      policy.log?.(`refused ${method}: ${grpc.status[e.code]}: ${boundedDetails(e.message, 200)}`);
      return statusOf(e.code, e.message);
    };

    if (!def.responseStream) {
      const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
      guardedHandlers[method] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        let fingerprint: string;
        try {
          fingerprint = admit(call);
        } catch (err) {
          callback(refusal(err), null);
          return;
        }
        let done = false;
        const finish: grpc.sendUnaryData<unknown> = (err, value, trailer, flags) => {
          if (done) return;
          done = true;
          release(fingerprint);
          if (err) callback(boundError(err), null, trailer, flags);
          else callback(null, value, trailer, flags);
        };
        try {
          unary(call, finish);
        } catch (err) {
          finish(statusOf(grpc.status.INTERNAL, (err as Error).message), null);
        }
      }) as grpc.handleUnaryCall<unknown, unknown>;
    } else {
      const stream = handler as grpc.handleServerStreamingCall<unknown, unknown>;
      guardedHandlers[method] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        let fingerprint: string;
        try {
          fingerprint = admit(call);
        } catch (err) {
          call.emit('error', refusal(err));
          return;
        }
        let done = false;
        const finish = (): void => {
          if (done) return;
          done = true;
          release(fingerprint);
        };
        for (const ev of ['finish', 'cancelled', 'close', 'error']) call.once(ev, finish);
        stream(call);
      }) as grpc.handleServerStreamingCall<unknown, unknown>;
    }
  }
  return { definition: guardedDef as grpc.ServiceDefinition, handlers: guardedHandlers, inFlight: () => new Map(running) };
}
