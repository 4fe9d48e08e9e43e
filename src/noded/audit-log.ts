/**
 * The node's audit trail (docs/audit.md): one JSON line per change to an
 * instance in <state dir>/audit.log, appended with O_APPEND and made durable
 * with fdatasync before the RPC answers. A write failure is reported loudly
 * (stderr) and never changes the outcome of the change itself.
 *
 * Reading skips a line that does not parse (a torn last line after a crash)
 * and counts it, with a warning.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export type AuditOutcome = 'ok' | 'failed' | 'pending' | 'unknown';

export interface AuditRecord {
  time: string;
  instance: string;
  action: string;
  deviceKind: string;
  deviceUuid: string;
  operationId: string;
  requestedBy: string;
  caller: string;
  outcome: AuditOutcome;
  message: string;
}

export interface AuditQuery {
  instance?: string;
  /** ISO time: records before it are left out. */
  since?: string;
  /** The last `limit` records only (0: all, at most MAX_RECORDS). */
  limit?: number;
}

export const MAX_RECORDS = 10_000;
export const AUDIT_FILE = 'audit.log';
/** The audit trail's directory under the node's data dir: a name no instance can have (instance names start with a letter or digit). */
export const AUDIT_DIR = '.audit';

const OUTCOMES: ReadonlySet<string> = new Set(['ok', 'failed', 'pending', 'unknown']);

export class AuditLog {
  readonly file: string;

  constructor(stateDir: string, private readonly warn: (line: string) => void = (l) => process.stderr.write(`gnt-noded: ${l}\n`)) {
    this.file = path.join(stateDir, AUDIT_FILE);
  }

  /** Appends one record durably; returns false (after a loud warning) when it could not be written. */
  append(rec: Omit<AuditRecord, 'time'> & { time?: string }): boolean {
    const full: AuditRecord = { ...rec, time: rec.time ?? new Date().toISOString() };
    const line = `${JSON.stringify(full)}\n`;
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
      fs.writeSync(fd, line);
      fs.fdatasyncSync(fd);
      return true;
    } catch (err) {
      this.warn(`AUDIT RECORD NOT WRITTEN to ${this.file} (${(err as Error).message}); the change itself is unaffected: ${line.trim()}`);
      return false;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  /** The records matching `q`, oldest first, and how many lines were skipped as unreadable. */
  read(q: AuditQuery = {}): { records: AuditRecord[]; skipped: number } {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], skipped: 0 };
      throw err;
    }
    const records: AuditRecord[] = [];
    let skipped = 0;
    const lines = text.split('\n');
    lines.forEach((line, i) => {
      if (line === '') return;
      const rec = parseRecord(line);
      if (!rec) {
        skipped++;
        const torn = i === lines.length - 1 ? ' (a torn last line, e.g. from a crash while writing)' : '';
        this.warn(`${this.file}: line ${i + 1} is not an audit record${torn}; skipped`);
        return;
      }
      if (q.instance && rec.instance !== q.instance) return;
      if (q.since && rec.time < q.since) return;
      records.push(rec);
    });
    const limit = Math.min(q.limit && q.limit > 0 ? q.limit : MAX_RECORDS, MAX_RECORDS);
    return { records: records.slice(-limit), skipped };
  }
}

function parseRecord(line: string): AuditRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const keys = ['time', 'instance', 'action', 'deviceKind', 'deviceUuid', 'operationId', 'requestedBy', 'caller', 'outcome', 'message'] as const;
  if (keys.some((k) => str(k) === undefined) || !OUTCOMES.has(str('outcome')!)) return undefined;
  return Object.fromEntries(keys.map((k) => [k, str(k)])) as unknown as AuditRecord;
}

/** The outcome of a change from its error, if any ("pending" for a removal the guest has not acknowledged). */
export function outcomeOf(err: unknown, pending = false): { outcome: AuditOutcome; message: string } {
  if (err === undefined) return { outcome: pending ? 'pending' : 'ok', message: '' };
  return { outcome: 'failed', message: err instanceof Error ? err.message : String(err) };
}
