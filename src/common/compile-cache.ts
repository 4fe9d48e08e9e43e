/**
 * A V8 code cache for the CommonJS modules a CLI process loads (Node 20 has
 * no module.enableCompileCache, which came in 22.1): each module is
 * compiled through vm.Script with the cachedData of an earlier run, and the
 * cache of a module that had none (or whose cache V8 refused) is written
 * when the process exits, so that it covers the functions the run compiled.
 *
 * Safety: an entry is used only if it names the module's file as it is now
 * (device, inode, size and mtime in ns) and the source's text (its length
 * and CRC-32), and its
 * own CRC-32 matches (a release V8 does not checksum a code cache itself);
 * V8 then checks its version, flags and the source length, and may still
 * refuse it. Anything else (stale, truncated,
 * corrupt) is ignored and rewritten; the module then compiles from its
 * source as without the cache. Entries are written to a temporary file and
 * renamed. The cache directory must belong to this process's user and be
 * writable by nobody else (it is made 0700; one that group or others may write to is not used),
 * so that no other user can plant code in it.
 *
 * Directory: GNT_COMPILE_CACHE_DIR, default /var/cache/gnt-hotplug/v8;
 * GNT_COMPILE_CACHE=0 turns it off.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import Module = require('node:module');
import * as path from 'node:path';
import * as vm from 'node:vm';

export const DEFAULT_COMPILE_CACHE_DIR = '/var/cache/gnt-hotplug/v8';

const MAGIC = Buffer.from('GNTV8C2\n');
/** The identity of a source file and its text: what an entry is valid for. */
const ID_BYTES = 44;
const CRC_BYTES = 4;

interface InternalModule {
  exports: unknown;
  filename: string;
  paths: string[];
  require(id: string): unknown;
}

interface ModuleStatics {
  wrap(code: string): string;
  _resolveFilename(request: string, parent: InternalModule, isMain: boolean, options?: unknown): string;
  _extensions: unknown;
  _cache: unknown;
  prototype: { _compile(content: string, filename: string): unknown };
}

/** dev, ino, size, mtime (ns) of `filename`, the length and CRC-32 of its text, as 44 bytes; undefined if it cannot be read. */
export function sourceId(filename: string, content: string): Buffer | undefined {
  try {
    const st = fs.statSync(filename, { bigint: true });
    const id = Buffer.alloc(ID_BYTES);
    id.writeBigUInt64LE(st.dev, 0);
    id.writeBigUInt64LE(st.ino, 8);
    id.writeBigUInt64LE(st.size, 16);
    id.writeBigUInt64LE(st.mtimeNs, 24);
    id.writeBigUInt64LE(BigInt(content.length), 32);
    id.writeUInt32LE(zlib.crc32(content) >>> 0, 40);
    return id;
  } catch {
    return undefined;
  }
}

const crc = (data: Buffer): Buffer => {
  const b = Buffer.alloc(CRC_BYTES);
  b.writeUInt32LE(zlib.crc32(data) >>> 0);
  return b;
};

/** The cache directory if it is safe to use (created 0700 if missing), else undefined. */
export function usableCacheDir(dir: string): string | undefined {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.statSync(dir);
    const uid = process.geteuid?.() ?? -1;
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return undefined;
    return dir;
  } catch {
    return undefined;
  }
}

/** One entry: MAGIC, sourceId, crc32(data), data. Undefined unless it is whole and for `id`. */
export function readEntry(file: string, id: Buffer): Buffer | undefined {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  const at = MAGIC.length;
  if (raw.length <= at + ID_BYTES + CRC_BYTES || !raw.subarray(0, at).equals(MAGIC)) return undefined;
  if (!raw.subarray(at, at + ID_BYTES).equals(id)) return undefined;
  const data = raw.subarray(at + ID_BYTES + CRC_BYTES);
  if (!raw.subarray(at + ID_BYTES, at + ID_BYTES + CRC_BYTES).equals(crc(data))) return undefined;
  return data;
}

export function writeEntry(file: string, id: Buffer, data: Buffer): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, Buffer.concat([MAGIC, id, crc(data), data]), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * The entry's file: by Node version, architecture and module path (a CRC
 * of them and the base name; two paths that share a name only evict each
 * other, since the entry names its file inside).
 */
export function entryFile(dir: string, filename: string): string {
  const key = (zlib.crc32(`${process.version}\0${process.arch}\0${filename}`) >>> 0).toString(16).padStart(8, '0');
  return path.join(dir, `${key}-${path.basename(filename).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}.v8c`);
}

let installed = false;

/** Installs the cache for every module required from now on. Returns whether it is in use. */
export function installCompileCache(dir = process.env.GNT_COMPILE_CACHE_DIR || DEFAULT_COMPILE_CACHE_DIR): boolean {
  if (installed || process.env.GNT_COMPILE_CACHE === '0') return installed;
  const cacheDir = usableCacheDir(dir);
  if (!cacheDir) return false;
  installed = true;
  const M = Module as unknown as ModuleStatics;
  const pending: { file: string; id: Buffer; script: vm.Script }[] = [];

  M.prototype._compile = function compileWithCache(this: InternalModule, content: string, filename: string): unknown {
    const id = sourceId(filename, content);
    const file = entryFile(cacheDir, filename);
    const cachedData = id && readEntry(file, id);
    const script = new vm.Script(M.wrap(content), { filename, ...(cachedData ? { cachedData } : {}) });
    if (id && (!cachedData || script.cachedDataRejected)) pending.push({ file, id, script });
    const mod = this;
    const req = ((id: string) => mod.require(id)) as NodeJS.Require;
    req.resolve = ((request: string, options?: unknown) => M._resolveFilename(request, mod, false, options)) as NodeJS.RequireResolve;
    req.main = require.main;
    req.extensions = M._extensions as NodeJS.RequireExtensions;
    req.cache = M._cache as NodeJS.Dict<NodeJS.Module>;
    const fn = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    return fn.call(mod.exports, mod.exports, req, mod, filename, path.dirname(filename));
  };

  process.once('exit', () => {
    for (const p of pending) writeEntry(p.file, p.id, p.script.createCachedData());
  });
  return true;
}
