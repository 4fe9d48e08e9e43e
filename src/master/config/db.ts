/**
 * The cluster configuration and the job queue in one SQLite file
 * (better-sqlite3): WAL, synchronous=FULL, foreign keys on. The schema is
 * versioned with PRAGMA user_version; each migration runs in a transaction.
 */
import Database from 'better-sqlite3';
import * as fs from 'node:fs';

export type Db = Database.Database;

const MIGRATIONS: string[] = [
  // 1: the first schema.
  `
  CREATE TABLE cluster (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );
  CREATE TABLE nodes (
    uuid       TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    address    TEXT NOT NULL,
    created_at TEXT NOT NULL
  );
  CREATE TABLE instances (
    uuid        TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    node_uuid   TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE RESTRICT,
    vcpus       INTEGER NOT NULL CHECK (vcpus > 0),
    maxvcpus    INTEGER NOT NULL CHECK (maxvcpus >= vcpus),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    maxmem_mib  INTEGER NOT NULL CHECK (maxmem_mib >= memory_mib),
    kernel      TEXT NOT NULL,
    initrd      TEXT NOT NULL DEFAULT '',
    kernel_args TEXT NOT NULL DEFAULT '',
    hvparams    TEXT NOT NULL DEFAULT '{}',
    admin_state TEXT NOT NULL DEFAULT 'down' CHECK (admin_state IN ('up', 'down')),
    created_at  TEXT NOT NULL
  );
  CREATE TABLE disks (
    uuid          TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes > 0)
  );
  CREATE INDEX disks_instance ON disks(instance_uuid, idx);
  CREATE TABLE nics (
    uuid          TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    mac           TEXT NOT NULL UNIQUE,
    link          TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX nics_instance ON nics(instance_uuid, idx);
  CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    op_type    TEXT NOT NULL,
    op_json    TEXT NOT NULL,
    summary    TEXT NOT NULL,
    locks      TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('queued', 'running', 'success', 'error', 'canceled')),
    error      TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    started_at TEXT NOT NULL DEFAULT '',
    ended_at   TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX jobs_status ON jobs(status);
  CREATE TABLE job_log (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    time    TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
  );
  `,
  // 2: the devices a job is about to hot-plug, written before the node is
  // called, so that start-up reconciliation knows them after a crash.
  `
  CREATE TABLE job_hotplug (
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    device_uuid TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('add', 'remove', 'modify')),
    PRIMARY KEY (job_id, device_uuid, action)
  );
  `,
  // 3: operation ids (jobs/operations.ts): one row per live change sent to a
  // node, committed before the call; the change the master commits when the
  // node reports success; devices whose removal the guest has not
  // acknowledged; the last node operation-log revision applied per instance
  // (convergence.ts); and a per-instance history of changes the node made
  // on its own.
  `
  CREATE TABLE operations (
    id            TEXT PRIMARY KEY,
    job_id        INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    instance_uuid TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    node_uuid     TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('nic', 'disk', 'resources')),
    action        TEXT NOT NULL CHECK (action IN ('add', 'remove', 'modify', 'resize')),
    device_uuid   TEXT NOT NULL DEFAULT '',
    change_json   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('sent', 'removal_pending', 'succeeded', 'failed')),
    error_code    TEXT NOT NULL DEFAULT '',
    error         TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    settled_at    TEXT NOT NULL DEFAULT '',
    settled_by    TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX operations_open ON operations(state) WHERE state IN ('sent', 'removal_pending');
  CREATE INDEX operations_job ON operations(job_id);
  CREATE INDEX operations_device ON operations(device_uuid);
  ALTER TABLE nics ADD COLUMN removal_pending TEXT NOT NULL DEFAULT '';
  ALTER TABLE disks ADD COLUMN removal_pending TEXT NOT NULL DEFAULT '';
  CREATE TABLE oplog_cursors (
    instance_uuid TEXT PRIMARY KEY REFERENCES instances(uuid) ON DELETE CASCADE,
    node_uuid     TEXT NOT NULL,
    revision      INTEGER NOT NULL CHECK (revision >= 0)
  );
  CREATE TABLE instance_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
    time          TEXT NOT NULL,
    message       TEXT NOT NULL
  );
  CREATE INDEX instance_history_instance ON instance_history(instance_uuid, id);
  `,
  // 4: the epoch of the node journal a cursor belongs to (a new epoch: read from 0).
  `
  ALTER TABLE oplog_cursors ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
  `,
  // 5: certificate roles (config/cert-store.ts): the SHA-256 fingerprint of
  // each node's certificate, recorded at gnt-node add (and renew-crypto);
  // and the certificates that are refused on every connection the master
  // makes or accepts (a removed node's).
  `
  ALTER TABLE nodes ADD COLUMN cert_fingerprint TEXT NOT NULL DEFAULT '';
  CREATE TABLE revoked_certs (
    fingerprint TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  TEXT NOT NULL
  );
  `,
  // 6: a NIC's live parameters (issue 12): link state, rate limit (Mbit/s,
  // 0 none), tap queues and device model.
  `
  ALTER TABLE nics ADD COLUMN link_state TEXT NOT NULL DEFAULT 'up' CHECK (link_state IN ('up', 'down'));
  ALTER TABLE nics ADD COLUMN rate_mbit INTEGER NOT NULL DEFAULT 0 CHECK (rate_mbit >= 0);
  ALTER TABLE nics ADD COLUMN queues INTEGER NOT NULL DEFAULT 1 CHECK (queues BETWEEN 1 AND 8);
  ALTER TABLE nics ADD COLUMN model TEXT NOT NULL DEFAULT 'virtio' CHECK (model IN ('virtio', 'e1000', 'rtl8139'));
  `,
  // 7 (issue 12, SCSI and pmem): a disk's bus ('' virtio-blk, 'scsi') and type ('' disk, 'pmem').
  `
  ALTER TABLE disks ADD COLUMN disk_bus TEXT NOT NULL DEFAULT '' CHECK (disk_bus IN ('', 'scsi'));
  ALTER TABLE disks ADD COLUMN disk_type TEXT NOT NULL DEFAULT '' CHECK (disk_type IN ('', 'pmem'));
  `,
  // 8 (issue 13, storage): a disk's template ('' file, 'blockdev', 'rbd') and
  // what it adopted ('' made by the node, '/dev/XYZ', 'POOL/IMAGE').
  `
  ALTER TABLE disks ADD COLUMN template TEXT NOT NULL DEFAULT '' CHECK (template IN ('', 'blockdev', 'rbd'));
  ALTER TABLE disks ADD COLUMN adopt TEXT NOT NULL DEFAULT '' CHECK (template != 'blockdev' OR adopt != '');
  `,
  // 9 (issue 13, live I/O limits): a disk's limits (QMP block_set_io_throttle),
  // 0 none; ops/s and bytes/s. The table is rebuilt (SQLite cannot alter a
  // CHECK) so that size_bytes may be 0: an adopted device's size is the
  // device's own until a grow-disk records one (gnt-instance info shows the
  // node's then). No table references disks.
  `
  CREATE TABLE disks_v9 (
    uuid            TEXT PRIMARY KEY,
    instance_uuid   TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
    idx             INTEGER NOT NULL CHECK (idx >= 0),
    size_bytes      INTEGER NOT NULL CHECK (size_bytes > 0 OR (size_bytes = 0 AND adopt != '')),
    removal_pending TEXT NOT NULL DEFAULT '',
    disk_bus        TEXT NOT NULL DEFAULT '' CHECK (disk_bus IN ('', 'scsi')),
    disk_type       TEXT NOT NULL DEFAULT '' CHECK (disk_type IN ('', 'pmem')),
    template        TEXT NOT NULL DEFAULT '' CHECK (template IN ('', 'blockdev', 'rbd')),
    adopt           TEXT NOT NULL DEFAULT '' CHECK (template != 'blockdev' OR adopt != ''),
    iops            INTEGER NOT NULL DEFAULT 0 CHECK (iops >= 0),
    iops_rd         INTEGER NOT NULL DEFAULT 0 CHECK (iops_rd >= 0),
    iops_wr         INTEGER NOT NULL DEFAULT 0 CHECK (iops_wr >= 0),
    bps             INTEGER NOT NULL DEFAULT 0 CHECK (bps >= 0),
    bps_rd          INTEGER NOT NULL DEFAULT 0 CHECK (bps_rd >= 0),
    bps_wr          INTEGER NOT NULL DEFAULT 0 CHECK (bps_wr >= 0)
  );
  INSERT INTO disks_v9 (uuid, instance_uuid, idx, size_bytes, removal_pending, disk_bus, disk_type, template, adopt)
    SELECT uuid, instance_uuid, idx, size_bytes, removal_pending, disk_bus, disk_type, template, adopt FROM disks;
  DROP TABLE disks;
  ALTER TABLE disks_v9 RENAME TO disks;
  CREATE INDEX disks_instance ON disks(instance_uuid, idx);
  `,
  // 10 (issue 15, audit trail): who submitted a job (the client certificate's
  // identity, or the local administrator on the unix socket; '' before).
  `
  ALTER TABLE jobs ADD COLUMN requested_by TEXT NOT NULL DEFAULT '';
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Opens (creating if needed, mode 0600) and migrates the database. */
export function openDb(file: string, options: { create?: boolean } = {}): Db {
  if (!options.create && !fs.existsSync(file))
    throw new Error(`no cluster database at ${file}: run "gnt-cluster init" first (or give the right --cluster-dir)`);
  if (options.create && !fs.existsSync(file)) fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  for (const suffix of ['-wal', '-shm']) if (fs.existsSync(file + suffix)) fs.chmodSync(file + suffix, 0o600);
  return db;
}

function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION)
    throw new Error(`the cluster database has schema version ${version}, newer than this program (${SCHEMA_VERSION})`);
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

export const nowIso = (): string => new Date().toISOString();
