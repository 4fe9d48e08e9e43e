/**
 * The RPCs to fuzz, read from the .proto contracts themselves (protobufjs
 * reflection): every method of every service, so that an RPC added later is
 * covered without touching the fuzz test.
 */
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { PROTO_DIR } from '../../src/common/proto';

export interface FuzzMethod {
  /** e.g. "NodeDaemon" */
  service: string;
  /** e.g. "HotplugDevice" */
  name: string;
  /** The HTTP/2 path, e.g. "/gnt.node.v1.NodeDaemon/HotplugDevice". */
  path: string;
  request: protobuf.Type;
  serverStreaming: boolean;
}

/** Every method of `service` (full name, e.g. "gnt.node.v1.NodeDaemon") in proto/`file`. */
export function serviceMethods(file: string, service: string): FuzzMethod[] {
  const root = protobuf.loadSync(path.join(PROTO_DIR, file));
  root.resolveAll();
  const svc = root.lookupService(service);
  return svc.methodsArray.map((m) => ({
    service: svc.name,
    name: m.name,
    path: `/${service}/${m.name}`,
    request: m.resolvedRequestType as protobuf.Type,
    serverStreaming: !!m.responseStream,
  }));
}

/** The wire encoding of a plain object (camelCase fields, enums as names or numbers, int64 as strings). */
export function encodeMessage(type: protobuf.Type, value: object): Buffer {
  return Buffer.from(type.encode(type.fromObject(value as Record<string, unknown>)).finish());
}

/** Whether `bytes` parse as a `type` at all (what the server's deserializer will decide). */
export function decodes(type: protobuf.Type, bytes: Uint8Array): boolean {
  try {
    type.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
