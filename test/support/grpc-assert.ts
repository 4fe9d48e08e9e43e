import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';

/**
 * Asserts that `p` fails with gRPC status `code` and, when given, a details
 * text matching `details` (a RegExp, or a string it must contain).
 */
export async function rejectsWith(p: Promise<unknown>, code: grpc.status, details?: RegExp | string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = err as grpc.ServiceError;
    assert.equal(grpc.status[e.code], grpc.status[code], `status of: ${e.details}`);
    if (typeof details === 'string') assert.ok(e.details.includes(details), `${e.details} contains ${details}`);
    else if (details) assert.match(e.details, details);
    return true;
  });
}
