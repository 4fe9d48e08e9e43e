/**
 * The per-instance history: changes the configuration took without a job
 * asking for them (a device the guest ejected, a removal the guest
 * acknowledged after its job ended, what a node settled after its restart,
 * a warning that the node's operation log no longer reached back).
 * `gnt-instance info` shows the recent entries.
 */
import { nowIso, type Db } from './db';

export interface HistoryEntry {
  time: string;
  message: string;
}

export function addHistory(db: Db, instanceUuid: string, message: string): void {
  db.prepare('INSERT INTO instance_history (instance_uuid, time, message) VALUES (?, ?, ?)').run(instanceUuid, nowIso(), message);
}

/** The last `limit` entries, oldest first. */
export function recentHistory(db: Db, instanceUuid: string, limit = 20): HistoryEntry[] {
  const rows = db
    .prepare('SELECT time, message FROM instance_history WHERE instance_uuid = ? ORDER BY id DESC LIMIT ?')
    .all(instanceUuid, limit) as HistoryEntry[];
  return rows.reverse();
}
