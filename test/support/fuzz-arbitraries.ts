/**
 * fast-check arbitraries for requests of any protobuf message type, built
 * from the type's reflection: hostile strings, integer extremes, bools, enums
 * (valid names and out-of-range numbers), nested messages, oneofs, repeated
 * and map fields; valid requests mutated in one or two fields; and malformed
 * encodings (random bytes, truncated valid encodings, broken wire forms).
 */
import fc from 'fast-check';
import * as protobuf from 'protobufjs';
import { encodeMessage, type FuzzMethod } from './fuzz-proto';

/** What the generators know about the daemons under test. */
export interface FuzzContext {
  /** Field name (camelCase, as in protobufjs) → values that mean something to the daemon: existing names, uuids, dirs. */
  byField: Record<string, readonly string[]>;
  /** Hostile strings tried in every string field (traversals, decoy targets, injections, ...). */
  hostile: readonly string[];
  /** Instance names a destructive call never gets: the instances the rest of the run needs. */
  protectedNames: readonly string[];
  /** Whether a string at this field path (e.g. "InstanceRemove.name") may destroy what the run needs. */
  destructive(fieldPath: string): boolean;
  /** Fields (e.g. "SubmitJob.clusterRenewCrypto") never generated: they would replace the run's own certificates. */
  excluded?(fieldPath: string): boolean;
  /** Valid requests per method name, the starting points of the mutated requests. */
  templates: Record<string, readonly object[]>;
}

export type FuzzRequest =
  | { kind: 'message'; value: Record<string, unknown> }
  | { kind: 'bytes'; why: 'random' | 'truncated' | 'broken'; bytes: Uint8Array };

const HUGE = 100 * 1024;

/** Huge strings, built once (about 100 KB each). */
export const HUGE_STRINGS: readonly string[] = [
  'A'.repeat(HUGE),
  'é'.repeat(HUGE / 2),
  `${'../'.repeat(HUGE / 3)}x`,
  `${'a,b=c'.repeat(HUGE / 5)}`,
];

/** Wire forms no decoder may accept: a length past the end, a varint of 11 bytes, wire types 6/7, a group start, field 0. */
const BROKEN: readonly number[][] = [
  [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
  [0x0a, 0x05, 0x41],
  [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x0e],
  [0x0f, 0x00],
  [0x0b, 0x08, 0x01],
  [0x00, 0x01],
  [0x12, 0x80],
];

const INT32_EXTREMES = [0, -1, 1, 2, 3, 4, 8, 64, 255, 256, 1024, 65536, 2147483647, -2147483648];
const INT64_EXTREMES = ['0', '-1', '1', '2', '256', '512', '1024', '4096', '4294967296', '9007199254740993',
  String(8 * 1024 * 1024), String(32 * 1024 * 1024), String(2 ** 40), '9223372036854775807', '-9223372036854775808'];
const UINT64_EXTREMES = ['0', '1', '18446744073709551615', '9223372036854775808'];

class Builder {
  constructor(private readonly ctx: FuzzContext) {}

  string(fieldName: string, fieldPath: string): fc.Arbitrary<string> {
    const guard = this.ctx.destructive(fieldPath);
    const specific = (this.ctx.byField[fieldName] ?? []).filter((s) => !guard || !this.ctx.protectedNames.includes(s));
    const seeds = [...specific, ...this.ctx.hostile];
    const parts: fc.WeightedArbitrary<string>[] = [
      { weight: 3, arbitrary: fc.constantFrom(...this.ctx.hostile) },
      { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
      { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
      { weight: 1, arbitrary: fc.constantFrom(...HUGE_STRINGS) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.constantFrom(...seeds), fc.constantFrom(',', '=', ',id=x', '\0', '/../', '\n', ':', ' '), fc.constantFrom(...seeds))
          .map(([a, sep, b]) => `${a}${sep}${b}`),
      },
    ];
    if (specific.length > 0) parts.push({ weight: 5, arbitrary: fc.constantFrom(...specific) });
    return fc.oneof(...parts);
  }

  scalar(type: string, fieldName: string, fieldPath: string): fc.Arbitrary<unknown> {
    switch (type) {
      case 'string':
        return this.string(fieldName, fieldPath);
      case 'bool':
        return fc.boolean();
      case 'bytes':
        return fc.uint8Array({ maxLength: 64 });
      case 'double':
      case 'float':
        return fc.oneof(fc.double(), fc.constantFrom(0, -1, 1e308, Number.NaN, Number.POSITIVE_INFINITY));
      case 'int32':
      case 'sint32':
      case 'sfixed32':
        return fc.oneof(fc.constantFrom(...INT32_EXTREMES), fc.integer({ min: -8, max: 80 }), fc.integer());
      case 'uint32':
      case 'fixed32':
        return fc.oneof(fc.constantFrom(0, 1, 2, 4, 1024, 4294967295), fc.nat());
      case 'uint64':
      case 'fixed64':
        return fc.oneof(fc.constantFrom(...UINT64_EXTREMES), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String));
      default: // int64, sint64, sfixed64
        return fc.oneof(
          fc.constantFrom(...INT64_EXTREMES),
          fc.integer({ min: -8, max: 4096 }).map(String),
          fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
        );
    }
  }

  single(field: protobuf.Field, fieldPath: string, depth: number): fc.Arbitrary<unknown> {
    const rt = field.resolvedType;
    if (rt instanceof protobuf.Enum) {
      const numbers = Object.values(rt.values);
      return fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...Object.keys(rt.values)) },
        { weight: 1, arbitrary: fc.constantFrom(...numbers) },
        { weight: 2, arbitrary: fc.oneof(fc.integer({ min: -3, max: 100 }), fc.constantFrom(2147483647, -2147483648)) },
      );
    }
    if (rt instanceof protobuf.Type) return this.message(rt, fieldPath, depth + 1);
    return this.scalar(field.type, field.name, fieldPath);
  }

  field(field: protobuf.Field, fieldPath: string, depth: number): fc.Arbitrary<unknown> {
    if (field instanceof protobuf.MapField) {
      const key = this.string(`${field.name}.key`, `${fieldPath}.key`);
      return fc.dictionary(key, this.scalar(field.type, `${field.name}.value`, fieldPath), { maxKeys: 4 });
    }
    const one = this.single(field, fieldPath, depth);
    return field.repeated ? fc.array(one, { maxLength: 5 }) : one;
  }

  /** A message with any subset of its fields, at most one member per oneof. */
  message(type: protobuf.Type, path: string, depth = 0): fc.Arbitrary<Record<string, unknown>> {
    if (depth > 5) return fc.constant({});
    const plain: Record<string, fc.Arbitrary<unknown>> = {};
    const allowed = (f: protobuf.Field): boolean => !this.ctx.excluded?.(`${path}.${f.name}`);
    for (const f of type.fieldsArray) if (!f.partOf && allowed(f)) plain[f.name] = this.field(f, `${path}.${f.name}`, depth);
    const oneofs = type.oneofsArray.map((o) =>
      fc.oneof(
        fc.constant({}),
        ...o.fieldsArray.filter(allowed).map((f) => this.field(f, `${path}.${f.name}`, depth).map((v) => ({ [f.name]: v }))),
      ),
    );
    return fc.tuple(fc.record(plain, { requiredKeys: [] }), ...oneofs).map((parts) => Object.assign({}, ...parts));
  }

  /** A valid request with one or two fields (anywhere in it) replaced by generated values. */
  mutated(method: FuzzMethod, templates: readonly object[]): fc.Arbitrary<Record<string, unknown>> {
    const leaves = leafFields(method.request, []).filter((l) => !this.ctx.excluded?.(`${method.name}.${l.path.join('.')}`));
    if (leaves.length === 0) return fc.constantFrom(...templates).map((t) => structuredClone(t) as Record<string, unknown>);
    const mutation = fc
      .constantFrom(...leaves)
      .chain((leaf) => this.field(leaf.field, `${method.name}.${leaf.path.join('.')}`, leaf.path.length).map((v) => ({ path: leaf.path, v })));
    return fc.tuple(fc.constantFrom(...templates), fc.array(mutation, { maxLength: 2 })).map(([t, ms]) => {
      const out = structuredClone(t) as Record<string, unknown>;
      for (const m of ms) setPath(out, m.path, m.v);
      return out;
    });
  }
}

interface Leaf {
  path: string[];
  field: protobuf.Field;
}

/** Every field reachable through singular message fields (the mutation points of a template). */
function leafFields(type: protobuf.Type, prefix: string[], depth = 0): Leaf[] {
  const out: Leaf[] = [];
  for (const f of type.fieldsArray) {
    const p = [...prefix, f.name];
    out.push({ path: p, field: f });
    if (depth < 3 && !f.repeated && !(f instanceof protobuf.MapField) && f.resolvedType instanceof protobuf.Type)
      out.push(...leafFields(f.resolvedType, p, depth + 1));
  }
  return out;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const key of path.slice(0, -1)) {
    const next = cur[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[key] = {};
    cur = cur[key] as Record<string, unknown>;
  }
  cur[path[path.length - 1]] = value;
}

/** Requests for one method: generated and mutated messages, and malformed encodings (about a quarter). */
export function requestArbitrary(method: FuzzMethod, ctx: FuzzContext): fc.Arbitrary<FuzzRequest> {
  const b = new Builder(ctx);
  const random = b.message(method.request, method.name);
  const templates = ctx.templates[method.name] ?? [];
  const structured = templates.length > 0 ? fc.oneof({ weight: 3, arbitrary: random }, { weight: 2, arbitrary: b.mutated(method, templates) }) : random;
  const asMessage = structured.map((value): FuzzRequest => ({ kind: 'message', value }));
  const randomBytes = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes): FuzzRequest => ({ kind: 'bytes', why: 'random', bytes }));
  const truncated = fc.tuple(structured, fc.nat()).map(([value, n]): FuzzRequest => {
    const full = encodeMessage(method.request, value);
    const bytes = full.length < 2 ? Uint8Array.from([0x0a]) : full.subarray(0, 1 + (n % (full.length - 1)));
    return { kind: 'bytes', why: 'truncated', bytes };
  });
  const broken = fc.constantFrom(...BROKEN).map((b2): FuzzRequest => ({ kind: 'bytes', why: 'broken', bytes: Uint8Array.from(b2) }));
  return fc.oneof(
    { weight: 9, arbitrary: asMessage },
    { weight: 1, arbitrary: randomBytes },
    { weight: 1, arbitrary: truncated },
    { weight: 1, arbitrary: broken },
  );
}

/** The wire bytes of a request. */
export function requestBytes(method: FuzzMethod, req: FuzzRequest): Buffer {
  return req.kind === 'bytes' ? Buffer.from(req.bytes) : encodeMessage(method.request, req.value);
}

/** A short, readable form of a request for a failure message (long strings cut, bytes as hex). */
export function describeRequest(req: FuzzRequest, max = 600): string {
  if (req.kind === 'bytes') {
    const hex = Buffer.from(req.bytes).toString('hex');
    return `${req.why} bytes (${req.bytes.length}): ${hex.length > 200 ? `${hex.slice(0, 200)}…` : hex}`;
  }
  const text = JSON.stringify(req.value, (_k, v: unknown) => {
    if (typeof v === 'string' && v.length > 60) return `${v.slice(0, 40)}…(${v.length} chars)`;
    if (v instanceof Uint8Array) return `bytes:${Buffer.from(v).toString('hex').slice(0, 40)}`;
    return v;
  });
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
