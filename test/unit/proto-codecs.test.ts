/**
 * The static codecs (src/common/proto.ts, made by scripts/gen-codecs.js)
 * against @grpc/proto-loader parsing the same .proto files with the same
 * options: for every method of every service, random requests and replies
 * must serialize to the same bytes and deserialize to the same objects
 * (camelCase, int64 as strings, enums as names, defaults, oneofs). A .proto
 * changed without rebuilding the codecs fails here.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';
import { methodTable, PROTO_DIR, type ProtoFile } from '../../src/common/proto';

/** A small deterministic PRNG (mulberry32), so that a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = ['', 'web1', 'node-1.example', 'ünïcødé', 'a'.repeat(300), '0', '-', '{"k":1}'];
/** The options of `npm run gen:proto` (proto-loader-gen-types), written out: not shared with the code under test. */
const GENERATED_TYPES_OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true };

const INT64 = ['0', '1', '-1', '9007199254740993', '-9223372036854775808', '9223372036854775807', 42, 0, -7];

function scalar(type: string, r: () => number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  switch (type) {
    case 'string': return pick(STRINGS);
    case 'bool': return r() < 0.5;
    case 'int32': case 'sint32': case 'sfixed32': return pick([0, 1, -1, 2147483647, -2147483648, 1234]);
    case 'uint32': case 'fixed32': return pick([0, 1, 4294967295, 77]);
    case 'int64': case 'sint64': case 'sfixed64': return pick(INT64);
    case 'uint64': case 'fixed64': return pick(['0', '1', '18446744073709551615', 5]);
    case 'double': case 'float': return pick([0, 1.5, -2.25, 1e10]);
    case 'bytes': return Buffer.from(pick(['', 'x', 'bytes\u0000\u00ff']), 'latin1');
    default: throw new Error(`no generator for ${type}`);
  }
}

function fieldValue(field: protobuf.Field, r: () => number, depth: number): unknown {
  const t = field.resolvedType;
  if (t instanceof protobuf.Enum) {
    const names = Object.keys(t.values);
    const name = names[Math.floor(r() * names.length)];
    return r() < 0.8 ? name : t.values[name];
  }
  if (t instanceof protobuf.Type) return message(t, r, depth + 1);
  return scalar(field.type, r);
}

/** A random plain object of `type`, as a caller of the generated types would pass it. */
function message(type: protobuf.Type, r: () => number, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const chosenOneof = new Map<string, string>();
  for (const o of type.oneofsArray) chosenOneof.set(o.name, o.fieldsArray[Math.floor(r() * o.fieldsArray.length)].name);
  for (const f of type.fieldsArray) {
    f.resolve();
    if (f.partOf && chosenOneof.get(f.partOf.name) !== f.name) continue;
    if (r() < 0.25) continue;
    if (f.resolvedType instanceof protobuf.Type && depth > 3) continue;
    if (f.map) {
      const m: Record<string, unknown> = {};
      for (let i = Math.floor(r() * 3); i > 0; i--) m[`k${i}`] = fieldValue(f, r, depth);
      out[f.name] = m;
    } else if (f.repeated) {
      out[f.name] = Array.from({ length: Math.floor(r() * 3) }, () => fieldValue(f, r, depth));
    } else out[f.name] = fieldValue(f, r, depth);
  }
  return out;
}

interface Ref {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

for (const file of ['master.proto', 'node.proto'] as ProtoFile[]) {
  describe(`static codecs of ${file}`, () => {
    const reference = protoLoader.loadSync(path.join(PROTO_DIR, file), GENERATED_TYPES_OPTIONS);
    // The reflection root proto-loader builds: camelCase field names, as the generated types.
    const root = new protobuf.Root().loadSync(path.join(PROTO_DIR, file), { keepCase: false });
    root.resolveAll();
    const table = methodTable(file);

    it('has every service and method proto-loader finds, and no other', () => {
      const refServices = Object.keys(reference).filter((k) => !('format' in reference[k]));
      assert.deepEqual([...table.keys()].sort(), refServices.sort());
      for (const [service, methods] of table) {
        const ref = reference[service] as unknown as Record<string, { path: string; requestStream: boolean; responseStream: boolean; originalName: string }>;
        assert.deepEqual(Object.keys(methods).sort(), Object.keys(ref).sort(), service);
        for (const [name, m] of Object.entries(methods)) {
          assert.equal(m.path, ref[name].path);
          assert.equal(m.requestStream, ref[name].requestStream, `${name} requestStream`);
          assert.equal(m.responseStream, ref[name].responseStream, `${name} responseStream`);
        }
      }
    });

    it('serializes and deserializes every request and reply as proto-loader does', () => {
      let checked = 0;
      for (const [service, methods] of table) {
        const svc = root.lookupService(service);
        const ref = reference[service] as unknown as Record<string, Ref>;
        for (const [name, m] of Object.entries(methods)) {
          const rm = svc.methods[name];
          rm.resolve();
          const sides = [
            { type: rm.resolvedRequestType!, mine: [m.serializeRequest, m.deserializeRequest], theirs: [ref[name].requestSerialize, ref[name].requestDeserialize] },
            { type: rm.resolvedResponseType!, mine: [m.serializeResponse, m.deserializeResponse], theirs: [ref[name].responseSerialize, ref[name].responseDeserialize] },
          ] as const;
          for (const side of sides) {
            for (let seed = 1; seed <= 40; seed++) {
              const value = message(side.type, rng(seed * 7919 + checked));
              const mineBytes = (side.mine[0] as (v: unknown) => Buffer)(value);
              const refBytes = (side.theirs[0] as (v: unknown) => Buffer)(value);
              assert.ok(Buffer.isBuffer(mineBytes), `${name}: serializer returns a Buffer`);
              assert.deepEqual(mineBytes, refBytes, `${service}.${name} ${side.type.name} seed ${seed}: bytes differ`);
              const mineObj = (side.mine[1] as (b: Buffer) => unknown)(refBytes);
              const refObj = (side.theirs[1] as (b: Buffer) => unknown)(refBytes);
              assert.deepEqual(mineObj, refObj, `${service}.${name} ${side.type.name} seed ${seed}: objects differ`);
              checked++;
            }
            // The empty message: every default filled in the same way.
            assert.deepEqual((side.mine[1] as (b: Buffer) => unknown)(Buffer.alloc(0)), (side.theirs[1] as (b: Buffer) => unknown)(Buffer.alloc(0)));
          }
        }
      }
      assert.ok(checked > 100, `only ${checked} messages checked`);
    });

    it('refuses bytes that do not parse, as proto-loader does', () => {
      const [service, methods] = [...table][0];
      const ref = reference[service] as unknown as Record<string, Ref>;
      const name = Object.keys(methods)[0];
      const junk = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
      assert.throws(() => ref[name].requestDeserialize(junk));
      assert.throws(() => methods[name].deserializeRequest(junk));
      assert.throws(() => methods[name].serializeRequest([]), /expected an object/);
    });
  });
}
