/**
 * Loads the .proto contracts with the options the generated types
 * (src/generated, made by `npm run gen:proto`) assume: camelCase fields,
 * int64 as decimal strings, enums as their names, defaults filled in.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as path from 'node:path';
import type { ProtoGrpcType as NodeProto } from '../generated/node';

export const PROTO_DIR = path.resolve(__dirname, '../../../proto');

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function loadProto<T>(file: string): T {
  const definition = protoLoader.loadSync(path.join(PROTO_DIR, file), LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition) as unknown as T;
}

export const loadNodeProto = (): NodeProto => loadProto<NodeProto>('node.proto');
