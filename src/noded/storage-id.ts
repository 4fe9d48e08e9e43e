/**
 * The storage identity of a node: a random id kept in a file of its storage
 * directory, made at the first start. Two nodes that report the same id use
 * the same (shared) directory, so a migration between them copies no disk;
 * different ids: the disks are copied (docs/migration.md). The file is made
 * atomically (a temporary file linked into place, which fails if another
 * daemon on the same shared directory was first: then its id is used).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const STORAGE_ID_FILE = '.gnt-storage-id';
const ID_RULE = /^[0-9a-f]{32}$/;

/** Reads the storage directory's id, creating it first if there is none. */
export function ensureStorageId(dir: string): string {
  const file = path.join(dir, STORAGE_ID_FILE);
  const existing = readId(file);
  if (existing) return existing;
  const id = crypto.randomBytes(16).toString('hex');
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'wx', 0o644);
  try {
    fs.writeSync(fd, `${id}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const dirFd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
  const got = readId(file);
  if (!got) throw new Error(`storage id file ${file} is not a 32-digit hex id: fix or remove it`);
  return got;
}

function readId(file: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (!ID_RULE.test(text)) throw new Error(`storage id file ${file} is not a 32-digit hex id: fix or remove it`);
  return text;
}
