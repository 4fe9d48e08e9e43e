/**
 * The configuration's part of certificate roles: each node's certificate
 * fingerprint, and the deny-list of certificates refused on every connection
 * the master makes or accepts (schema 5, db.ts). Removing a node puts its
 * fingerprint on the list in the same transaction that deletes it.
 */
import { nowIso, type Db } from './db';
import { ConfigError } from './config-store';

export interface RevokedCert {
  fingerprint: string;
  subject: string;
  reason: string;
  revoked_at: string;
}

/** The message for a certificate on the deny-list. */
export const revokedMessage = (r: RevokedCert): string =>
  `certificate ${r.fingerprint.slice(0, 23)}… of ${r.subject} is revoked (${r.reason}); issue a new one with gnt-cluster issue-node-cert`;

export class CertStore {
  constructor(private readonly db: Db) {}

  /** The revocation of `fingerprint`, if any (one indexed read: asked on every call and connection). */
  revoked(fingerprint: string): RevokedCert | undefined {
    return this.db.prepare('SELECT * FROM revoked_certs WHERE fingerprint = ?').get(fingerprint) as RevokedCert | undefined;
  }

  listRevoked(): RevokedCert[] {
    return this.db.prepare('SELECT * FROM revoked_certs ORDER BY revoked_at').all() as RevokedCert[];
  }

  revoke(fingerprint: string, subject: string, reason: string): void {
    this.db
      .prepare('INSERT INTO revoked_certs (fingerprint, subject, reason, revoked_at) VALUES (?, ?, ?, ?) ON CONFLICT(fingerprint) DO NOTHING')
      .run(fingerprint, subject, reason, nowIso());
  }

  setNodeFingerprint(nodeName: string, fingerprint: string): void {
    const r = this.db.prepare('UPDATE nodes SET cert_fingerprint = ? WHERE name = ?').run(fingerprint, nodeName);
    if (r.changes !== 1) throw new ConfigError(`node "${nodeName}" is unknown`, 'NOT_FOUND');
  }

  /**
   * Deletes node `name` and revokes its recorded certificate (and `extra`,
   * the one it presents now, if different), in one transaction. Refuses a
   * node that still has instances.
   */
  removeNode(name: string, extra?: string): { fingerprints: string[] } {
    return this.db.transaction(() => {
      const node = this.db.prepare('SELECT uuid, cert_fingerprint FROM nodes WHERE name = ?').get(name) as { uuid: string; cert_fingerprint: string } | undefined;
      if (!node) throw new ConfigError(`node "${name}" is unknown`, 'NOT_FOUND');
      const count = (this.db.prepare('SELECT COUNT(*) AS n FROM instances WHERE node_uuid = ?').get(node.uuid) as { n: number }).n;
      if (count > 0)
        throw new ConfigError(`node "${name}" still has ${count} instance(s): migrate, fail over or remove them first`, 'FAILED_PRECONDITION');
      const fingerprints = [...new Set([node.cert_fingerprint, extra ?? ''].filter(Boolean))];
      for (const f of fingerprints) this.revoke(f, `node ${name}`, `node ${name} was removed`);
      this.db.prepare('DELETE FROM oplog_cursors WHERE node_uuid = ?').run(node.uuid);
      this.db.prepare('DELETE FROM nodes WHERE uuid = ?').run(node.uuid);
      return { fingerprints };
    })();
  }
}
