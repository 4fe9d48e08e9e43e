/**
 * The last revision of each instance's operation log (on the node the
 * instance is on) that the master has applied to its configuration. Written
 * in the same transaction as the record it follows (convergence.ts), so each
 * record is applied exactly once even if the master is killed at any point.
 */
import type { Db } from './db';

/**
 * The revision to ask after (0: none applied yet). The operation journal
 * lives in the instance's runtime file, which a migration or failover
 * carries to the target node, so its revisions go on there: the cursor
 * belongs to the instance, not to the node (node_uuid only records where it
 * was last read). `nodeUuid` is accepted for symmetry with setCursor.
 */
export function cursorOf(db: Db, instanceUuid: string, _nodeUuid?: string): number {
  const row = db.prepare('SELECT revision FROM oplog_cursors WHERE instance_uuid = ?').get(instanceUuid) as { revision: number } | undefined;
  return row?.revision ?? 0;
}

/** The epoch of the journal the cursor was read from ('' before the first read). */
export function epochOf(db: Db, instanceUuid: string): string {
  const row = db.prepare('SELECT epoch FROM oplog_cursors WHERE instance_uuid = ?').get(instanceUuid) as { epoch: string } | undefined;
  return row?.epoch ?? '';
}

/**
 * Notes the journal's epoch. A different one than recorded means the node's
 * journal started over (its runtime file was made anew): the cursor goes
 * back to 0, so its records are read again (applying a record twice is
 * harmless: settling a final operation does nothing). Returns whether it reset.
 */
export function noteEpoch(db: Db, instanceUuid: string, nodeUuid: string, epoch: string): boolean {
  if (!epoch) return false;
  const known = epochOf(db, instanceUuid);
  if (known === epoch) return false;
  db.prepare(
    `INSERT INTO oplog_cursors (instance_uuid, node_uuid, revision, epoch) VALUES (?, ?, 0, ?)
     ON CONFLICT(instance_uuid) DO UPDATE SET node_uuid = excluded.node_uuid, epoch = excluded.epoch,
       revision = CASE WHEN oplog_cursors.epoch = '' THEN oplog_cursors.revision ELSE 0 END`,
  ).run(instanceUuid, nodeUuid, epoch);
  return known !== '';
}

export function setCursor(db: Db, instanceUuid: string, nodeUuid: string, revision: number): void {
  db.prepare(
    `INSERT INTO oplog_cursors (instance_uuid, node_uuid, revision) VALUES (?, ?, ?)
     ON CONFLICT(instance_uuid) DO UPDATE SET node_uuid = excluded.node_uuid, revision = excluded.revision`,
  ).run(instanceUuid, nodeUuid, revision);
}
