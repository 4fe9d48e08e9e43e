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
