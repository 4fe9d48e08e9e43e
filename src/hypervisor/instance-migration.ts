/**
 * One instance's part in a live migration, on either node (see
 * docs/migration.md): the source marks the instance and sends its state; the
 * target waits paused for it, then resumes the guest; either side can undo
 * its part; the source releases its copy once the target runs. Every method
 * here runs inside the instance's queue (KvmInstance calls it through
 * serialize), except `status`, which only reads.
 */
import { allDevices, isPlaced } from './device-kinds';
import { checkHostPaths } from './boot-files';
import type { HostPathPolicy } from './host-paths';
import { InstanceStateError } from './errors';
import {
  cancelMigration,
  isActive,
  listenIncoming,
  readMigration,
  resumeGuest,
  runState,
  sendMigration,
  waitIncomingLoaded,
  type MigrationMark,
  type DiskCopyMark,
  type MigrationParams,
  type MigrationProgress,
} from './migration';
import { abortMirrors, disksToCopy, endMirrors, exportDisks, mirrorProblem, mirrorStatus, startMirrors, stopExports, type MirrorView } from './disk-mirror';
import { MIGRATION_TLS_ID, addMigrationTls, removeMigrationTls, type QemuFilesOwner, type TlsMaterial } from './migration-tls';
import { qemuOwner } from './pmem';
import { applyRecordedLinks, normalizeMac } from './nic';
import { applyRecordedIoLimits } from './recorded-io-limits';
import { hasResourceIntents } from './resource-intents';
import type { Monitor } from './qmp-client';
import type { HvParams, RuntimeData } from './runtime-file';
import { validateRuntime } from './runtime-validate';
import { assertBridge } from './tap';

/** This node's view of a migration of the instance (MigrationStatus). */
export interface MigrationView {
  role: MigrationMark['role'] | '';
  peer: string;
  qemuAlive: boolean;
  runState: string;
  progress?: MigrationProgress;
  /** This node's migration copies disks. */
  diskCopy: boolean;
  /** Source with a disk copy: its mirror jobs. */
  mirrors?: MirrorView[];
  /** Source: the copy was ended consistently after the stream. */
  diskCopyEnded: boolean;
}

/** How the source sends: TLS to the target, and the disk copy (phase 1: disksOnly, the mirrors; phase 2: the stream). */
export interface SendOptions {
  tls?: { material: TlsMaterial; hostname: string };
  copy?: { nbd: string; disksOnly: boolean };
}

/** How a runtime file carried from another node is started here. */
export interface ReceiveOptions {
  /** true: paused, waiting for the migration stream; false: boot (failover). */
  incoming: boolean;
  /** The node the instance comes from. */
  peer: string;
  /** The address the incoming QEMU listens on (this node's own). */
  listenHost: string;
  /** incoming: accept the stream (and the NBD copy) over TLS only, with this node's material. */
  tls?: TlsMaterial;
  /** incoming: the disks were pointed at empty files this node created (these): export them over NBD for the copy. */
  copyFiles?: string[];
}

/** Where QEMU reads files it is given by path (migration-tls.ts): its user and chroot by the hvparams. */
export function qemuFilesOwner(hv: HvParams): QemuFilesOwner {
  const chroot = typeof hv.chroot === 'string' && hv.chroot !== '' ? hv.chroot : undefined;
  return { owner: qemuOwner(hv), ...(chroot ? { chroot } : {}) };
}

/**
 * Target, after QEMU started with -incoming defer: TLS creds (server), the
 * NBD exports of the disks to copy, then the listener. Returns the URI and
 * what the mark must record.
 */
export async function openIncoming(mon: Monitor, data: RuntimeData, how: ReceiveOptions): Promise<{ uri: string; diskCopy?: DiskCopyMark; tls: boolean }> {
  const creds = how.tls ? await addMigrationTls(mon, 'server', how.tls, qemuFilesOwner(data.hvparams)) : '';
  let diskCopy: DiskCopyMark | undefined;
  if (how.copyFiles) {
    const disks = disksToCopy(data);
    const nbd = await exportDisks(mon, how.listenHost, disks, creds || undefined);
    diskCopy = { disks, nbd, files: [...how.copyFiles] };
  }
  const uri = await listenIncoming(mon, how.listenHost, creds);
  return { uri, ...(diskCopy ? { diskCopy } : {}), tls: creds !== '' };
}

export interface MigrationHost {
  readonly name: string;
  data(): RuntimeData;
  save(): void;
  monitor(): Promise<Monitor>;
  pid(): number | undefined;
  assertNoMigration(): void;
  stopNow(timeoutMs: number): Promise<void>;
  /** Kills QEMU (if any) and deletes the instance directory; disks are kept. */
  destroyNow(): Promise<void>;
  /** Deletes the instance directory (QEMU is gone). */
  removeDir(): void;
}

/**
 * A carried runtime file, checked whole: a command we make, settled devices
 * with slots, bridges present here, and every disk, the kernel and the
 * initrd accepted by this node's HostPathPolicy (by resolution: a symlink
 * escaping the storage or image directory is refused).
 */
export function checkCarried(carried: RuntimeData, hostPaths: HostPathPolicy): RuntimeData {
  const data = JSON.parse(JSON.stringify(carried)) as RuntimeData;
  validateRuntime(data);
  for (const [kind, rec] of allDevices(data)) {
    const what = kind.label;
    if (rec.state) throw new InstanceStateError(`${what} ${rec.uuid} of ${data.instance} is ${rec.state}: settle it on the source first`);
    if (!isPlaced(kind, rec) || !rec.uuid) throw new InstanceStateError(`a ${what} of ${data.instance} has no PCI slot or uuid (old runtime file): restart the instance once on its node first`);
  }
  for (const nic of data.nics) {
    normalizeMac(nic.mac);
    if (nic.link) assertBridge(nic.link);
    delete nic.tap;
  }
  checkHostPaths(hostPaths, data, { boot: true });
  return data;
}

export class InstanceMigration {
  constructor(private readonly host: MigrationHost) {}

  /**
   * Source side: marks the instance as migrating to `peer` (hotplug refused
   * from now on, also after a restart of this process) and starts the
   * stream. Returns at once; follow it with status().
   */
  async start(uri: string, peer: string, params: MigrationParams, send: SendOptions = {}): Promise<MigrationProgress> {
    const m = this.host.data().migration;
    if (send.copy && !send.copy.disksOnly && m?.role === 'source' && m.diskCopy && m.peer === peer) return this.startStream(uri, params, send);
    return this.startNew(uri, peer, params, send);
  }

  /** Phase 2 of a migration with disk copy: every mirror is READY; the stream starts. */
  private async startStream(uri: string, params: MigrationParams, send: SendOptions): Promise<MigrationProgress> {
    const { host } = this;
    const m = host.data().migration!;
    const mon = await host.monitor();
    const views = await mirrorStatus(mon, m.diskCopy!.disks);
    const problem = mirrorProblem(views) ?? views.filter((v) => !v.ready).map((v) => `the copy of disk node ${v.node} is not ready yet (${v.status})`)[0];
    if (problem) throw new InstanceStateError(`instance ${host.name}: ${problem}; the stream cannot start`);
    m.uri = uri;
    host.save();
    await sendMigration(mon, uri, { ...params, ...(m.tls ? { tlsCreds: MIGRATION_TLS_ID, tlsHostname: send.tls?.hostname } : {}) });
    return readMigration(mon);
  }

  private async startNew(uri: string, peer: string, params: MigrationParams, send: SendOptions): Promise<MigrationProgress> {
    const { host } = this;
    host.assertNoMigration();
    if (host.pid() === undefined) throw new InstanceStateError(`instance ${host.name} is not running; a stopped instance is moved with failover`);
    const pending = allDevices(host.data()).find(([kind, rec]) => rec.state || !isPlaced(kind, rec));
    if (pending) throw new InstanceStateError(`${pending[0].label} ${pending[1].uuid} of ${host.name} is ${pending[1].state ?? 'without a PCI slot'}: settle it first (it would differ on the target)`);
    const r = host.data().resources;
    if (r && hasResourceIntents(r))
      throw new InstanceStateError(`a vCPU or DIMM change of ${host.name} is not settled yet: wait for it (it would differ on the target)`);
    const mon = await host.monitor();
    const disks = send.copy ? disksToCopy(host.data()) : [];
    host.data().migration = {
      role: 'source', peer, uri, since: new Date().toISOString(),
      ...(send.copy ? { diskCopy: { disks, nbd: send.copy.nbd } } : {}),
      ...(send.tls ? { tls: true } : {}),
    };
    host.save();
    try {
      const creds = send.tls ? await addMigrationTls(mon, 'client', send.tls.material, qemuFilesOwner(host.data().hvparams)) : undefined;
      if (send.copy) {
        const speedBps = params.maxBandwidthMiB ? Math.round(params.maxBandwidthMiB * 1024 * 1024) : 0;
        await startMirrors(mon, disks, { address: send.copy.nbd, tlsCreds: creds, tlsHostname: send.tls?.hostname, speedBps });
        if (send.copy.disksOnly) return readMigration(mon);
      }
      await sendMigration(mon, uri, { ...params, ...(creds ? { tlsCreds: creds, tlsHostname: send.tls?.hostname } : {}) });
    } catch (err) {
      if (disks.length) await abortMirrors(mon, disks).catch(() => undefined);
      await removeMigrationTls(mon);
      delete host.data().migration;
      host.save();
      throw err;
    }
    return readMigration(mon);
  }

  /**
   * Source, after the stream completed: ends the mirrors (the target's disks
   * are consistent from here on) and records it. Idempotent.
   */
  async endDiskCopy(): Promise<void> {
    const { host } = this;
    const m = host.data().migration;
    if (m?.role !== 'source' || !m.diskCopy) throw new InstanceStateError(`instance ${host.name} is not the source of a migration with disk copy on this node`);
    if (m.diskCopy.ended) return;
    if (host.pid() === undefined) throw new InstanceStateError(`instance ${host.name} has no QEMU on this node: its disk copy cannot be ended`);
    const mon = await host.monitor();
    const p = await readMigration(mon);
    if (p.state !== 'completed') throw new InstanceStateError(`instance ${host.name}: the stream has not completed (state ${p.state}); the disk copy is ended only after it`);
    await endMirrors(mon, m.diskCopy.disks);
    m.diskCopy.ended = true;
    host.save();
  }

  /** Read-only: answers while other operations wait. */
  async status(): Promise<MigrationView> {
    const m = this.host.data().migration;
    const view: MigrationView = { role: m?.role ?? '', peer: m?.peer ?? '', qemuAlive: false, runState: '', diskCopy: !!m?.diskCopy, diskCopyEnded: !!m?.diskCopy?.ended };
    if (this.host.pid() === undefined) return view;
    const mon = await this.host.monitor();
    const [state, progress] = await Promise.all([runState(mon), readMigration(mon)]);
    const copying = m?.role === 'source' && m.diskCopy && !m.diskCopy.ended;
    const mirrors = copying ? await mirrorStatus(mon, m.diskCopy!.disks) : undefined;
    return { ...view, qemuAlive: true, runState: state, progress, ...(mirrors ? { mirrors } : {}) };
  }

  /** Target side, once the stream is complete: the guest runs here from now on. Idempotent. */
  async finishIncoming(): Promise<void> {
    const { host } = this;
    const m = host.data().migration;
    if (host.pid() === undefined) throw new InstanceStateError(`instance ${host.name} has no QEMU on this node to resume`);
    const mon = await host.monitor();
    if (m?.role === 'source') throw new InstanceStateError(`instance ${host.name} is the source of its migration here, not the target`);
    if (m?.role === 'target') await waitIncomingLoaded(mon, host.name);
    if (m?.role === 'target' && m.diskCopy) await stopExports(mon);
    if (m?.tls) await removeMigrationTls(mon);
    await applyRecordedLinks(mon, host.data().nics); // the recorded link state, whatever the stream carried
    await applyRecordedIoLimits(mon, host.data()); // the recorded I/O limits (also set at the paused start)
    await resumeGuest(mon);
    delete host.data().migration;
    host.save();
  }

  /**
   * Undoes this node's part. Target: QEMU killed, directory deleted;
   * 'destroyed'. Source: migration cancelled if still running, guest
   * resumed, mark cleared; 'resumed'. Refuses a target whose guest already
   * runs (it was finished).
   */
  async abort(): Promise<'destroyed' | 'resumed' | 'nothing'> {
    const { host } = this;
    const m = host.data().migration;
    if (m?.role === 'target') {
      if (host.pid() !== undefined && (await runState(await host.monitor())) === 'running')
        throw new InstanceStateError(`instance ${host.name} already runs here (its migration was finished); release the other copy instead`);
      await host.destroyNow();
      return 'destroyed';
    }
    if (m?.role !== 'source') return 'nothing';
    if (host.pid() !== undefined) {
      const mon = await host.monitor();
      await cancelMigration(mon);
      if (m.diskCopy) await abortMirrors(mon, m.diskCopy.disks);
      await removeMigrationTls(mon);
      await resumeGuest(mon);
    }
    delete host.data().migration;
    host.save();
    return 'resumed';
  }

  /**
   * The instance runs on another node now: stops QEMU here and deletes the
   * instance directory (disks are shared and kept). Refused while the guest
   * runs here, so a released copy can never be the only one.
   */
  async release(timeoutMs: number): Promise<void> {
    const { host } = this;
    if (host.pid() !== undefined) {
      const mon = await host.monitor();
      const [state, p] = await Promise.all([runState(mon), readMigration(mon)]);
      if (state === 'running' || isActive(p.state))
        throw new InstanceStateError(`refusing to release instance ${host.name}: its guest ${state === 'running' ? 'runs' : 'is being migrated'} on this node (run state ${state}, migration ${p.state})`);
    }
    await host.stopNow(timeoutMs);
    host.removeDir();
  }
}
