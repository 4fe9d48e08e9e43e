/**
 * The append-only journal beside a runtime file: one self-checking record per
 * save, so that a save costs one write and one fdatasync instead of a temp
 * file, two fsyncs and a rename (runtime-store.ts decides when to append and
 * when to compact the journal into the runtime file).
 *
 * The file is preallocated (JOURNAL_BYTES of zeros, written once), so an
 * append overwrites blocks that already exist and its fdatasync flushes data
 * only, no metadata. Records are packed from offset 0:
 *
 *   magic "GJR1" | payload length u32 | seq u48 + 2 zero bytes | base 16 bytes | crc32 u32 | payload
 *
 * The crc covers the 32 header bytes before it and the payload. `base` is the
 * random id written into the runtime file by the compaction that started this
 * run of records: only records carrying the runtime file's base belong to it.
 * The records of a runtime file are the longest prefix of valid records with
 * its base and strictly increasing seq; whatever follows (a torn or corrupt
 * record, records of an older base, zeros) is ignored and overwritten by the
 * next append.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';

export const JOURNAL_BYTES = 512 * 1024;
/** After this many records the next save compacts. */
export const JOURNAL_MAX_RECORDS = 64;

const MAGIC = Buffer.from('GJR1', 'latin1');
export const HEADER_BYTES = 36;
export const BASE_BYTES = 16;

/** The journal of a runtime file: "runtime.json" -> "runtime.journal" in the same directory. */
export function journalPathOf(runtimeFile: string): string {
  const base = path.basename(runtimeFile).replace(/\.json$/, '');
  return path.join(path.dirname(runtimeFile), `${base}.journal`);
}

export function encodeRecord(base: Buffer, seq: number, payload: Buffer): Buffer {
  if (base.length !== BASE_BYTES) throw new Error(`journal base must be ${BASE_BYTES} bytes`);
  const rec = Buffer.alloc(HEADER_BYTES + payload.length);
  MAGIC.copy(rec, 0);
  rec.writeUInt32LE(payload.length, 4);
  rec.writeUIntLE(seq, 8, 6);
  base.copy(rec, 16);
  payload.copy(rec, HEADER_BYTES);
  rec.writeUInt32LE(checksum(rec.subarray(0, 32), payload), 32);
  return rec;
}

function checksum(header: Buffer, payload: Buffer): number {
  return crc32(payload, crc32(header));
}

export interface JournalRecord {
  seq: number;
  base: Buffer;
  payload: Buffer;
  /** Where the record starts and where it ends in the file. */
  offset: number;
  end: number;
}

/** The record at `offset` if a whole, valid one is there (magic, length within `buf`, crc), else undefined. */
export function recordAt(buf: Buffer, offset: number): JournalRecord | undefined {
  if (offset + HEADER_BYTES > buf.length || !buf.subarray(offset, offset + 4).equals(MAGIC)) return undefined;
  const len = buf.readUInt32LE(offset + 4);
  const end = offset + HEADER_BYTES + len;
  if (end > buf.length || buf.readUInt16LE(offset + 14) !== 0) return undefined;
  const header = buf.subarray(offset, offset + 32);
  const payload = buf.subarray(offset + HEADER_BYTES, end);
  if (checksum(header, payload) !== buf.readUInt32LE(offset + 32)) return undefined;
  return { seq: buf.readUIntLE(offset + 8, 6), base: buf.subarray(offset + 16, offset + 32), payload, offset, end };
}

/** Whether `head` starts like a record of `base` newer than `seq` (the crc is not checked). */
export function headerClaims(head: Buffer, base: Buffer, seq: number): boolean {
  return head.subarray(0, 4).equals(MAGIC) && head.subarray(16, 32).equals(base) && head.readUIntLE(8, 6) > seq;
}

export interface JournalScan {
  /** The newest record of the run (the one with the highest seq), if any. */
  latest?: JournalRecord;
  /** How many records the run has. */
  count: number;
  /** Where the next record goes: the end of the run (0 for none). */
  end: number;
}

/** The run of records that belongs to a runtime file with this base (see the file comment). */
export function scanJournal(buf: Buffer, base: Buffer): JournalScan {
  const out: JournalScan = { count: 0, end: 0 };
  for (let rec = recordAt(buf, 0); rec && rec.base.equals(base); rec = recordAt(buf, rec.end)) {
    if (out.latest && rec.seq <= out.latest.seq) break;
    out.latest = rec;
    out.count++;
    out.end = rec.end;
  }
  return out;
}

/** The journal's bytes; an empty buffer if there is no journal. */
export function readJournal(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
}

/**
 * Makes sure the journal exists with JOURNAL_BYTES preallocated and durable
 * (a new file: its directory entry too). Old records stay: they carry an
 * older base and are ignored from now on.
 */
export function prepareJournal(file: string): void {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  let created = false;
  try {
    const size = fs.fstatSync(fd).size;
    if (size >= JOURNAL_BYTES) return;
    created = size === 0;
    fs.writeSync(fd, Buffer.alloc(JOURNAL_BYTES - size), 0, JOURNAL_BYTES - size, size);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (created) fsyncDir(path.dirname(file));
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
