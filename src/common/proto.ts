/**
 * The gRPC contracts of proto/*.proto, from static codecs made at build time
 * (scripts/gen-codecs.js writes dist/src/codecs/NAME.js and
 * NAME.services.json): nothing parses a .proto file at run time.
 *
 * A message crosses the wire exactly as @grpc/proto-loader would carry it
 * with LOADER_OPTIONS, the options the generated types (src/generated, made
 * by `npm run gen:proto`) assume: serialize = fromObject then encode,
 * deserialize = decode then toObject with camelCase fields, int64 as decimal
 * strings, enums as their names, defaults filled in, oneofs named.
 * test/unit/proto-codecs.test.ts holds both to the same results.
 *
 * Loading is lazy: methodTable() needs only the codecs (the CLI's light
 * client, master/cli/light-client.ts); loadProto() also loads
 * @grpc/grpc-js for its client constructors.
 */
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { ProtoGrpcType as NodeProto } from '../generated/node';
import type { ProtoGrpcType as MasterProto } from '../generated/master';

export const PROTO_DIR = path.resolve(__dirname, '../../../proto');
export const CODECS_DIR = path.resolve(__dirname, '../codecs');

/** Largest message a daemon or client sends or accepts (4 MiB, gRPC's usual default made explicit). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** What proto-loader is given, and what toObject is given here (types: src/generated). */
export const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

/** The part of a protobufjs static message class used here. */
export interface StaticType {
  encode(message: object): { finish(): Uint8Array };
  decode(bytes: Uint8Array): object;
  fromObject(object: object): object;
  toObject(message: object, options: object): object;
}

interface MethodInfo {
  requestType: string;
  responseType: string;
  requestStream: boolean;
  responseStream: boolean;
}

/** One method of a service, with the codecs of its two messages. */
export interface MethodCodec {
  /** "/gnt.master.v1.Master/GetJob" */
  path: string;
  name: string;
  requestStream: boolean;
  responseStream: boolean;
  /** The request message's name, e.g. "GetJobRequest" (for messages). */
  requestName: string;
  serializeRequest(value: unknown): Buffer;
  deserializeRequest(bytes: Buffer): unknown;
  serializeResponse(value: unknown): Buffer;
  deserializeResponse(bytes: Buffer): unknown;
}

/** The proto files there are codecs for. */
export type ProtoFile = 'master.proto' | 'node.proto';

function lookupType(root: Record<string, unknown>, fullName: string, file: string): StaticType {
  let at: unknown = root;
  for (const part of fullName.split('.')) at = (at as Record<string, unknown> | undefined)?.[part];
  if (typeof at !== 'function') throw new Error(`codecs of ${file}: no message ${fullName} (run "npm run build")`);
  return at as unknown as StaticType;
}

function serializer(type: StaticType): (value: unknown) => Buffer {
  return (value) => {
    if (Array.isArray(value) || typeof value !== 'object' || value === null) throw new Error('Failed to serialize message: expected an object');
    const bytes = type.encode(type.fromObject(value)).finish();
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(type: StaticType): (bytes: Buffer) => unknown {
  return (bytes) => type.toObject(type.decode(bytes), LOADER_OPTIONS);
}

const tables = new Map<string, Map<string, Record<string, MethodCodec>>>();

/** Every service of `file`, by full name ("gnt.master.v1.Master"), with its methods' codecs. */
export function methodTable(file: ProtoFile): Map<string, Record<string, MethodCodec>> {
  const known = tables.get(file);
  if (known) return known;
  const base = path.join(CODECS_DIR, path.basename(file, '.proto'));
  let root: Record<string, unknown>;
  let services: Record<string, Record<string, MethodInfo>>;
  try {
    root = require(`${base}.js`) as Record<string, unknown>;
    services = require(`${base}.services.json`) as Record<string, Record<string, MethodInfo>>;
  } catch (err) {
    throw new Error(`no static codecs for ${file} in ${CODECS_DIR} (run "npm run build"): ${(err as Error).message}`);
  }
  const table = new Map<string, Record<string, MethodCodec>>();
  for (const [service, methods] of Object.entries(services)) {
    const out: Record<string, MethodCodec> = {};
    for (const [name, m] of Object.entries(methods)) {
      const req = lookupType(root, m.requestType, file);
      const rep = lookupType(root, m.responseType, file);
      out[name] = {
        path: `/${service}/${name}`, name, requestStream: m.requestStream, responseStream: m.responseStream,
        requestName: m.requestType.slice(m.requestType.lastIndexOf('.') + 1),
        serializeRequest: serializer(req), deserializeRequest: deserializer(req),
        serializeResponse: serializer(rep), deserializeResponse: deserializer(rep),
      };
    }
    table.set(service, out);
  }
  tables.set(file, table);
  return table;
}

/** A grpc-js service definition (as proto-loader makes) of one service's codecs. */
function serviceDefinition(methods: Record<string, MethodCodec>): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown> & { requestType: { type: { name: string } } }> = {};
  for (const m of Object.values(methods)) {
    def[m.name] = {
      path: m.path, requestStream: m.requestStream, responseStream: m.responseStream,
      requestSerialize: m.serializeRequest, requestDeserialize: m.deserializeRequest,
      responseSerialize: m.serializeResponse, responseDeserialize: m.deserializeResponse,
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
      requestType: { type: { name: m.requestName } },
    };
  }
  return def as grpc.ServiceDefinition;
}

/**
 * The services of `file` as grpc.loadPackageDefinition makes them: nested
 * namespaces, each service a client constructor with `.service`.
 */
export function loadProto<T>(file: ProtoFile): T {
  // Loaded here, not at the top: the CLI's light client never needs grpc-js.
  const grpcJs = require('@grpc/grpc-js') as typeof grpc;
  const pkg: Record<string, grpc.ServiceDefinition> = {};
  for (const [service, methods] of methodTable(file)) pkg[service] = serviceDefinition(methods);
  return grpcJs.loadPackageDefinition(pkg as unknown as Parameters<typeof grpcJs.loadPackageDefinition>[0]) as unknown as T;
}

export const loadNodeProto = (): NodeProto => loadProto<NodeProto>('node.proto');
export const loadMasterProto = (): MasterProto => loadProto<MasterProto>('master.proto');
