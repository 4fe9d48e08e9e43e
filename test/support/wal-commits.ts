/**
 * Counts the transactions committed to a SQLite database in WAL mode by
 * reading its -wal file (the SQLite file format, "WAL file format"): a
 * frame whose header carries a non-zero "database size after commit" ends
 * a transaction, and only frames with the WAL header's salts belong to the
 * current generation. Exact while the WAL is not checkpointed: open the
 * database with PRAGMA wal_autocheckpoint = 0.
 */
import * as fs from 'node:fs';

export function walCommits(dbFile: string): number {
  const wal = `${dbFile}-wal`;
  if (!fs.existsSync(wal)) return 0;
  const buf = fs.readFileSync(wal);
  if (buf.length < 32) return 0;
  const pageSize = buf.readUInt32BE(8);
  const salt1 = buf.readUInt32BE(16);
  const salt2 = buf.readUInt32BE(20);
  let commits = 0;
  for (let off = 32; off + 24 + pageSize <= buf.length; off += 24 + pageSize) {
    if (buf.readUInt32BE(off + 8) !== salt1 || buf.readUInt32BE(off + 12) !== salt2) break;
    if (buf.readUInt32BE(off + 4) !== 0) commits++;
  }
  return commits;
}
