/**
 * Error mapping for gRPC replies: a HypervisorError's code is the name of the
 * gRPC status code it becomes; anything else is INTERNAL with its message.
 */
import * as grpc from '@grpc/grpc-js';
import { HypervisorError, type HypervisorErrorCode } from '../hypervisor/errors';

/** An error raised by the node daemon itself, with the gRPC code it maps to. */
export class NodeError extends HypervisorError {
  constructor(code: HypervisorErrorCode, message: string) {
    super(code, message);
  }
}

export const notFound = (message: string): NodeError => new NodeError('NOT_FOUND', message);
export const invalidArgument = (message: string): NodeError => new NodeError('INVALID_ARGUMENT', message);
export const failedPrecondition = (message: string): NodeError => new NodeError('FAILED_PRECONDITION', message);
export const resourceExhausted = (message: string): NodeError => new NodeError('RESOURCE_EXHAUSTED', message);

const CODES: Record<HypervisorErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  INTERNAL: grpc.status.INTERNAL,
};

export interface StatusError {
  code: grpc.status;
  details: string;
}

export function toStatus(err: unknown): StatusError {
  if (err instanceof HypervisorError) return { code: CODES[err.code] ?? grpc.status.INTERNAL, details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: grpc.status.INTERNAL, details: message || 'internal error' };
}

/** The name of a status code, e.g. "NOT_FOUND", for logs. */
export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? String(code);
}
