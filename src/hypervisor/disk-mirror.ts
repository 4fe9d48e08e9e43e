/**
 * Live migration with local disks: the disk contents travel over NBD while
 * the guest runs (QMP only; see docs/migration.md).
 *
 *   target: the incoming QEMU (-incoming defer) opens empty disk files of the
 *           right sizes; `nbd-server-start` on the node's migration address
 *           (TLS when creds are given) and one writable `block-export-add`
 *           per disk, named by its block node. Without `allow-inactive` (QEMU
 *           10) the export activates the node, which an incoming QEMU keeps
 *           inactive otherwise; with it, every write of the copy fails with
 *           EPERM (seen on QEMU 10.0).
 *   source: per disk `blockdev-add` of an NBD client node (TLS) and
 *           `blockdev-mirror` sync=full, copy-mode=write-blocking (once READY,
 *           every guest write completes on both sides, so the copy converges
 *           whatever the guest writes); the RAM migration starts once every
 *           job is READY; after it completed, `block-job-cancel` of a READY
 *           mirror ends it with the target consistent (QEMU's documented
 *           "complete without pivot").
 *   abort:  forced cancel of every mirror job and deletion of the NBD nodes;
 *           the source disks were never touched by the copy.
 */
import * as net from 'node:net';
import { InstanceStateError } from './errors';
import { diskId } from './disk';
import { scsiDiskId } from './scsi-disk';
import type { Monitor } from './qmp-client';
import type { RuntimeData } from './runtime-file';
import { templateOf } from './disk-template';

/** A disk whose contents must be copied: its block node (also the NBD export name) and host path. */
export interface CopiedDisk {
  uuid: string;
  node: string;
  path: string;
}

/**
 * Every disk of `data` that lives in a node's own storage (template file):
 * what a migration between nodes without shared storage copies. blockdev
 * disks (the target must see the same device) and rbd images are shared.
 */
export function disksToCopy(data: RuntimeData): CopiedDisk[] {
  const out: CopiedDisk[] = [];
  for (const d of data.block_devices) if (templateOf(d) === 'file') out.push({ uuid: d.uuid, node: diskId(d, d.pci as number), path: d.path });
  for (const d of data.scsi_disks ?? []) if (templateOf(d) === 'file') out.push({ uuid: d.uuid, node: scsiDiskId(d), path: d.path });
  return out;
}

/** One mirror job as query-block-jobs reports it. */
export interface MirrorView {
  node: string;
  /** created, running, ready, standby, waiting, pending, aborting, concluded, ... */
  status: string;
  ready: boolean;
  copiedBytes: number;
  totalBytes: number;
  error: string;
}

interface BlockJobInfo {
  device: string;
  type: string;
  status: string;
  ready: boolean;
  offset: number;
  len: number;
  error?: string;
}

const jobId = (node: string): string => `mirror-${node}`;
const nbdNode = (node: string): string => `nbd-${node}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on `host` (the kernel's choice), for nbd-server-start, which cannot report the port it got. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Target: starts QEMU's NBD server on `host` and exports every disk writable.
 * Returns host:port. The server accepts TLS clients only when `tlsCreds` (a
 * tls-creds-x509 object, endpoint=server, verify-peer=on) is given.
 */
export async function exportDisks(mon: Monitor, host: string, disks: CopiedDisk[], tlsCreds?: string): Promise<string> {
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    port = await freePort(host);
    try {
      await mon.execute('nbd-server-start', { addr: { type: 'inet', data: { host, port: String(port) } }, ...(tlsCreds ? { 'tls-creds': tlsCreds } : {}) });
      break;
    } catch (err) {
      // Another process took the port between the probe and QEMU's bind: try another one.
      if (attempt >= 4 || !/in use/i.test(String((err as Error).message))) throw err;
    }
  }
  try {
    for (const d of disks)
      await mon.execute('block-export-add', { type: 'nbd', id: `export-${d.node}`, 'node-name': d.node, name: d.node, writable: true });
  } catch (err) {
    await stopExports(mon);
    throw err;
  }
  return `${host}:${port}`;
}

/** Target: stops the NBD server (and with it every export). Harmless when none runs. */
export async function stopExports(mon: Monitor): Promise<void> {
  try {
    await mon.execute('nbd-server-stop');
  } catch (err) {
    if (!/not running/i.test(String((err as Error).message))) throw err;
  }
}

export interface MirrorTarget {
  /** host:port of the target's NBD server. */
  address: string;
  /** tls-creds-x509 object (endpoint=client) and the name the target's certificate must carry. */
  tlsCreds?: string;
  tlsHostname?: string;
  /** Bytes per second per job; 0: unlimited. */
  speedBps?: number;
}

function splitAddress(address: string): { host: string; port: string } {
  const m = /^(.+):(\d{1,5})$/.exec(address);
  if (!m) throw new InstanceStateError(`NBD address "${address}" is not HOST:PORT`);
  return { host: m[1], port: m[2] };
}

/** Source: one NBD client node and one mirror job per disk. On failure undoes what it did. */
export async function startMirrors(mon: Monitor, disks: CopiedDisk[], target: MirrorTarget): Promise<void> {
  const server = { type: 'inet', ...splitAddress(target.address) };
  try {
    for (const d of disks) {
      await mon.execute('blockdev-add', {
        driver: 'nbd', 'node-name': nbdNode(d.node), server, export: d.node,
        ...(target.tlsCreds ? { 'tls-creds': target.tlsCreds, ...(target.tlsHostname ? { 'tls-hostname': target.tlsHostname } : {}) } : {}),
      });
      await mon.execute('blockdev-mirror', {
        'job-id': jobId(d.node), device: d.node, target: nbdNode(d.node), sync: 'full', 'copy-mode': 'write-blocking',
        'auto-dismiss': false, ...(target.speedBps ? { speed: target.speedBps } : {}),
      });
    }
  } catch (err) {
    await abortMirrors(mon, disks).catch(() => undefined);
    throw err;
  }
}

async function jobs(mon: Monitor): Promise<BlockJobInfo[]> {
  return mon.execute<BlockJobInfo[]>('query-block-jobs');
}

/** Source: the mirror jobs of `disks`; a disk whose job is gone is reported as concluded with an error. */
export async function mirrorStatus(mon: Monitor, disks: CopiedDisk[]): Promise<MirrorView[]> {
  const list = await jobs(mon);
  return disks.map((d) => {
    const j = list.find((x) => x.device === jobId(d.node));
    if (!j) return { node: d.node, status: 'gone', ready: false, copiedBytes: 0, totalBytes: 0, error: 'no mirror job' };
    return { node: d.node, status: j.status, ready: j.ready, copiedBytes: j.offset, totalBytes: j.len, error: j.error ?? '' };
  });
}

/** Why the copy cannot go on (a job failed or vanished); undefined while it is fine. */
export function mirrorProblem(views: MirrorView[]): string | undefined {
  const bad = views.find((v) => v.error || v.status === 'concluded' || v.status === 'aborting' || v.status === 'gone');
  return bad ? `the copy of disk node ${bad.node} stopped (job ${bad.status}${bad.error ? `: ${bad.error}` : ''})` : undefined;
}

async function waitConcluded(mon: Monitor, ids: string[], timeoutMs: number): Promise<BlockJobInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list = (await jobs(mon)).filter((j) => ids.includes(j.device));
    if (list.every((j) => j.status === 'concluded' || j.status === 'null')) return list;
    if (Date.now() > deadline)
      throw new InstanceStateError(`mirror jobs did not end within ${timeoutMs} ms: ${list.map((j) => `${j.device} ${j.status}`).join(', ')}`);
    await sleep(20);
  }
}

async function dismissAndDelete(mon: Monitor, disks: CopiedDisk[], concluded: BlockJobInfo[]): Promise<void> {
  for (const j of concluded) await mon.execute('job-dismiss', { id: j.device }).catch(() => undefined);
  for (const d of disks)
    await mon.execute('blockdev-del', { 'node-name': nbdNode(d.node) }).catch((err: Error) => {
      if (!/not found|cannot find/i.test(err.message)) throw err;
    });
}

/**
 * Source, after the RAM migration completed: ends every READY mirror with
 * block-job-cancel, which flushes what is left and leaves the target
 * consistent, then drops the NBD nodes. Throws if a job had failed.
 */
export async function endMirrors(mon: Monitor, disks: CopiedDisk[], timeoutMs = 60_000): Promise<void> {
  const views = await mirrorStatus(mon, disks);
  const problem = mirrorProblem(views) ?? views.filter((v) => !v.ready).map((v) => `the copy of disk node ${v.node} is not ready (${v.status})`)[0];
  if (problem) throw new InstanceStateError(problem);
  for (const d of disks) await mon.execute('block-job-cancel', { device: jobId(d.node) });
  const done = await waitConcluded(mon, disks.map((d) => jobId(d.node)), timeoutMs);
  const failed = done.find((j) => j.error);
  await dismissAndDelete(mon, disks, done);
  if (failed) throw new InstanceStateError(`the copy of ${failed.device} failed at its end: ${failed.error}`);
}

/** Source, undoing: force-cancels every mirror job of `disks` still there and drops the NBD nodes. Idempotent. */
export async function abortMirrors(mon: Monitor, disks: CopiedDisk[], timeoutMs = 30_000): Promise<void> {
  const ids = disks.map((d) => jobId(d.node));
  for (const j of (await jobs(mon)).filter((x) => ids.includes(x.device) && x.status !== 'concluded'))
    await mon.execute('block-job-cancel', { device: j.device, force: true }).catch(() => undefined);
  const done = await waitConcluded(mon, ids, timeoutMs);
  await dismissAndDelete(mon, disks, done);
}
