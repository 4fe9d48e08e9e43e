#!/usr/bin/env node
/**
 * Build step (npm run gen:codecs): static protobuf codecs for every
 * proto/*.proto, so that no process parses .proto files at run time
 * (src/common/proto.ts loads what this writes).
 *
 * For each proto/NAME.proto it writes into dist/src/codecs/ (beside the
 * compiled code, so that a copy of dist/src carries them):
 *   NAME.js            protobufjs static code (pbjs -t static-module) with
 *                      encode, decode, fromObject and toObject per message
 *   NAME.services.json the file's services: per method its request and
 *                      response type and whether either side streams
 * Both are made from the same .proto files as the TypeScript types in
 * src/generated (proto-loader-gen-types), with the same field naming
 * (camelCase); the conversion options (longs and enums as strings,
 * defaults, oneofs) are applied at run time by proto.ts.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const protobuf = require('protobufjs');
const { pbjs } = require('protobufjs-cli');

const REPO = path.resolve(__dirname, '..');
const PROTO_DIR = path.join(REPO, 'proto');
const OUT_DIR = path.join(REPO, 'dist', 'src', 'codecs');

function runPbjs(args) {
  return new Promise((resolve, reject) => pbjs.main(args, (err, out) => (err ? reject(err) : resolve(out))));
}

/** Writes `text` to `file` through a temporary file and a rename. */
function writeAtomically(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function servicesOf(root) {
  const out = {};
  const visit = (ns) => {
    for (const child of ns.nestedArray) {
      if (child instanceof protobuf.Service) {
        const methods = {};
        for (const m of child.methodsArray) {
          m.resolve();
          methods[m.name] = {
            requestType: m.resolvedRequestType.fullName.replace(/^\./, ''),
            responseType: m.resolvedResponseType.fullName.replace(/^\./, ''),
            requestStream: !!m.requestStream,
            responseStream: !!m.responseStream,
          };
        }
        out[child.fullName.replace(/^\./, '')] = methods;
      } else if (child instanceof protobuf.Namespace) visit(child);
    }
  };
  visit(root);
  return out;
}

async function main() {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const files = fs.readdirSync(PROTO_DIR).filter((f) => f.endsWith('.proto')).sort();
  for (const file of files) {
    const name = path.basename(file, '.proto');
    const src = path.join(PROTO_DIR, file);
    const code = await runPbjs([
      '-t', 'static-module', '-w', 'commonjs', '-r', `gnt-${name}`,
      '--no-service', '--no-verify', '--no-delimited', '--no-comments', '--no-typeurl', src,
    ]);
    writeAtomically(path.join(OUT_DIR, `${name}.js`), code);
    const root = protobuf.loadSync(src).resolveAll();
    writeAtomically(path.join(OUT_DIR, `${name}.services.json`), JSON.stringify(servicesOf(root), null, 1) + '\n');
  }
  process.stdout.write(`gen-codecs: ${files.length} proto files -> ${path.relative(REPO, OUT_DIR)}/\n`);
}

main().catch((err) => {
  process.stderr.write(`gen-codecs: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
