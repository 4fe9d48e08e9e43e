/**
 * The per-request properties of the fuzz test, run with fast-check against a
 * live daemon: every call ends with a proper gRPC status within its bound,
 * malformed bytes are INVALID_ARGUMENT, the status message is bounded, and
 * afterwards the daemon still runs and the same channel still answers.
 */
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { describeRequest, requestArbitrary, requestBytes, type FuzzContext, type FuzzRequest } from './fuzz-arbitraries';
import type { RawChannel } from './fuzz-client';
import { decodes, type FuzzMethod } from './fuzz-proto';

/** The bound of an ordinary call. */
export const DEADLINE_MS = 2_000;
/** The bound of a method that legitimately waits (listed in FuzzTarget.longPoll, with why, in docs/testing.md). */
export const LONG_POLL_MS = 15_000;
/** Bytes of a status message at most. */
export const MAX_DETAILS_BYTES = 2_048;
/** Requests a failing property may spend on shrinking (each is a real call). */
const SHRINK_CALLS = 20;
const SHRINK_MS = 10_000;

/** Codes no request may get: they mean a bug (UNKNOWN, INTERNAL), a hang, or a transport that broke. */
const IMPROPER = new Set<grpc.status>([
  grpc.status.UNKNOWN, grpc.status.INTERNAL, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNIMPLEMENTED,
  grpc.status.DATA_LOSS, grpc.status.CANCELLED, grpc.status.UNAUTHENTICATED,
]);

export interface FuzzTarget {
  label: string;
  channel: RawChannel;
  /** The cheap call that shows the channel still answers, e.g. the NodeInfo path. */
  healthPath: string;
  /** Methods allowed to take up to LONG_POLL_MS. */
  longPoll: ReadonlySet<string>;
  alive(): boolean;
  /** The end of the daemons' stderr, shown when one died. */
  logTail(): string;
  /** Starts the daemon again after it died, so that the rest of the run still means something. */
  revive(): Promise<void>;
}

export interface MethodFailure {
  method: string;
  request: string;
  problem: string;
  shrinks: number;
}

export interface MethodStats {
  requests: number;
  codes: Record<string, number>;
}

const codeName = (c: grpc.status): string => grpc.status[c] ?? String(c);

const boundOf = (t: FuzzTarget, method: FuzzMethod): number => (t.longPoll.has(method.name) ? LONG_POLL_MS : DEADLINE_MS);

/** Kinds of failure that cost a full bound per call (hangs): not shrunk, the request is reported as generated. */
const isHang = (kind: string): boolean => /DEADLINE_EXCEEDED|no longer answers|died/.test(kind);

/** Sends one request and returns what is wrong with the outcome ('' when nothing). */
async function checkOne(t: FuzzTarget, method: FuzzMethod, req: FuzzRequest, stats: MethodStats): Promise<string> {
  const bytes = requestBytes(method, req);
  const malformed = req.kind === 'bytes' && !decodes(method.request, bytes);
  const bound = boundOf(t, method);
  const out = await t.channel.call(method, bytes, bound);
  stats.requests++;
  const name = out.cutAtBound ? 'STREAMING_AT_BOUND' : codeName(out.code);
  stats.codes[name] = (stats.codes[name] ?? 0) + 1;
  const problems: string[] = [];
  if (!out.cutAtBound) {
    if (malformed && out.code !== grpc.status.INVALID_ARGUMENT)
      problems.push(`malformed bytes answered ${name} (expected INVALID_ARGUMENT)`);
    else if (IMPROPER.has(out.code)) problems.push(`answered ${name} after ${out.ms} ms (bound ${bound} ms)`);
    const size = Buffer.byteLength(out.details ?? '');
    if (size > MAX_DETAILS_BYTES) problems.push(`status message of ${size} bytes (at most ${MAX_DETAILS_BYTES})`);
    if (problems.length > 0) problems.push(`details: ${JSON.stringify((out.details ?? '').slice(0, 160))}`);
  }
  if (!t.alive()) {
    problems.push(`${t.label} died; its stderr ends: ${JSON.stringify(t.logTail().slice(-700))}`);
    await t.revive();
    return problems.join('; ');
  }
  const health = await t.channel.unary(t.healthPath, Buffer.alloc(0), 3_000);
  if (health.code !== grpc.status.OK) {
    // A daemon that crashed while answering may not have been reaped yet: give its exit a moment to show.
    await new Promise((r) => setTimeout(r, 300));
    if (!t.alive()) {
      problems.push(`${t.label} died; its stderr ends: ${JSON.stringify(t.logTail().slice(-700))}`);
      await t.revive();
      t.channel.reopen();
      return problems.join('; ');
    }
    problems.push(`the same channel no longer answers ${t.healthPath.split('/').pop()}: ${codeName(health.code)} ${health.details.slice(0, 120)}`);
    t.channel.reopen();
  }
  return problems.join('; ');
}

/** The kind of a problem, without its details and numbers: failures of one kind are reported (and shrunk) once. */
export function problemKind(problem: string): string {
  return problem
    .split('; ')
    .filter((p) => !p.startsWith('details:'))
    .map((p) => p.replace(/\d+/g, 'N').replace(/: .*$/, ''))
    .join('; ');
}

/**
 * Runs `runs` generated requests of one method and returns one failure per
 * kind of problem, each with its request shrunk by replaying that run
 * (fast-check's seed and path) within SHRINK_CALLS and SHRINK_MS.
 */
export async function fuzzMethod(
  t: FuzzTarget, method: FuzzMethod, ctx: FuzzContext, runs: number, seed: number, stats: MethodStats, budgetMs: number,
): Promise<MethodFailure[]> {
  const arb = requestArbitrary(method, ctx);
  const first = new Map<string, { index: number; problem: string; request: FuzzRequest }>();
  let index = 0;
  const endBy = Date.now() + budgetMs;
  await fc.check(
    fc.asyncProperty(arb, async (req) => {
      // Past the method's time budget (calls that hang): the remaining runs are not sent, and the shortfall is a failure.
      if (Date.now() > endBy) return true;
      const problem = await checkOne(t, method, req, stats);
      const kind = problemKind(problem);
      if (problem && !first.has(kind)) first.set(kind, { index, problem, request: req });
      index++;
      return true;
    }),
    { numRuns: runs, seed },
  );
  const failures: MethodFailure[] = [];
  if (stats.requests < runs)
    failures.push({ method: `${t.label} ${method.name}`, request: '-', shrinks: 0,
      problem: `only ${stats.requests} of ${runs} requests within the method's budget of ${budgetMs} ms (calls that hang)` });
  for (const [kind, f] of first) failures.push(await shrink(t, method, arb, seed, kind, f, stats));
  return failures;
}

async function shrink(
  t: FuzzTarget, method: FuzzMethod, arb: fc.Arbitrary<FuzzRequest>, seed: number, kind: string,
  f: { index: number; problem: string; request: FuzzRequest }, stats: MethodStats,
): Promise<MethodFailure> {
  const t0 = Date.now();
  let calls = 0;
  if (isHang(kind)) return { method: `${t.label} ${method.name}`, request: describeRequest(f.request), problem: f.problem, shrinks: 0 };
  const r = await fc.check(
    fc.asyncProperty(arb, async (req) => {
      if (++calls > SHRINK_CALLS || Date.now() - t0 > SHRINK_MS) return true;
      const problem = await checkOne(t, method, req, stats);
      if (problemKind(problem) === kind) throw new Error(problem);
      return true;
    }),
    { seed, path: String(f.index), numRuns: 1 },
  );
  const shrunk = r.failed && r.counterexample;
  return {
    method: `${t.label} ${method.name}`,
    request: describeRequest(shrunk ? r.counterexample![0] : f.request),
    problem: shrunk && r.errorInstance instanceof Error ? r.errorInstance.message : f.problem,
    shrinks: shrunk ? r.numShrinks : 0,
  };
}

/** A per-method seed from the run's seed, so that a method's requests do not depend on the methods before it. */
export function methodSeed(seed: number, method: string): number {
  let h = seed >>> 0;
  for (const ch of method) h = (Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0);
  return h | 0;
}

export function formatFailures(failures: MethodFailure[]): string {
  return failures
    .map((f) => `- ${f.method}: ${f.problem}\n    request (shrunk ${f.shrinks}x): ${f.request}`)
    .join('\n');
}
