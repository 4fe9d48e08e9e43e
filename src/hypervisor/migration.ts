/**
 * Live migration through QMP: the target's listener (`-incoming defer` +
 * `migrate-incoming` on a port the kernel picks, bound to one address), the
 * source's `migrate`, progress from `query-migrate`, cancel and resume.
 *
 * The target QEMU is always started with `-S`: it does not run the guest when
 * the stream ends, only when told to (`cont`, by finishIncoming). Until then
 * the source is the only copy that has ever run since the migration began, so
 * resuming it is always safe; this is what makes every interruption
 * repairable (see docs/migration.md).
 */
import { InstanceStateError, InvalidArgumentError } from './errors';
import type { Monitor } from './qmp-client';

/** Who this node is in a migration, recorded in the runtime file while it lasts. */
export interface MigrationMark {
  role: 'source' | 'target';
  /** The other node. */
  peer: string;
  /** Where the stream goes (source) or arrives (target). */
  uri?: string;
  /** ISO time the mark was set. */
  since: string;
  /** The nodes do not share storage: the disks are copied over NBD (disk-mirror.ts). */
  diskCopy?: DiskCopyMark;
  /** The stream (and the NBD copy) use TLS (migration-tls.ts). */
  tls?: boolean;
}

/** A migration that copies disks, as each side records it. */
export interface DiskCopyMark {
  /** The disks copied: uuid, block node (the NBD export name), host path on this node. */
  disks: Array<{ uuid: string; node: string; path: string }>;
  /** HOST:PORT of the target's NBD server. */
  nbd: string;
  /** Target: the disk files this node created for the copy, deleted when the migration is undone. */
  files?: string[];
  /** Source: the copy was ended consistently after the stream (endMirrors). */
  ended?: boolean;
}

export interface MigrationParams {
  /** MiB/s; 0 or absent: QEMU's default. */
  maxBandwidthMiB?: number;
  /** ms; 0 or absent: QEMU's default. */
  downtimeLimitMs?: number;
  /** A tls-creds-x509 object (endpoint=client) and the name the target's certificate must carry; absent: plain TCP. */
  tlsCreds?: string;
  tlsHostname?: string;
}

/** query-migrate, reduced to what callers report. */
export interface MigrationProgress {
  /** none, setup, active, completed, failed, cancelling, cancelled, ... */
  state: string;
  totalBytes: number;
  transferredBytes: number;
  remainingBytes: number;
  throughputBps: number;
  totalTimeMs: number;
  /** Expected while active, actual once completed; -1 unknown. */
  downtimeMs: number;
  error: string;
}

interface QueryMigrate {
  status?: string;
  ram?: { total?: number; transferred?: number; remaining?: number; mbps?: number };
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'error-desc'?: string;
  'socket-address'?: Array<{ type?: string; host?: string; port?: string | number }>;
}

/** QEMU's own defaults (MAX_THROTTLE and the default downtime limit). */
export const DEFAULT_BANDWIDTH_MIB = 128;
export const DEFAULT_DOWNTIME_MS = 300;

const ACTIVE_STATES = new Set(['setup', 'active', 'pre-switchover', 'device', 'wait-unplug', 'postcopy-active', 'cancelling']);

const HOST_RULE = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))$/;

/** Parses `tcp:HOST:PORT`, the only transport we send to or listen on. */
export function parseMigrationUri(uri: string): { host: string; port: number } {
  const m = /^tcp:(.+):(\d{1,5})$/.exec(uri);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !HOST_RULE.test(m[1]) || port < 1 || port > 65535)
    throw new InvalidArgumentError(`migration address "${uri}" is not tcp:HOST:PORT`);
  return { host: m[1], port };
}

/** A concrete address to listen on: not a wildcard, which would expose the port on every interface. */
export function assertListenHost(host: string): string {
  if (!HOST_RULE.test(host) || host === '0.0.0.0' || host === '[::]' || host === '::')
    throw new InvalidArgumentError(`migration address "${host}" must be one concrete address of this node, not a wildcard`);
  return host;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** QEMU's run state (query-status): running, paused, postmigrate, inmigrate, prelaunch, ... */
export async function runState(mon: Monitor): Promise<string> {
  const s = await mon.execute<{ status: string }>('query-status');
  return s.status;
}

export async function readMigration(mon: Monitor): Promise<MigrationProgress> {
  const q = await mon.execute<QueryMigrate>('query-migrate');
  return {
    state: q.status ?? 'none',
    totalBytes: q.ram?.total ?? 0,
    transferredBytes: q.ram?.transferred ?? 0,
    remainingBytes: q.ram?.remaining ?? 0,
    throughputBps: Math.round(((q.ram?.mbps ?? 0) * 1e6) / 8),
    totalTimeMs: q['total-time'] ?? 0,
    downtimeMs: q.downtime ?? q['expected-downtime'] ?? -1,
    error: q['error-desc'] ?? '',
  };
}

/**
 * Target: opens the listener of a QEMU started with `-incoming defer` on
 * `host`, port chosen by the kernel (no race for a free port), and returns
 * the URI the source must send to. QEMU accepts one connection on it.
 */
export async function listenIncoming(mon: Monitor, host: string, tlsCreds = ''): Promise<string> {
  // Set before the listener opens: with creds, a client without a certificate the CA signed fails the handshake.
  await mon.execute('migrate-set-parameters', { 'tls-creds': tlsCreds });
  await mon.execute('migrate-incoming', { uri: `tcp:${assertListenHost(host)}:0` });
  const q = await mon.execute<QueryMigrate>('query-migrate');
  const addr = q['socket-address']?.find((a) => a.type === 'inet' && a.port !== undefined);
  if (!addr) throw new InstanceStateError(`the incoming QEMU did not report the port it listens on (query-migrate: ${JSON.stringify(q)})`);
  return `tcp:${host}:${String(addr.port)}`;
}

/** Source: sets the limits and starts the stream; returns once QEMU has accepted `migrate`. */
export async function sendMigration(mon: Monitor, uri: string, params: MigrationParams): Promise<void> {
  parseMigrationUri(uri);
  // Always set both: a QEMU keeps the limits of an earlier (aborted) migration otherwise.
  await mon.execute('migrate-set-parameters', {
    'max-bandwidth': Math.round((params.maxBandwidthMiB || DEFAULT_BANDWIDTH_MIB) * 1024 * 1024),
    'downtime-limit': Math.round(params.downtimeLimitMs || DEFAULT_DOWNTIME_MS),
    // Always set too, so a plain migration never inherits the creds of an earlier one.
    'tls-creds': params.tlsCreds ?? '',
    'tls-hostname': params.tlsCreds ? (params.tlsHostname ?? '') : '',
  });
  await mon.execute('migrate', { uri });
}

/** Source: cancels a migration that still runs and waits until QEMU says it has ended. Returns the final state. */
export async function cancelMigration(mon: Monitor, timeoutMs = 10_000): Promise<string> {
  let p = await readMigration(mon);
  if (!ACTIVE_STATES.has(p.state)) return p.state;
  await mon.execute('migrate_cancel');
  const deadline = Date.now() + timeoutMs;
  while (ACTIVE_STATES.has(p.state) && Date.now() < deadline) {
    await sleep(50);
    p = await readMigration(mon);
  }
  if (ACTIVE_STATES.has(p.state)) throw new InstanceStateError(`QEMU did not end the migration within ${timeoutMs} ms of migrate_cancel (state ${p.state})`);
  return p.state;
}

/**
 * Target: waits until QEMU has loaded the whole stream. The source reports
 * "completed" once it has sent the last byte; the target says so a moment
 * later, when it has read it.
 */
export async function waitIncomingLoaded(mon: Monitor, instance: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const p = await readMigration(mon);
    if (p.state === 'completed') return;
    if (p.state === 'failed' || p.state === 'cancelled' || p.state === 'none' || Date.now() > deadline)
      throw new InstanceStateError(
        `the migration stream of ${instance} has not completed on this node (state ${p.state}${p.error ? `: ${p.error}` : ''}); the source keeps the instance`,
      );
    await sleep(20);
  }
}

/** Runs the guest if it is paused (after a migration that was cancelled, failed, or completed but then undone). */
export async function resumeGuest(mon: Monitor): Promise<boolean> {
  const state = await runState(mon);
  if (state === 'running') return false;
  if (state !== 'paused' && state !== 'postmigrate' && state !== 'prelaunch' && state !== 'finish-migrate')
    throw new InstanceStateError(`the guest cannot be resumed from run state ${state}`);
  await mon.execute('cont');
  return true;
}

export function isActive(state: string): boolean {
  return ACTIVE_STATES.has(state);
}
