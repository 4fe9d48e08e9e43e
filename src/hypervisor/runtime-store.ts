/**
 * Reading and writing an instance's runtime file together with its journal
 * (runtime-journal.ts), so that every reader sees the same state.
 *
 * A save appends one record (the whole runtime data, compact JSON) to the
 * preallocated journal and fdatasyncs it: one write and one flush. Every
 * JOURNAL_MAX_RECORDS records, when the journal is full, for a runtime file
 * without a mark, or when another writer changed the files, the save is a
 * compaction instead: the runtime file is written whole (temp file, fsync,
 * rename, fsync of the directory) with a new random base and the next seq,
 * and the journal's old records, which carry the old base, no longer count.
 *
 * Loading is the runtime file, then the newest record of the journal's run
 * with the file's base and a seq above the file's. A kill -9 at any point
 * loads the state before or after the save it interrupted:
 *   - mid-append: the torn record fails its crc and is ignored (the next
 *     append overwrites it);
 *   - mid-compaction, before the rename: the old file and its journal;
 *   - after the rename, before the journal is ready: the new file, whose base
 *     no record has.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RuntimeFileError } from './errors';
import type { RuntimeData } from './runtime-file';
import { canonicalRuntime, isObject, parseJson, parseRuntime, parseRuntimeValue } from './runtime-parse';
import {
  BASE_BYTES,
  HEADER_BYTES,
  JOURNAL_BYTES,
  JOURNAL_MAX_RECORDS,
  encodeRecord,
  fsyncDir,
  journalPathOf,
  prepareJournal,
  headerClaims,
  readJournal,
  scanJournal,
} from './runtime-journal';

export interface SaveHooks {
  /** Compaction: called after the temp file is durable and before it replaces the old file (tests). */
  beforeRename?: (tempPath: string) => void;
  /** Compaction: the runtime file is replaced, the journal not yet prepared for the new base. */
  beforeJournalReset?: () => void;
  /** Append: how many bytes of the record to write (tests tear a record); default all. */
  appendBytes?: (record: Buffer) => number;
  /** Append: the record is written, not yet flushed. */
  beforeSync?: () => void;
}

/** What the runtime file says about the journal: the base its records must carry, the seq they must pass. */
interface Mark {
  base: Buffer;
  seq: number;
}

/** What a store knows of the files, to append without reading them again. */
interface StoreState extends Mark {
  /** Where the next record goes, and how many records the run has. */
  end: number;
  records: number;
  /** The runtime file as last seen (another writer replacing it shows here). */
  ino: number;
  mtimeMs: number;
}

function markFrom(file: string, raw: unknown): Mark | undefined {
  if (!isObject(raw) || raw.journal_mark === undefined) return undefined;
  const j = raw.journal_mark;
  const ok = isObject(j) && typeof j.base === 'string' && /^[0-9a-f]{32}$/.test(j.base) && Number.isSafeInteger(j.seq) && (j.seq as number) >= 0;
  if (!ok) throw new RuntimeFileError(file, '"journal_mark" is not a valid journal mark ({"base": 32 hex digits, "seq": a count})');
  return { base: Buffer.from(j.base as string, 'hex'), seq: j.seq as number };
}

interface Loaded {
  data: RuntimeData;
  state?: StoreState;
}

function readRuntimeText(file: string): { text: string; st: fs.Stats } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new RuntimeFileError(file, code === 'ENOENT' ? 'does not exist (instance not created on this node?)' : String(err));
  }
  try {
    return { st: fs.fstatSync(fd), text: fs.readFileSync(fd, 'utf8') };
  } finally {
    fs.closeSync(fd);
  }
}

/** One consistent read: the runtime file, its journal, and the file again (a compaction in between: read again). */
function readBoth(file: string, instance: string): Loaded {
  for (let attempt = 0; ; attempt++) {
    const { text, st } = readRuntimeText(file);
    const raw = parseJson(file, text);
    const mark = markFrom(file, raw);
    let data = parseRuntimeValue(file, raw, instance);
    if (!mark) return { data };
    const journal = journalPathOf(file);
    const run = scanJournal(journalBytes(file, journal), mark.base);
    const now = fs.statSync(file, { throwIfNoEntry: false });
    if (attempt < 5 && (now?.ino !== st.ino || now.mtimeMs !== st.mtimeMs)) continue;
    let seq = mark.seq;
    if (run.latest && run.latest.seq > mark.seq) {
      seq = run.latest.seq;
      data = parseRuntime(`${journal} (record ${seq})`, run.latest.payload.toString('utf8'), instance);
    }
    return { data, state: { base: mark.base, seq, end: run.end, records: run.count, ino: st.ino, mtimeMs: st.mtimeMs } };
  }
}

function journalBytes(file: string, journal: string): Buffer {
  try {
    return readJournal(journal);
  } catch (err) {
    throw new RuntimeFileError(file, `its journal ${journal} cannot be read: ${(err as Error).message}`);
  }
}

/** Loads an instance's state: its runtime file with the journal folded in. */
export function loadRuntimeFile(file: string, instance: string): RuntimeData {
  return readBoth(file, instance).data;
}

/**
 * Writes `data` as the whole runtime file (a compaction), so that a crash at
 * any point leaves either the old or the new state; the journal's records
 * no longer apply. For new files, and for writers other than an instance's
 * own store (tests, repairs by hand).
 */
export function saveRuntimeFile(file: string, data: RuntimeData, hooks: SaveHooks = {}): void {
  RuntimeStore.fresh(file).save(data, hooks);
}

function writeAtomic(file: string, text: string, hooks: SaveHooks): void {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}`);
  let fd: number;
  try {
    fd = fs.openSync(temp, 'w', 0o600);
  } catch (err) {
    throw new RuntimeFileError(file, `could not be written: ${(err as Error).message}`);
  }
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw new RuntimeFileError(file, `could not be written: ${(err as Error).message}`);
  }
  fs.closeSync(fd);
  hooks.beforeRename?.(temp);
  fs.renameSync(temp, file);
  fsyncDir(dir);
}

/** The one writer of an instance's runtime file and journal in this process. */
export class RuntimeStore {
  readonly journal: string;

  private constructor(
    readonly file: string,
    private state: StoreState | undefined,
  ) {
    this.journal = journalPathOf(file);
  }

  /** A store for a file it knows nothing of: its first save is a compaction. */
  static fresh(file: string): RuntimeStore {
    return new RuntimeStore(file, undefined);
  }

  /** Loads the state and keeps what is needed to append to it. */
  static open(file: string, instance: string): { store: RuntimeStore; data: RuntimeData } {
    const { data, state } = readBoth(file, instance);
    return { store: new RuntimeStore(file, state), data };
  }

  /** Reads the state again (after a failed save) and continues from it. */
  reload(instance: string): RuntimeData {
    const { data, state } = readBoth(this.file, instance);
    this.state = state;
    return data;
  }

  /**
   * save(), and if it fails, `revert` gets the state read back from the files
   * before the save's error is thrown: memory never stays ahead of the disk.
   */
  saveOrRevert(data: RuntimeData, instance: string, revert: (onDisk: RuntimeData) => void): void {
    try {
      this.save(data);
    } catch (err) {
      try {
        revert(this.reload(instance));
      } catch {
        /* the files are unreadable too: memory stays, the error below names the save */
      }
      throw err;
    }
  }

  /** Makes `data` durable: one journal record, or a compaction (see the file comment). */
  save(data: RuntimeData, hooks: SaveHooks = {}): void {
    const s = this.state;
    if (!s || s.records >= JOURNAL_MAX_RECORDS || this.changedByOthers(s)) return this.compact(data, hooks);
    const record = encodeRecord(s.base, s.seq + 1, Buffer.from(JSON.stringify(canonicalRuntime(data)), 'utf8'));
    if (s.end + record.length > JOURNAL_BYTES) return this.compact(data, hooks);
    this.append(s, record, hooks);
  }

  private append(s: StoreState, record: Buffer, hooks: SaveHooks): void {
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.journal, fs.constants.O_RDWR);
      const n = hooks.appendBytes ? hooks.appendBytes(record) : record.length;
      fs.writeSync(fd, record, 0, n, s.end);
      hooks.beforeSync?.();
      fs.fdatasyncSync(fd);
    } catch (err) {
      this.state = undefined; // the next save compacts
      if (fd !== undefined) invalidate(fd, s.end);
      throw new RuntimeFileError(this.file, `could not be written (journal ${this.journal}): ${(err as Error).message}`);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
    s.seq++;
    s.end += record.length;
    s.records++;
  }

  /** Whether the runtime file was replaced, or a record was appended where ours would go, by another store. */
  private changedByOthers(s: StoreState): boolean {
    const st = fs.statSync(this.file, { throwIfNoEntry: false });
    if (!st || st.ino !== s.ino || st.mtimeMs !== s.mtimeMs) return true;
    let fd: number;
    try {
      fd = fs.openSync(this.journal, 'r');
    } catch {
      return true;
    }
    try {
      // Only the header: a torn record of ours counts as another writer's too, and a compaction is always safe.
      const head = Buffer.alloc(HEADER_BYTES);
      const n = fs.readSync(fd, head, 0, HEADER_BYTES, s.end);
      return n === HEADER_BYTES && headerClaims(head, s.base, s.seq);
    } catch {
      return true; // not readable as a journal: compacting puts a new one in place
    } finally {
      fs.closeSync(fd);
    }
  }

  private compact(data: RuntimeData, hooks: SaveHooks): void {
    const base = randomBytes(BASE_BYTES);
    const seq = (this.state?.seq ?? 0) + 1;
    this.state = undefined;
    const text = JSON.stringify({ ...canonicalRuntime(data), journal_mark: { base: base.toString('hex'), seq } }, null, 2) + '\n';
    writeAtomic(this.file, text, hooks);
    const st = fs.statSync(this.file);
    hooks.beforeJournalReset?.();
    try {
      prepareJournal(this.journal);
    } catch {
      return; // saved all the same; the next save compacts again
    }
    this.state = { base, seq, end: 0, records: 0, ino: st.ino, mtimeMs: st.mtimeMs };
  }
}

/** After a failed append: the record's magic zeroed, so that what is read back is the state before it. */
function invalidate(fd: number, offset: number): void {
  try {
    fs.writeSync(fd, Buffer.alloc(4), 0, 4, offset);
    fs.fdatasyncSync(fd);
  } catch {
    /* the record's crc still guards a torn one */
  }
}

/**
 * Deletes an instance's directory, the runtime file first: a removal cut
 * short leaves no runtime file whose journal is gone (an older state), only a
 * directory without an instance.
 */
export function removeInstanceDir(dir: string, runtimeFile: string): void {
  fs.rmSync(runtimeFile, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
}
