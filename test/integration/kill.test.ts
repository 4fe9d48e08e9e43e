/**
 * The kill test of issue 10: hotplug operations through the master
 * (`gnt-instance modify --hotplug ... --submit`) on a running test guest,
 * with gnt-noded SIGKILLed 0-60 ms after the submission or later in the
 * operation, and gnt-masterd SIGKILLed mid-job, each restarted. After every
 * operation, without any operator command, the test waits (at most
 * SETTLE_TIMEOUT_MS) until the job has finished and every record agrees, and
 * then reports every difference that is left:
 *
 *   - the master's configuration (`gnt-instance info --output json`),
 *   - the node's runtime file (<data dir>/<instance>/runtime.json),
 *   - QEMU: the taps and disk files it holds open (/proc/PID/fd), and
 *     `gnt-instance verify INSTANCE` when the CLI has that command,
 *   - the host: taps in this network namespace, disk files in the storage dir,
 *   - the guest's own console view (MACs, disks and their PCI addresses and
 *     sizes, CPUs present/online, MemTotal), and that it never rebooted,
 *   - gnt-noded's and QEMU's open fd counts, which must be the same whenever
 *     the device layout is the same as before.
 *
 * It is black-box: only the CLI, the daemons' processes and the files on the
 * node. Black-box also means it runs a frozen copy of the build (see
 * snapshotBuild in test/support/kill-harness.ts).
 *
 * Short version by default (CI); GNT_KILL_TEST_FULL=1 for the full one.
 * GNT_KILL_TEST_SEED=N repeats a run. The summary line at the end is what
 * docs/reliability.md quotes. The test fails if there is any divergence.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { guestFiles } from '../support/guest';
import { rbdAdmin, startCeph, stopCeph, type TestCeph } from '../support/ceph';
import type { CliRun } from '../support/cli-cluster';
import {
  ConsoleFollower,
  fdKindsDiff,
  fdSample,
  filesUnder,
  KillCluster,
  LogTail,
  pidFromFile,
  processAlive,
  qemuVcpuThreads,
  readRuntime,
  Rng,
  sleep,
  slotAddr,
  tapHostState,
  snapshotBuild,
  stableFdSample,
  taps,
  type FdSample,
  type GuestView,
  type RuntimeView,
} from '../support/kill-harness';

// ------------------------------------------------------------------ sizes

const FULL = process.env.GNT_KILL_TEST_FULL === '1';
/** Hotplug operations submitted through the master. */
const OPERATIONS = FULL ? 200 : 30;
/** gnt-noded SIGKILLed 0-60 ms after `--submit` printed the job id. */
const NODED_KILLS_EARLY = FULL ? 45 : 5;
/** gnt-noded SIGKILLed later, mid-operation (61-300 ms after the submission; jobs take about 10-450 ms). */
const NODED_KILLS_LATE = FULL ? 25 : 3;
/**
 * Operations where gnt-noded is SIGKILLed 0-60 ms after the submission, started
 * again, and SIGKILLed a second time 0-100 ms after it printed "listening"
 * (while its start-up reconcile and the master's catching up may run): two
 * kills each.
 */
const NODED_DOUBLE_KILLS = FULL ? 10 : 1;
const RESTART_KILL_MS: [number, number] = [0, 100];
/** All gnt-noded kills. */
const NODED_KILLS = NODED_KILLS_EARLY + NODED_KILLS_LATE + 2 * NODED_DOUBLE_KILLS;
/** gnt-masterd SIGKILLed mid-job (0-120 ms after the submission). */
const MASTERD_KILLS = FULL ? 24 : 4;
/**
 * GNT_KILL_TEST_STOP_AFTER=N ends the run after operation N, with the same
 * plan and the same first N operations as the whole run of that seed (to
 * repeat an early divergence quickly).
 */
const STOP_AFTER = process.env.GNT_KILL_TEST_STOP_AFTER ? Number(process.env.GNT_KILL_TEST_STOP_AFTER) : OPERATIONS;
/** How long the test waits, with no operator command, for the job to end and every record to agree. */
const SETTLE_TIMEOUT_MS = 60_000;
const EARLY_KILL_MS: [number, number] = [0, 60];
const LATE_KILL_MS: [number, number] = [61, 300];
const MASTERD_KILL_MS: [number, number] = [0, 120];
/** How long a killed daemon stays down before the test starts it again. */
const RESTART_PAUSE_MS: [number, number] = [0, 1500];

// ------------------------------------------------------------ the instance

const INSTANCE = 'kill1';
const BRIDGE = 'gntkillbr0';
/** The second bridge NICs are moved to and back (issue 12's live bridge change). */
const BRIDGE2 = 'gntkillbr1';
const BOOT_VCPUS = 1;
/** maxvcpus: under TCG a QEMU process creates at most this many vCPU threads ever (src/hypervisor/resize.ts), so it bounds the vCPU adds of the whole run. */
const MAX_VCPUS = 8;
/** The test never grows the guest above this many vCPUs (TCG on 2 cores). */
const VCPU_CAP = 4;
const BOOT_MEMORY_MIB = 256;
const DIMM_MIB = 128;
/** QEMU's memory slots (memoryOption in src/hypervisor/qemu-command.ts gives slots=4). */
const DIMM_SLOTS = 4;
const MAX_MEMORY_MIB = BOOT_MEMORY_MIB + DIMM_SLOTS * DIMM_MIB;
const MAX_NICS = 5;
const MAX_DISKS = 5;
/** SCSI disks (LUNs on the virtio-scsi controller) and virtio-pmem devices, counted apart from the virtio-blk disks. */
const MAX_SCSI_DISKS = 4;
const MAX_PMEM = 1;
const PMEM_MIB = 128;
/** NIC rate limits the kill test sets (Mbit/s; 0 removes the limit). */
const RATES_MBIT = [0, 10, 100];
const DISK_SIZES_MIB = [8, 12, 16, 20, 24, 28];
/** RBD disks (on the one-node Ceph this test starts) and how much a grow-disk adds. */
const MAX_RBD_DISKS = 2;
const GROW_MIB = [4, 8];
/** gnt-noded's TCP connections (the master's gRPC channels) above this count are reported as a leak. */
const MAX_NODED_TCP = 12;
/** A guest heartbeat that does not advance for this long is a paused or hung guest (TCG on a busy machine can be slow, not this slow). */
const GUEST_STALL_MS = 10_000;
/** Guest MemTotal may differ from the expected growth by this fraction. */
const MEM_TOLERANCE = 0.02;

type OpKind = 'nic-add' | 'nic-remove' | 'nic-relink' | 'nic-link-state' | 'nic-rate' | 'disk-add' | 'scsi-add' | 'pmem-add' | 'rbd-add' | 'disk-grow' | 'disk-remove' | 'vcpu-up' | 'vcpu-down' | 'dimm-add';
type KillMode = 'none' | 'noded-early' | 'noded-late' | 'noded-double' | 'masterd';

interface CfgView {
  vcpus: number;
  maxvcpus: number;
  memoryMib: number;
  maxmemMib: number;
  nics: Array<{ index: number; uuid: string; mac: string; link: string; linkState: string; rateMbit: number; state?: string }>;
  disks: Array<{ index: number; uuid: string; sizeBytes: number; flavour: 'virtio' | 'scsi' | 'pmem'; template: string; state?: string }>;
  /** Live changes the master sent whose outcome is not final (issue 10's operations table), if it shows them. */
  openOps: Array<{ id: string; jobId: string; kind: string; action: string; uuid: string; state: string }>;
  /** Configuration changes no job asked for (convergence), if the master shows them. */
  history: string[];
}

interface Snapshot {
  cfg?: CfgView;
  cfgError?: string;
  rt: RuntimeView;
  guest?: GuestView;
  tick: number;
  taps: string[];
  /** Each runtime NIC's tap as the host has it: bridge and tc rate. */
  tapHost: Map<string, { bridge: string; rateMbit: number }>;
  storageFiles: string[];
  /** The RBD images of the pool with their sizes, or why they could not be listed. */
  rbdImages: Map<string, number>;
  rbdError?: string;
  qemuPid?: number;
  qemuFds?: FdSample;
  /** QEMU's vCPU threads. */
  qemuCpus?: number;
  /** gnt-instance verify: its differences (ERROR, FIX-FAILED) and notes, as the CLI formats them. */
  verify?: { code: number; errors: string[]; notes: string[] };
  job?: { status: string; error: string; log: string[]; endedAt: string };
  jobError?: string;
}

interface Op {
  kind: OpKind;
  args: string[];
  /** The whole CLI line when it is not `gnt-instance modify --hotplug ARGS --submit INSTANCE` (grow-disk). */
  command?: string[];
  text: string;
  /** What a success must leave in the configuration. */
  effect: (cfg: CfgView) => string | undefined;
}

interface Divergence {
  op: number;
  when: string;
  key: string;
  what: string;
}

type Json = Record<string, unknown>;

/**
 * gnt-instance verify --output json: { lines: [{severity, node, instance,
 * device, message}], differences, unrepaired, jobId }. ERROR and FIX-FAILED
 * lines are differences; NOTE lines are legitimate states (shown with the
 * device they name); INFO lines (fd counts) are not used. Falls back to the
 * text form ("SEVERITY: where: device: message").
 */
function parseVerify(r: CliRun): { code: number; errors: string[]; notes: string[] } {
  const errors: string[] = [];
  const notes: string[] = [];
  try {
    const j = JSON.parse(r.stdout) as { lines?: Array<Record<string, string>> };
    for (const l of j.lines ?? []) {
      const text = `${l.severity}: ${[l.node && `node ${l.node}`, l.instance && `instance ${l.instance}`].filter(Boolean).join(' ')}${l.device ? `: ${l.device}` : ''}: ${l.message}`;
      if (l.severity === 'ERROR' || l.severity === 'FIX-FAILED') errors.push(text);
      else if (l.severity === 'NOTE') notes.push(text);
    }
  } catch {
    for (const l of `${r.stdout}\n${r.stderr}`.split('\n').map((x) => x.trim())) {
      if (/^(ERROR|FIX-FAILED):/.test(l)) errors.push(l);
      else if (/^NOTE:/.test(l)) notes.push(l);
      else if (/^Failure:/.test(l)) errors.push(l);
    }
  }
  return { code: r.code, errors, notes };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
};

describe('kill test: gnt-noded and gnt-masterd SIGKILLed during hotplug jobs, zero divergences (issue 10)', function () {
  this.timeout(FULL ? 4 * 3600_000 : 1800_000);
  const seed = process.env.GNT_KILL_TEST_SEED ? Number(process.env.GNT_KILL_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
  const rng = new Rng(seed);
  let build: ReturnType<typeof snapshotBuild>;
  let c: KillCluster;
  let ceph: TestCeph;
  let guest: ConsoleFollower;
  let verifyAvailable = false;
  let clusterVerifyAvailable = false;
  let baselineMemKiB = 0;
  let qemuPid0: number | undefined;
  let lastTickChange = { tick: -1, at: Date.now() };
  /** vCPU threads this QEMU process may have created: every vCPU add submitted counts, whatever its outcome. */
  let vcpuThreadsUsed = BOOT_VCPUS;
  let macSeq = 0;
  const divergences: Divergence[] = [];
  const known = new Map<string, string>();
  /** The last PCI slot the runtime file gave each disk (to find it in the guest once the runtime file has dropped it). */
  const lastPci = new Map<string, number>();
  const fdBaseline = new Map<string, { noded: FdSample; qemu: FdSample; op: number }>();
  const repairs: string[] = [];
  const historySeen = new Set<string>();
  const stats = {
    ops: 0, success: 0, failed: 0, failedButApplied: 0, submitRefused: 0, nodedKillsEarly: 0, nodedKillsLate: 0, nodedKillsAtRestart: 0, masterdKills: 0,
    byKind: {} as Record<string, number>, killsMidJob: 0, repairOps: new Set<number>(), settleMs: [] as number[], unsettled: 0, healed: 0, fdChecks: 0,
  };
  let masterTail: LogTail;
  let nodedTail: LogTail;
  let artifacts = '';
  let finished = false;

  const log = (s: string) => console.log(`      ${s}`);
  const instDir = () => c.instanceDir(INSTANCE);
  const storageDir = () => c.node.storageDir;

  const cfgFrom = (d: Json): CfgView => {
    const i = d.instance as Json;
    const n = (v: unknown) => Number(v ?? 0);
    const state = (x: Json) => (x.removalPending ? { state: 'removal pending' } : x.state ? { state: String(x.state) } : {});
    return {
      vcpus: n(i.vcpus), maxvcpus: n(i.maxvcpus), memoryMib: n(i.memoryMib), maxmemMib: n(i.maxmemMib),
      nics: ((i.nics as Json[]) ?? []).map((x) => ({
        index: n(x.index), uuid: String(x.uuid), mac: String(x.mac).toLowerCase(), link: String(x.link ?? ''), linkState: String(x.linkState || 'up'), rateMbit: n(x.rateMbit), ...state(x),
      })),
      disks: ((i.disks as Json[]) ?? []).map((x) => ({
        index: n(x.index), uuid: String(x.uuid), sizeBytes: n(x.sizeBytes), flavour: x.diskType === 'pmem' ? 'pmem' : x.diskBus === 'scsi' ? 'scsi' : 'virtio',
        template: String(x.template || 'file'), ...state(x),
      })),
      openOps: ((d.operations as Json[]) ?? []).map((o) => ({
        id: String(o.id ?? ''), jobId: String(o.jobId ?? ''), kind: String(o.kind ?? ''), action: String(o.action ?? ''), uuid: String(o.deviceUuid ?? ''), state: String(o.state ?? ''),
      })),
      history: ((d.history as Json[]) ?? []).map((h) => `${String(h.time ?? '')} ${String(h.message ?? '')}`),
    };
  };

  /** Every record at one moment (the CLI calls run in parallel). */
  const collect = async (jobId?: string): Promise<Snapshot> => {
    const [info, job, ver] = await Promise.all([
      c.gntAsync(['gnt-instance', 'info', INSTANCE, '--output', 'json']),
      jobId ? c.gntAsync(['gnt-job', 'info', jobId, '--output', 'json']) : Promise.resolve(undefined),
      verifyAvailable ? c.gntAsync(['gnt-instance', 'verify', INSTANCE, '--output', 'json']) : Promise.resolve(undefined),
    ]);
    guest.poll();
    if (guest.lastTick !== lastTickChange.tick) lastTickChange = { tick: guest.lastTick, at: Date.now() };
    const s: Snapshot = {
      rt: readRuntime(path.join(instDir(), 'runtime.json')),
      guest: guest.latest,
      tick: guest.lastTick,
      taps: taps(),
      tapHost: new Map(),
      // Disk files live in <storage dir>/<instance>/; the storage id (.gnt-storage-id) sits at the top.
      storageFiles: filesUnder(storageDir()).filter((f) => path.dirname(f) !== storageDir()),
      rbdImages: new Map(),
      qemuPid: pidFromFile(path.join(instDir(), 'qemu.pid')),
    };
    try {
      for (const i of JSON.parse(rbdAdmin(ceph, 'ls', '-l', '--format', 'json', ceph.pool) || '[]') as Array<{ image: string; size: number }>) s.rbdImages.set(i.image, i.size);
    } catch (err) {
      s.rbdError = `rbd ls of pool ${ceph.pool} failed: ${(err as Error).message}`;
    }
    for (const n of s.rt.nics) if (n.tap && s.taps.includes(n.tap)) s.tapHost.set(n.uuid, tapHostState(n.tap));
    if (info.code === 0) s.cfg = cfgFrom(JSON.parse(info.stdout) as Json);
    else s.cfgError = `gnt-instance info failed (exit ${info.code}): ${(info.stderr || info.stdout).trim()}`;
    if (job) {
      if (job.code === 0) {
        const j = JSON.parse(job.stdout) as Json;
        s.job = { status: String(j.status), error: String(j.error ?? ''), log: ((j.log as Json[]) ?? []).map((l) => String(l.message)), endedAt: String(j.endedAt ?? '') };
      } else s.jobError = `gnt-job info ${jobId} failed (exit ${job.code}): ${(job.stderr || job.stdout).trim()}`;
    }
    if (ver) s.verify = parseVerify(ver);
    if (s.qemuPid) {
      s.qemuFds = fdSample(s.qemuPid, storageDir());
      s.qemuCpus = qemuVcpuThreads(s.qemuPid);
    }
    for (const x of s.rt.disks) if (x.pci !== null) lastPci.set(x.uuid, x.pci);
    return s;
  };

  /** Every difference between the records of `s`, keyed so that one lasting difference is counted once. */
  const compare = (s: Snapshot): Map<string, string> => {
    const d = new Map<string, string>();
    const add = (key: string, what: string, views?: string) => d.set(key, views ? `${what} [${views}]` : what);
    if (s.jobError) add('job-info', s.jobError);
    if (s.job && !['success', 'error', 'canceled'].includes(s.job.status)) add('job-unfinished', `job still ${s.job.status}`);
    if (!s.cfg) {
      add('cfg-unreadable', s.cfgError ?? 'no configuration');
      return d;
    }
    const cfg = s.cfg;
    const rt = s.rt;
    const verifyAbout = (...ids: string[]) => [...(s.verify?.errors ?? []), ...(s.verify?.notes ?? [])].filter((l) => ids.some((x) => x && l.includes(x)));
    /** What each record says about one NIC. */
    const nicViews = (uuid: string, mac: string): string => {
      const c0 = cfg.nics.find((n) => n.uuid === uuid);
      const r = rt.nics.find((n) => n.uuid === uuid);
      const g = s.guest?.nets.find((n) => n.mac === mac);
      const v = verifyAbout(uuid, mac, uuid.slice(0, 8));
      return [
        `config: ${c0 ? `NIC ${c0.index} ${c0.mac}${c0.state ? ` (${c0.state})` : ''}` : 'no such NIC'}`,
        `runtime file: ${r ? `PCI ${r.pci}, tap ${r.tap ?? '-'}${r.state ? `, ${r.state}` : ''}` : 'no such NIC'}`,
        `host: ${r?.tap ? `tap ${r.tap} ${s.taps.includes(r.tap) ? 'exists' : 'missing'}` : `taps ${s.taps.join(',') || 'none'}`}`,
        `QEMU: ${s.qemuFds ? `${s.qemuFds.kinds.tun ?? 0} tap fd(s) for ${rt.nics.length} runtime NIC(s)` : 'not running'}${v.length ? `; verify: ${v.join(' / ')}` : ''}`,
        `guest: ${!s.guest ? 'no state block yet' : g ? `${g.name} ${g.mac} at ${g.pci}` : `no NIC ${mac}`}`,
      ].join('; ');
    };
    /** What each record says about one disk. */
    const diskViews = (uuid: string): string => {
      const c0 = cfg.disks.find((x) => x.uuid === uuid);
      const r = rt.disks.find((x) => x.uuid === uuid);
      const file = r?.path ?? path.join(storageDir(), INSTANCE, `${uuid}.img`);
      let size = -1;
      try {
        size = r?.rbdImage ? s.rbdImages.get(r.rbdImage) ?? -1 : fs.statSync(file).size;
      } catch {
        // missing
      }
      const pci = r?.pci ?? lastPci.get(uuid);
      const g = pci === undefined || pci === null ? undefined : s.guest?.blks.find((b) => b.pci === slotAddr(pci));
      const open = s.qemuFds?.targets.some((t) => t === path.resolve(file));
      const v = verifyAbout(uuid, uuid.slice(0, 8));
      return [
        `config: ${c0 ? `disk ${c0.index}, ${c0.sizeBytes} bytes${c0.state ? ` (${c0.state})` : ''}` : 'no such disk'}`,
        `runtime file: ${r ? `PCI ${r.pci}, ${r.path}${r.state ? `, ${r.state}` : ''}` : 'no such disk'}`,
        `host: ${r?.rbdImage ? `RBD image ${r.rbdImage} ${size >= 0 ? `exists (${size} bytes)` : 'missing'}` : size >= 0 ? `${path.basename(file)} exists (${size} bytes)` : `${path.basename(file)} missing`}`,
        `QEMU: ${s.qemuFds ? (open ? 'holds the file open' : 'does not hold the file open') : 'not running'}${v.length ? `; verify: ${v.join(' / ')}` : ''}`,
        `guest: ${!s.guest ? 'no state block yet' : pci === undefined || pci === null ? 'slot unknown' : g ? `${g.name} ${g.sectors * 512} bytes at ${g.pci}` : `no disk at ${slotAddr(pci)}`}`,
      ].join('; ');
    };
    const cpuViews = () =>
      `config: ${cfg.vcpus}; runtime file: ${rt.vcpus} (boot ${rt.bootVcpus}, hot-added ${rt.vcpus - rt.bootVcpus}); QEMU: ${s.qemuCpus === undefined ? 'threads not named' : `${s.qemuCpus} vCPU thread(s)`}; ` +
      `guest: ${s.guest ? `${s.guest.cpusPresent} present, ${s.guest.cpusOnline} online` : 'no state block yet'}`;
    const memViews = () =>
      `config: ${cfg.memoryMib} MiB; runtime file: ${rt.memoryMiB} MiB (DIMMs ${rt.dimms.map((x) => `${x.id}:${x.sizeMiB}M`).join(',') || 'none'}); ` +
      `guest: MemTotal ${s.guest ? `${s.guest.memTotalKiB} KiB` : '?'} (${baselineMemKiB} KiB at boot with ${BOOT_MEMORY_MIB} MiB)`;
    if (rt.error) add('rt-unreadable', rt.error);
    // QEMU and the guest are alive and never rebooted.
    if (!s.qemuPid || !processAlive(s.qemuPid)) add('qemu-dead', `QEMU (pid file says ${s.qemuPid}) is not running`);
    else if (qemuPid0 !== undefined && s.qemuPid !== qemuPid0) add('qemu-pid', `QEMU's pid changed from ${qemuPid0} to ${s.qemuPid} (restarted)`);
    guest.rebootSigns.forEach((r, i) => add(`guest-reboot-${i}`, r));
    if (Date.now() - lastTickChange.at > GUEST_STALL_MS) add('guest-stalled', `the guest's heartbeat stayed at ${lastTickChange.tick} for ${Math.round((Date.now() - lastTickChange.at) / 1000)} s (paused or hung?)`);
    for (const o of cfg.openOps)
      add(`cfg-op-open:${o.id}`, `configuration: operation ${o.id} of job ${o.jobId} (${o.kind} ${o.action} ${o.uuid}) still ${o.state}`);
    if (rt.migration) add('rt-migration', `the runtime file has a migration mark: ${JSON.stringify(rt.migration)}`);
    for (const o of rt.operations)
      if (o.state === 'running' || o.state === 'removal_pending')
        add(`rt-op-open:${o.id || o.uuid}`, `runtime file: operation ${o.id || '(node-initiated)'} (${o.kind} ${o.action} ${o.uuid}) still ${o.state}`);

    // NICs: config <-> runtime file <-> guest, taps, QEMU's tap fds.
    const rtNics = new Map(rt.nics.map((n) => [n.uuid, n]));
    const cfgNics = new Map(cfg.nics.map((n) => [n.uuid, n]));
    for (const n of cfg.nics) {
      const r = rtNics.get(n.uuid);
      if (!r) add(`nic-cfg-only:${n.uuid}`, `NIC ${n.uuid} (${n.mac}) is in the configuration (index ${n.index}) but not in the runtime file`, nicViews(n.uuid, n.mac));
      else if (r.mac !== n.mac) add(`nic-mac:${n.uuid}`, `NIC ${n.uuid}: configuration MAC ${n.mac}, runtime file MAC ${r.mac}`, nicViews(n.uuid, n.mac));
      else {
        if (r.link !== n.link) add(`nic-link:${n.uuid}`, `NIC ${n.uuid}: configuration bridge ${n.link || 'none'}, runtime file bridge ${r.link || 'none'}`, nicViews(n.uuid, n.mac));
        if (r.linkState !== n.linkState) add(`nic-linkstate:${n.uuid}`, `NIC ${n.uuid}: configuration link ${n.linkState}, runtime file link ${r.linkState}`, nicViews(n.uuid, n.mac));
        if (r.rateMbit !== n.rateMbit) add(`nic-rate:${n.uuid}`, `NIC ${n.uuid}: configuration rate ${n.rateMbit} Mbit/s, runtime file rate ${r.rateMbit} Mbit/s`, nicViews(n.uuid, n.mac));
      }
      if (n.state) add(`nic-cfg-state:${n.uuid}`, `NIC ${n.uuid} (${n.mac}) is "${n.state}" in the configuration`, nicViews(n.uuid, n.mac));
    }
    for (const r of rt.nics) {
      if (!cfgNics.has(r.uuid)) add(`nic-rt-only:${r.uuid}`, `NIC ${r.uuid} (${r.mac}, PCI ${r.pci}, tap ${r.tap}) is in the runtime file but not in the configuration`, nicViews(r.uuid, r.mac));
      if (r.state) add(`nic-rt-state:${r.uuid}`, `NIC ${r.uuid} (${r.mac}) is "${r.state}" in the runtime file`, nicViews(r.uuid, r.mac));
    }
    if (s.guest) {
      const gByMac = new Map(s.guest.nets.map((g) => [g.mac, g]));
      for (const r of rt.nics) {
        const g = gByMac.get(r.mac);
        if (!g) add(`nic-guest-missing:${r.mac}`, `NIC ${r.uuid} (${r.mac}, PCI ${r.pci}) is in the runtime file but the guest does not see it (guest NICs: ${s.guest.nets.map((x) => `${x.name} ${x.mac} ${x.pci}`).join('; ') || 'none'})`, nicViews(r.uuid, r.mac));
        else if (r.pci !== null && g.pci !== slotAddr(r.pci)) add(`nic-guest-pci:${r.mac}`, `NIC ${r.mac}: runtime file PCI slot ${r.pci}, the guest sees it at ${g.pci}`, nicViews(r.uuid, r.mac));
      }
      const rtMacs = new Set(rt.nics.map((r) => r.mac));
      for (const g of s.guest.nets)
        if (!rtMacs.has(g.mac)) add(`nic-guest-extra:${g.mac}`, `the guest sees NIC ${g.name} ${g.mac} at ${g.pci}, which the runtime file does not have${[...cfgNics.values()].some((n) => n.mac === g.mac) ? ' (the configuration has it)' : ' (nor the configuration)'}`, nicViews(cfg.nics.find((n) => n.mac === g.mac)?.uuid ?? '', g.mac));
    }
    const rtTaps = new Set(rt.nics.map((r) => r.tap).filter((t): t is string => !!t));
    const tapless = rt.nics.filter((r) => !r.tap);
    for (const t of s.taps)
      if (!rtTaps.has(t))
        add(`tap-orphan:${t}`, `tap ${t} exists on the host but no runtime file names it` +
          (tapless.length ? ` (runtime NICs with no tap: ${tapless.map((r) => r.uuid).join(', ')})` : ''), tapless.length === 1 ? nicViews(tapless[0].uuid, tapless[0].mac) : undefined);
    for (const r of rt.nics) if (r.tap && !s.taps.includes(r.tap)) add(`tap-missing:${r.uuid}`, `NIC ${r.uuid}: the runtime file names tap ${r.tap}, which does not exist`, nicViews(r.uuid, r.mac));
    // The host side of each tap and the guest's carrier against the record (live NIC changes).
    for (const r of rt.nics) {
      const h = s.tapHost.get(r.uuid);
      if (h && !r.state && h.bridge !== r.link) add(`tap-bridge:${r.uuid}`, `NIC ${r.uuid}: the runtime file puts tap ${r.tap} on bridge ${r.link || 'none'}, the host has it on ${h.bridge || 'none'}`, nicViews(r.uuid, r.mac));
      if (h && !r.state && h.rateMbit !== r.rateMbit) add(`tap-rate:${r.uuid}`, `NIC ${r.uuid}: the runtime file limits tap ${r.tap} to ${r.rateMbit} Mbit/s, tc on the host shows ${h.rateMbit} Mbit/s`, nicViews(r.uuid, r.mac));
      const g = s.guest?.nets.find((x) => x.mac === r.mac);
      const want = r.linkState === 'down' ? '0' : '1';
      if (g && !r.state && g.carrier !== '-' && g.carrier !== want) add(`nic-guest-carrier:${r.uuid}`, `NIC ${r.uuid}: the runtime file has link ${r.linkState}, the guest sees carrier ${g.carrier} on ${g.name}`, nicViews(r.uuid, r.mac));
    }
    if (s.qemuFds) {
      const tun = s.qemuFds.kinds.tun ?? 0;
      if (tun !== rt.nics.length) add('qemu-tap-fds', `QEMU holds ${tun} tap fd(s), the runtime file has ${rt.nics.length} NIC(s)`);
    }

    // Disks: config <-> runtime file <-> disk files <-> QEMU's open files <-> guest.
    const rtDisks = new Map(rt.disks.map((x) => [x.uuid, x]));
    const cfgDisks = new Map(cfg.disks.map((x) => [x.uuid, x]));
    for (const x of cfg.disks) {
      const r = rtDisks.get(x.uuid);
      if (!r) add(`disk-cfg-only:${x.uuid}`, `disk ${x.uuid} (${x.sizeBytes >> 20} MiB) is in the configuration (index ${x.index}) but not in the runtime file`, diskViews(x.uuid));
      if (x.state) add(`disk-cfg-state:${x.uuid}`, `disk ${x.uuid} is "${x.state}" in the configuration`, diskViews(x.uuid));
    }
    for (const r of rt.disks) {
      const x = cfgDisks.get(r.uuid);
      if (!x) add(`disk-rt-only:${r.uuid}`, `disk ${r.uuid} (${r.path}, PCI ${r.pci}) is in the runtime file but not in the configuration`, diskViews(r.uuid));
      if (r.state) add(`disk-rt-state:${r.uuid}`, `disk ${r.uuid} is "${r.state}" in the runtime file`, diskViews(r.uuid));
      if (r.growTo !== undefined) add(`disk-grow-open:${r.uuid}`, `disk ${r.uuid}: the runtime file still has a grow to ${r.growTo} bytes open`, diskViews(r.uuid));
      if (x && r.sizeBytes !== undefined && r.sizeBytes !== x.sizeBytes) add(`disk-rt-size:${r.uuid}`, `disk ${r.uuid}: configuration ${x.sizeBytes} bytes, runtime file ${r.sizeBytes} bytes`, diskViews(r.uuid));
      let size = -1;
      if (r.rbdImage) {
        size = s.rbdImages.get(r.rbdImage) ?? -1;
        if (size < 0 && !s.rbdError) add(`rbd-missing:${r.uuid}`, `disk ${r.uuid}: the runtime file names RBD image ${r.rbdImage}, which the pool does not have`, diskViews(r.uuid));
      } else {
        try {
          size = fs.statSync(r.path).size;
        } catch {
          add(`disk-file-missing:${r.uuid}`, `disk ${r.uuid}: the runtime file names ${r.path}, which does not exist`, diskViews(r.uuid));
        }
      }
      if (x && size >= 0 && size !== x.sizeBytes) add(`disk-size:${r.uuid}`, `disk ${r.uuid}: configuration ${x.sizeBytes} bytes, ${r.rbdImage ? 'RBD image' : 'file'} ${size} bytes`, diskViews(r.uuid));
    }
    // RBD images: every image in the pool belongs to a runtime record (the node deletes the ones it made when their disk goes).
    if (s.rbdError) add('rbd-list', s.rbdError);
    const rtImages = new Set(rt.disks.map((r) => r.rbdImage).filter((i): i is string => !!i));
    for (const [img, size] of s.rbdImages) if (!rtImages.has(img)) add(`rbd-orphan:${img}`, `RBD image ${img} (${size} bytes) is in the pool but no runtime file names it`);
    const rtPaths = new Set(rt.disks.map((r) => path.resolve(r.path)));
    for (const f of s.storageFiles) if (!rtPaths.has(f)) add(`disk-orphan:${f}`, `disk file ${f} is in the storage directory but no runtime file names it`, diskViews(path.basename(f).replace(/\.img$/, '')));
    if (s.qemuFds) {
      const open = new Set(s.qemuFds.targets.filter((t) => t.startsWith(storageDir() + '/')));
      for (const t of open) if (!rtPaths.has(t)) add(`qemu-disk-open:${t}`, `QEMU holds ${t} open, which no runtime file names`);
      for (const r of rt.disks) if (r.path.startsWith(storageDir() + '/') && !open.has(path.resolve(r.path))) add(`qemu-disk-closed:${r.uuid}`, `disk ${r.uuid}: QEMU does not hold ${r.path} open`, diskViews(r.uuid));
    }
    if (s.guest) {
      const gByPci = new Map(s.guest.blks.map((g) => [g.pci, g]));
      for (const r of rt.disks) {
        if (r.pci === null || r.flavour !== 'virtio') continue;
        const g = gByPci.get(slotAddr(r.pci));
        const want = cfgDisks.get(r.uuid)?.sizeBytes;
        if (!g) add(`disk-guest-missing:${r.uuid}`, `disk ${r.uuid} (PCI ${r.pci}) is in the runtime file but the guest has no disk at ${slotAddr(r.pci)} (guest disks: ${s.guest.blks.map((b) => `${b.name} ${b.sectors} ${b.pci}`).join('; ') || 'none'})`, diskViews(r.uuid));
        else if (want !== undefined && g.sectors * 512 !== want) add(`disk-guest-size:${r.uuid}`, `disk ${r.uuid}: configuration ${want} bytes, the guest sees ${g.name} with ${g.sectors * 512} bytes`, diskViews(r.uuid));
      }
      const rtPcis = new Set(rt.disks.map((r) => (r.pci === null ? '' : slotAddr(r.pci))));
      for (const g of s.guest.blks) if (g.pci !== '-' && !rtPcis.has(g.pci)) add(`disk-guest-extra:${g.pci}`, `the guest sees disk ${g.name} (${g.sectors * 512} bytes) at ${g.pci}, which the runtime file does not have`);
      // SCSI LUNs by target:LUN (the guest's H:C:T:L), pmem devices by count and size.
      const tl = (g: { scsi: string }) => g.scsi.split(':').slice(2).join(':');
      const gScsi = new Map(s.guest.blks.filter((g) => g.scsi !== '-').map((g) => [tl(g), g]));
      const rtScsi = rt.disks.filter((r) => r.flavour === 'scsi');
      for (const r of rtScsi) {
        const g = gScsi.get(`${r.target}:${r.lun}`);
        const want = cfgDisks.get(r.uuid)?.sizeBytes;
        if (!g && !r.state) add(`scsi-guest-missing:${r.uuid}`, `SCSI disk ${r.uuid} (target ${r.target}, LUN ${r.lun}) is in the runtime file but the guest has no SCSI disk at ?:?:${r.target}:${r.lun}`, diskViews(r.uuid));
        else if (g && want !== undefined && g.sectors * 512 !== want) add(`scsi-guest-size:${r.uuid}`, `SCSI disk ${r.uuid}: configuration ${want} bytes, the guest sees ${g.name} with ${g.sectors * 512} bytes`, diskViews(r.uuid));
      }
      const rtTl = new Set(rtScsi.map((r) => `${r.target}:${r.lun}`));
      for (const [k, g] of gScsi) if (!rtTl.has(k)) add(`scsi-guest-extra:${k}`, `the guest sees SCSI disk ${g.name} at ${g.scsi}, which the runtime file does not have`);
      const gPmem = s.guest.blks.filter((g) => g.name.startsWith('pmem')).map((g) => g.sectors * 512).sort();
      const rtPmem = rt.disks.filter((r) => r.flavour === 'pmem' && !r.state).map((r) => cfgDisks.get(r.uuid)?.sizeBytes ?? -1).sort();
      if (gPmem.join(',') !== rtPmem.join(',')) add('pmem-guest', `pmem devices: the runtime file has ${rtPmem.length} (${rtPmem.join(', ') || 'none'} bytes), the guest sees ${gPmem.length} (${gPmem.join(', ') || 'none'} bytes)`);
    }

    // vCPUs and memory.
    if (cfg.vcpus !== rt.vcpus) add('vcpus-cfg-rt', `vCPUs: configuration ${cfg.vcpus}, runtime file ${rt.vcpus} (boot ${rt.bootVcpus} + ${rt.vcpus - rt.bootVcpus} hot-added)`, cpuViews());
    if (rt.pendingVcpus !== undefined) add('vcpus-pending', `runtime file: ${rt.pendingVcpus} vCPUs pending for the next start`, cpuViews());
    if (s.guest && s.guest.cpusPresent !== rt.vcpus) add('vcpus-guest', `vCPUs: runtime file ${rt.vcpus}, the guest has ${s.guest.cpusPresent} present (${s.guest.cpusOnline} online)`, cpuViews());
    if (s.qemuCpus !== undefined && s.qemuCpus !== rt.vcpus) add('vcpus-qemu', `vCPUs: runtime file ${rt.vcpus}, QEMU runs ${s.qemuCpus} vCPU thread(s)`, cpuViews());
    if (s.guest && s.guest.cpusOnline !== s.guest.cpusPresent) add('vcpus-online', `the guest has ${s.guest.cpusPresent} vCPUs present but ${s.guest.cpusOnline} online`, cpuViews());
    if (cfg.memoryMib !== rt.memoryMiB) add('mem-cfg-rt', `memory: configuration ${cfg.memoryMib} MiB, runtime file ${rt.memoryMiB} MiB (boot ${rt.bootMemoryMiB} + DIMMs ${rt.dimms.map((x) => `${x.id}:${x.sizeMiB}`).join(',') || 'none'})`, memViews());
    if (rt.pendingMemoryMiB !== undefined) add('mem-pending', `runtime file: ${rt.pendingMemoryMiB} MiB pending for the next start`, memViews());
    if (s.guest && baselineMemKiB) {
      const want = baselineMemKiB + (rt.memoryMiB - rt.bootMemoryMiB) * 1024;
      if (Math.abs(s.guest.memTotalKiB - want) > want * MEM_TOLERANCE)
        add('mem-guest', `memory: runtime file ${rt.memoryMiB} MiB, so the guest should show MemTotal about ${want} KiB; it shows ${s.guest.memTotalKiB} KiB`, memViews());
    }

    // QEMU's own lists, compared by the product.
    if (s.verify) {
      for (const l of s.verify.errors) add(`verify:${l}`, `gnt-instance verify: ${l}`);
      if (s.verify.code !== 0 && !s.verify.errors.length) add('verify-exit', `gnt-instance verify exited ${s.verify.code} without a difference line`);
    }
    return d;
  };

  /**
   * Differences that leave QEMU, the runtime file and the host in agreement
   * (the configuration alone is off, or a disk file nobody opens): fd counts
   * are still compared in such a state.
   */
  const FD_NEUTRAL = /^(nic-cfg-only:|nic-rt-only:|nic-mac:|nic-link:|nic-linkstate:|nic-rate:|tap-bridge:|tap-rate:|nic-guest-carrier:|nic-cfg-state:|disk-cfg-only:|disk-rt-only:|disk-cfg-state:|disk-orphan:|job-effect:|verify:|vcpus-cfg-rt$|mem-cfg-rt$)/;
  /**
   * gnt-noded's fds that the device layout decides: all but its established
   * TCP connections, which are the master's gRPC channels and come and go
   * with what the master did since its last start (verify, the operation
   * log poller, jobs); those are only bounded by MAX_NODED_TCP.
   */
  const nodedFds = (f: FdSample): number => f.count - (f.kinds.tcp ?? 0);
  /**
   * QEMU's fds but its TCP connections: librados (RBD disks) opens its
   * monitor, manager and OSD connections when it needs them and drops idle
   * ones, so their number follows Ceph, not the device layout.
   */
  const qemuFds = (f: FdSample): number => f.count - (f.kinds.tcp ?? 0);
  /** A layout: what decides how many fds gnt-noded and QEMU should hold. */
  const layout = (s: Snapshot): string =>
    `nics=${s.rt.nics.length},disks=${s.rt.disks.length} (scsi ${s.rt.disks.filter((x) => x.flavour === 'scsi').length}, pmem ${s.rt.disks.filter((x) => x.flavour === 'pmem').length}, rbd ${s.rt.disks.filter((x) => x.rbdImage).length}${s.rt.scsiController ? ', SCSI controller' : ''}),vcpus=${s.rt.vcpus},dimms=${s.rt.dimms.length}`;

  /** The maxmem room the instance's pmem devices hold (they share it with DIMMs). */
  const pmemMiB = (s: Snapshot): number => (s.cfg?.disks ?? []).filter((d) => d.flavour === 'pmem').reduce((n, d) => n + d.sizeBytes / 2 ** 20, 0);

  /** The ops valid now, from what the operator sees (the configuration) and the TCG thread rule. */
  const chooseOp = (s: Snapshot): Op => {
    const cfg = s.cfg!;
    const options: Array<{ item: () => Op; weight: number }> = [];
    if (cfg.nics.length < MAX_NICS)
      options.push({
        weight: 3,
        item: () => {
          const mac = `52:54:00:6b:${((macSeq >> 8) & 0xff).toString(16).padStart(2, '0')}:${(macSeq++ & 0xff).toString(16).padStart(2, '0')}`;
          return { kind: 'nic-add', args: ['--net', `add:mac=${mac},link=${BRIDGE}`], text: `NIC add ${mac}`, effect: (x) => (x.nics.some((n) => n.mac === mac) ? undefined : `the configuration has no NIC ${mac}`) };
        },
      });
    if (cfg.nics.length > 1)
      options.push({
        weight: 2.5,
        item: () => {
          const n = rng.pick(cfg.nics);
          return { kind: 'nic-remove', args: ['--net', `${n.index}:remove`], text: `NIC ${n.index} remove (${n.mac})`, effect: (x) => (x.nics.some((m) => m.uuid === n.uuid) ? `the configuration still has NIC ${n.uuid} (${n.mac})` : undefined) };
        },
      });
    if (cfg.nics.length > 0) {
      options.push({
        weight: 1,
        item: () => {
          const n = rng.pick(cfg.nics);
          const to = n.link === BRIDGE ? BRIDGE2 : BRIDGE;
          return { kind: 'nic-relink', args: ['--net', `${n.index}:link=${to}`], text: `NIC ${n.index} bridge ${n.link || 'none'} -> ${to}`, effect: (x) => (x.nics.find((m) => m.uuid === n.uuid)?.link === to ? undefined : `NIC ${n.uuid} is not on ${to} in the configuration`) };
        },
      });
      options.push({
        weight: 1,
        item: () => {
          const n = rng.pick(cfg.nics);
          const to = n.linkState === 'down' ? 'up' : 'down';
          return { kind: 'nic-link-state', args: ['--net', `${n.index}:link_state=${to}`], text: `NIC ${n.index} link ${n.linkState} -> ${to}`, effect: (x) => (x.nics.find((m) => m.uuid === n.uuid)?.linkState === to ? undefined : `NIC ${n.uuid} is not ${to} in the configuration`) };
        },
      });
      options.push({
        weight: 1,
        item: () => {
          const n = rng.pick(cfg.nics);
          const to = rng.pick(RATES_MBIT.filter((r) => r !== n.rateMbit));
          return { kind: 'nic-rate', args: ['--net', `${n.index}:rate=${to}`], text: `NIC ${n.index} rate ${n.rateMbit} -> ${to} Mbit/s`, effect: (x) => (x.nics.find((m) => m.uuid === n.uuid)?.rateMbit === to ? undefined : `NIC ${n.uuid} is not limited to ${to} Mbit/s in the configuration`) };
        },
      });
    }
    const byFlavour = (f: string) => cfg.disks.filter((x) => x.flavour === f).length;
    if (byFlavour('scsi') < MAX_SCSI_DISKS)
      options.push({
        weight: 1.5,
        item: () => {
          const mib = rng.pick(DISK_SIZES_MIB);
          const before = new Set(cfg.disks.map((x) => x.uuid));
          return { kind: 'scsi-add', args: ['--disk', `add:size=${mib}M,bus=scsi`], text: `SCSI disk add ${mib}M`, effect: (x) => (x.disks.some((d) => !before.has(d.uuid) && d.flavour === 'scsi' && d.sizeBytes === mib << 20) ? undefined : `the configuration has no new ${mib} MiB SCSI disk`) };
        },
      });
    if (byFlavour('pmem') < MAX_PMEM && cfg.memoryMib + pmemMiB(s) + PMEM_MIB <= cfg.maxmemMib)
      options.push({
        weight: 0.4,
        item: () => {
          const before = new Set(cfg.disks.map((x) => x.uuid));
          return { kind: 'pmem-add', args: ['--disk', `add:size=${PMEM_MIB}M,type=pmem`], text: `pmem add ${PMEM_MIB}M`, effect: (x) => (x.disks.some((d) => !before.has(d.uuid) && d.flavour === 'pmem') ? undefined : `the configuration has no new pmem device`) };
        },
      });
    if (cfg.disks.filter((x) => x.template === 'rbd').length < MAX_RBD_DISKS)
      options.push({
        weight: 2,
        item: () => {
          const mib = rng.pick(DISK_SIZES_MIB);
          const scsi = rng.int(0, 1) === 1 && byFlavour('scsi') < MAX_SCSI_DISKS;
          const before = new Set(cfg.disks.map((x) => x.uuid));
          return {
            kind: 'rbd-add', args: ['--disk', `add:size=${mib}M,template=rbd${scsi ? ',bus=scsi' : ''}`], text: `RBD disk add ${mib}M${scsi ? ' (SCSI)' : ''}`,
            effect: (x) => (x.disks.some((d) => !before.has(d.uuid) && d.template === 'rbd' && d.sizeBytes === mib << 20) ? undefined : `the configuration has no new ${mib} MiB RBD disk`),
          };
        },
      });
    const growable = cfg.disks.filter((x) => x.flavour !== 'pmem' && !x.state);
    if (growable.length)
      options.push({
        weight: 1.2,
        item: () => {
          const x = rng.pick(growable);
          const mib = rng.pick(GROW_MIB);
          const to = x.sizeBytes + mib * 2 ** 20;
          return {
            kind: 'disk-grow', args: [], command: ['gnt-instance', 'grow-disk', '--submit', INSTANCE, String(x.index), `${mib}M`],
            text: `disk ${x.index} (${x.template}${x.flavour === 'scsi' ? ', SCSI' : ''}) grow ${x.sizeBytes >> 20}M -> ${to >> 20}M`,
            effect: (y) => (y.disks.find((d) => d.uuid === x.uuid)?.sizeBytes === to ? undefined : `disk ${x.uuid} is not ${to} bytes in the configuration`),
          };
        },
      });
    if (byFlavour('virtio') < MAX_DISKS)
      options.push({
        weight: 3,
        item: () => {
          const mib = rng.pick(DISK_SIZES_MIB);
          const before = new Set(cfg.disks.map((x) => x.uuid));
          return { kind: 'disk-add', args: ['--disk', `add:size=${mib}M`], text: `disk add ${mib}M`, effect: (x) => (x.disks.some((d) => !before.has(d.uuid) && d.sizeBytes === mib << 20) ? undefined : `the configuration has no new ${mib} MiB disk`) };
        },
      });
    if (cfg.disks.length > 1)
      options.push({
        weight: 2.5,
        item: () => {
          const x = rng.pick(cfg.disks);
          return { kind: 'disk-remove', args: ['--disk', `${x.index}:remove`], text: `disk ${x.index} remove (${x.sizeBytes >> 20}M)`, effect: (y) => (y.disks.some((d) => d.uuid === x.uuid) ? `the configuration still has disk ${x.uuid}` : undefined) };
        },
      });
    const threadsRecorded = s.rt.cpuThreads && s.rt.cpuThreads.pid === s.qemuPid ? s.rt.cpuThreads.created : 0;
    const threadsLeft = MAX_VCPUS - Math.max(vcpuThreadsUsed, threadsRecorded, s.rt.vcpus);
    if (cfg.vcpus < Math.min(VCPU_CAP, cfg.maxvcpus) && threadsLeft >= 1)
      options.push({
        weight: 1.2,
        item: () => {
          const n = cfg.vcpus + 1;
          vcpuThreadsUsed++;
          return { kind: 'vcpu-up', args: ['-B', `vcpus=${n}`], text: `vCPUs ${cfg.vcpus} -> ${n}`, effect: (x) => (x.vcpus === n ? undefined : `the configuration has ${x.vcpus} vCPUs, not ${n}`) };
        },
      });
    if (cfg.vcpus > BOOT_VCPUS)
      options.push({
        weight: 1.2,
        item: () => {
          const n = cfg.vcpus - 1;
          return { kind: 'vcpu-down', args: ['-B', `vcpus=${n}`], text: `vCPUs ${cfg.vcpus} -> ${n}`, effect: (x) => (x.vcpus === n ? undefined : `the configuration has ${x.vcpus} vCPUs, not ${n}`) };
        },
      });
    if (cfg.memoryMib + pmemMiB(s) + DIMM_MIB <= cfg.maxmemMib && s.rt.dimms.length < DIMM_SLOTS)
      options.push({
        weight: 0.8,
        item: () => {
          const m = cfg.memoryMib + DIMM_MIB;
          return { kind: 'dimm-add', args: ['-B', `memory=${m}M`], text: `memory ${cfg.memoryMib}M -> ${m}M (DIMM)`, effect: (x) => (x.memoryMib === m ? undefined : `the configuration has ${x.memoryMib} MiB, not ${m}`) };
        },
      });
    return rng.weighted(options)();
  };

  /** Lines that say something was repaired, settled or reconciled. */
  const REPAIR = /reconcil|repair|settl|outcome|recover|fence|completed \[[^\]]|rolled back \[[^\]]|applied .* from (the )?node/i;
  const noteRepairs = (op: number, source: string, lines: string[]) => {
    for (const l of lines) {
      if (!REPAIR.test(l)) continue;
      if (/completed \[\], rolled back \[\]/.test(l)) continue; // a restart reconcile that found nothing
      repairs.push(`op ${op} ${source}: ${l.trim()}`);
      stats.repairOps.add(op);
    }
  };

  before(async function () {
    let files: { kernel: string; initrd: string };
    try {
      files = guestFiles();
    } catch (err) {
      console.log(`      (skipped: ${(err as Error).message})`);
      this.skip();
    }
    build = snapshotBuild();
    log(`kill test ${FULL ? 'FULL' : 'short (GNT_KILL_TEST_FULL=1 for the full one)'}: seed ${seed} (GNT_KILL_TEST_SEED=${seed} repeats it)`);
    log(`sizes: OPERATIONS=${OPERATIONS} NODED_KILLS_EARLY=${NODED_KILLS_EARLY} (${EARLY_KILL_MS.join('-')} ms after submission) ` +
      `${STOP_AFTER < OPERATIONS ? `(stopping after op ${STOP_AFTER}: GNT_KILL_TEST_STOP_AFTER) ` : ''}NODED_KILLS_LATE=${NODED_KILLS_LATE} (${LATE_KILL_MS.join('-')} ms) NODED_DOUBLE_KILLS=${NODED_DOUBLE_KILLS} (${EARLY_KILL_MS.join('-')} ms, then ${RESTART_KILL_MS.join('-')} ms after the restart) = ${NODED_KILLS} gnt-noded kills, MASTERD_KILLS=${MASTERD_KILLS} (${MASTERD_KILL_MS.join('-')} ms) SETTLE_TIMEOUT_MS=${SETTLE_TIMEOUT_MS}`);
    log(`instance: vcpus ${BOOT_VCPUS} (maxvcpus ${MAX_VCPUS}, grown to at most ${VCPU_CAP}), memory ${BOOT_MEMORY_MIB}M (maxmem ${MAX_MEMORY_MIB}M: ${DIMM_SLOTS} DIMMs of ${DIMM_MIB}M), at most ${MAX_NICS} NICs and ${MAX_DISKS} disks`);
    log(build.note);
    c = new KillCluster(build);
    for (const br of [BRIDGE, BRIDGE2]) {
      spawnSync('ip', ['link', 'add', br, 'type', 'bridge']);
      spawnSync('ip', ['link', 'set', br, 'up']);
    }
    ceph = await startCeph();
    log(`one-node Ceph up: monitor ${ceph.monitors}, pool ${ceph.pool}, client ${ceph.clientId}`);
    await c.init();
    await c.addNode('node1', ['--rbd-monitors', ceph.monitors, '--rbd-pool', ceph.pool, '--rbd-id', ceph.clientId, '--rbd-keyring', ceph.keyring]);
    masterTail = new LogTail(c.masterLog);
    nodedTail = new LogTail(c.node.logFile);
    c.ok(
      c.gnt('gnt-instance', 'add', '-n', 'node1', '--vcpus', String(BOOT_VCPUS), '--maxvcpus', String(MAX_VCPUS),
        '--memory', `${BOOT_MEMORY_MIB}M`, '--maxmem', `${MAX_MEMORY_MIB}M`, '--kernel', files!.kernel, '--initrd', files!.initrd,
        '--kernel-args', 'console=ttyS0 quiet loglevel=1 panic=-1', '--disk', 'size=32M', '--net', `link=${BRIDGE}`, INSTANCE),
      'gnt-instance add',
    );
    guest = new ConsoleFollower(path.join(instDir(), 'console.log'));
    const deadline = Date.now() + 90_000;
    for (;;) {
      guest.poll();
      if (guest.latest && guest.latest.nets.length === 1 && guest.latest.blks.length >= 1 && guest.latest.cpusOnline === BOOT_VCPUS) break;
      if (Date.now() > deadline) throw new Error(`the guest never came up: ${JSON.stringify(guest.latest)}`);
      await sleep(300);
    }
    baselineMemKiB = guest.latest!.memTotalKiB;
    qemuPid0 = pidFromFile(path.join(instDir(), 'qemu.pid'));
    log(`guest up: QEMU pid ${qemuPid0}, MemTotal ${baselineMemKiB} KiB, NIC ${guest.latest!.nets[0].mac}, boot #${guest.inits}, heartbeat ${guest.lastTick}`);

    const probe = (prog: string, ...args: string[]): boolean => {
      const r = c.gnt(prog, ...args);
      if (r.code === 2 && /unknown command/i.test(r.stderr)) {
        log(`CHECK SKIPPED: "${prog} ${args.join(' ')}" does not exist in this build (the CLI says: ${r.stderr.trim()}); QEMU's own lists are checked only through the fds QEMU holds`);
        return false;
      }
      log(`"${prog} ${args.join(' ')}" exists (exit ${r.code}${r.code ? `: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 3).join(' | ')}` : ''}): used ${prog === 'gnt-instance' ? 'after every operation' : 'at the end'}`);
      return true;
    };
    if (qemuPid0 && qemuVcpuThreads(qemuPid0) === undefined)
      log(`CHECK SKIPPED: QEMU's vCPU threads are not named (QEMU runs without -name ...,debug-threads=on), so its vCPU count is compared only through gnt-instance verify`);
    verifyAvailable = probe('gnt-instance', 'verify', INSTANCE);
    clusterVerifyAvailable = probe('gnt-cluster', 'verify');
  });

  after(async function () {
    if (!c) return;
    const keep = divergences.length > 0 || !finished;
    if (keep) {
      artifacts = fs.mkdtempSync(path.join(os.tmpdir(), `gnt-kill-artifacts-${seed}-`));
      for (const [from, to] of [
        [c.masterLog, 'masterd.log'], [c.node?.logFile, 'noded.log'], [path.join(instDir(), 'runtime.json'), 'runtime.json'], [path.join(instDir(), 'runtime.journal'), 'runtime.journal'],
        [path.join(instDir(), 'console.log'), 'console.log'], [path.join(instDir(), 'qemu.log'), 'qemu.log'],
      ] as Array<[string | undefined, string]>)
        if (from && fs.existsSync(from)) fs.copyFileSync(from, path.join(artifacts, to));
      fs.writeFileSync(path.join(artifacts, 'divergences.json'), JSON.stringify({ seed, divergences, repairs, stats }, null, 2));
      const jobs = c.masterdPid ? c.gnt('gnt-job', 'list', '--output', 'json') : undefined;
      if (jobs?.code === 0) fs.writeFileSync(path.join(artifacts, 'jobs.json'), jobs.stdout);
      log(`artifacts (logs, runtime file, console, divergences.json) kept in ${artifacts}`);
    }
    // Leave no QEMU behind: remove the instance through the cluster, or kill the QEMU our node started.
    try {
      if (!c.masterdPid) await c.startMaster();
      if (c.node && !c.nodedPid) await c.restartNode();
      c.gnt('gnt-instance', 'remove', INSTANCE);
    } catch (err) {
      log(`cleanup: ${(err as Error).message}`);
    }
    const qpid = c.node ? pidFromFile(path.join(instDir(), 'qemu.pid')) : undefined;
    if (qpid && processAlive(qpid) && qpid === qemuPid0) process.kill(qpid, 'SIGKILL');
    await c.destroy();
    if (ceph) await stopCeph(ceph);
    for (const br of [BRIDGE, BRIDGE2]) spawnSync('ip', ['link', 'del', br]);
    if (build && build.root.includes('gnt-kill-build-')) fs.rmSync(build.root, { recursive: true, force: true });
  });

  it(`runs ${OPERATIONS} hotplug operations with ${NODED_KILLS} gnt-noded and ${MASTERD_KILLS} gnt-masterd SIGKILLs and every record agrees after each`, async () => {
    const plan: KillMode[] = [
      ...Array<KillMode>(NODED_KILLS_EARLY).fill('noded-early'),
      ...Array<KillMode>(NODED_KILLS_LATE).fill('noded-late'),
      ...Array<KillMode>(NODED_DOUBLE_KILLS).fill('noded-double'),
      ...Array<KillMode>(MASTERD_KILLS).fill('masterd'),
    ];
    assert.ok(plan.length <= OPERATIONS, 'more kills than operations');
    plan.push(...Array<KillMode>(OPERATIONS - plan.length).fill('none'));
    rng.shuffle(plan);

    // The starting point must agree, and gives the first fd baseline.
    let snap = await collect();
    for (const h of snap.cfg?.history ?? []) historySeen.add(h);
    for (const [k, v] of compare(snap)) {
      known.set(k, v);
      divergences.push({ op: 0, when: 'before the first operation', key: k, what: v });
      log(`DIVERGENCE before the first operation: ${v}`);
    }

    let opNo = 0;
    try {
      for (let i = 1; i <= Math.min(OPERATIONS, STOP_AFTER); i++) {
        opNo = i;
        const mode = plan[i - 1];
        if (!snap.cfg) snap = await collect();
        if (!snap.cfg) throw new Error(`op ${i}: the configuration cannot be read: ${snap.cfgError}`);
        const op = chooseOp(snap);
        stats.ops++;
        stats.byKind[op.kind] = (stats.byKind[op.kind] ?? 0) + 1;
        const delay =
          mode === 'noded-early' || mode === 'noded-double' ? rng.int(...EARLY_KILL_MS) : mode === 'noded-late' ? rng.int(...LATE_KILL_MS) : mode === 'masterd' ? rng.int(...MASTERD_KILL_MS) : 0;
        const pause = mode === 'none' ? 0 : rng.int(...RESTART_PAUSE_MS);
        masterTail.read();
        nodedTail.read();

        // Submit; the kill is timed from the moment the job id is printed.
        let jobId: string | undefined;
        let killed: Promise<number> | undefined;
        const doKill = async (): Promise<number> => {
          const t = Date.now();
          if (mode === 'masterd') {
            await c.killMaster();
            stats.masterdKills++;
          } else {
            await c.killNode();
            if (mode === 'noded-late') stats.nodedKillsLate++;
            else stats.nodedKillsEarly++;
          }
          return t;
        };
        let submittedAt = 0;
        const sub: CliRun = await c.gntAsync(op.command ?? ['gnt-instance', 'modify', '--hotplug', ...op.args, '--submit', INSTANCE], (line) => {
          if (jobId || !/^\d+$/.test(line.trim())) return;
          jobId = line.trim();
          submittedAt = Date.now();
          if (mode !== 'none') killed = sleep(delay).then(doKill);
        });
        if (!jobId) {
          stats.submitRefused++;
          if (mode !== 'none') killed = sleep(delay).then(doKill);
        }
        let killNote = '';
        let killedAt = 0;
        if (killed) {
          const at = await killed;
          killedAt = at;
          await sleep(pause);
          if (mode === 'masterd') await c.startMaster();
          else await c.restartNode();
          killNote = ` | SIGKILL ${mode === 'masterd' ? 'gnt-masterd' : 'gnt-noded'} ${submittedAt ? `${at - submittedAt} ms after submission` : 'after a refused submission'}, restarted after ${pause} ms`;
          if (mode === 'noded-double') {
            const again = rng.int(...RESTART_KILL_MS);
            await sleep(again);
            await c.killNode();
            stats.nodedKillsAtRestart++;
            await c.restartNode();
            killNote += `, SIGKILLed again ${again} ms after it listened and restarted`;
          }
        }

        // Settle: no operator command, at most SETTLE_TIMEOUT_MS.
        const t0 = Date.now();
        let agreeSinceTick: number | undefined;
        let current = new Map<string, string>();
        let settled = false;
        for (;;) {
          snap = await collect(jobId);
          current = compare(snap);
          const fresh = [...current.keys()].filter((k) => !known.has(k));
          if (fresh.length === 0) {
            if (agreeSinceTick === undefined) agreeSinceTick = snap.tick;
            else if (snap.tick - agreeSinceTick >= 2) {
              settled = true;
              break;
            }
          } else agreeSinceTick = undefined;
          if (Date.now() - t0 > SETTLE_TIMEOUT_MS) break;
          await sleep(300);
        }
        const settleMs = Date.now() - t0;
        if (settled) stats.settleMs.push(settleMs);
        else stats.unsettled++;

        // Did the kill land while the job was still running?
        if (killedAt && jobId && snap.job && (!snap.job.endedAt || Date.parse(snap.job.endedAt) > killedAt)) {
          stats.killsMidJob++;
          killNote += ' (mid-job)';
        }

        // The job's outcome.
        const status = snap.job?.status ?? (jobId ? 'unknown' : 'not submitted');
        if (status === 'success') {
          stats.success++;
          const miss = snap.cfg ? op.effect(snap.cfg) : 'no configuration';
          if (miss) current.set(`job-effect:${i}`, `job ${jobId} succeeded but ${miss}`);
        } else if (jobId) {
          stats.failed++;
          // A failed job whose change is in the configuration anyway: the node did it and the master learnt it later.
          if (snap.cfg && !op.effect(snap.cfg)) stats.failedButApplied++;
        }
        if (snap.job) noteRepairs(i, `job ${jobId}`, snap.job.log);
        for (const h of snap.cfg?.history ?? [])
          if (!historySeen.has(h)) {
            historySeen.add(h);
            repairs.push(`op ${i} instance history: ${h}`);
            stats.repairOps.add(i);
          }
        noteRepairs(i, 'gnt-masterd', masterTail.read().split('\n'));
        noteRepairs(i, 'gnt-noded', nodedTail.read().split('\n'));

        // fds flat for the same layout (only from states where everything agrees).
        const lay = layout(snap);
        const nodedPid = c.nodedPid;
        let fdNote = '';
        if ([...current.keys()].every((k) => FD_NEUTRAL.test(k)) && nodedPid && snap.qemuPid) {
          const [nf, qf] = [await stableFdSample(nodedPid, storageDir()), await stableFdSample(snap.qemuPid, storageDir())];
          if (nf && qf) {
            stats.fdChecks++;
            const base = fdBaseline.get(lay);
            if (!base) fdBaseline.set(lay, { noded: nf, qemu: qf, op: i });
            else {
              if (nodedFds(nf) !== nodedFds(base.noded))
                current.set(`fd-noded:${lay}:${nodedFds(nf)}`, `gnt-noded holds ${nodedFds(nf)} fds (besides ${nf.kinds.tcp ?? 0} TCP connections) with layout ${lay}, ${nodedFds(base.noded)} after op ${base.op} with the same layout (${fdKindsDiff(base.noded, nf)})`);
              if (qemuFds(qf) !== qemuFds(base.qemu))
                current.set(`fd-qemu:${lay}:${qemuFds(qf)}`, `QEMU holds ${qemuFds(qf)} fds (besides ${qf.kinds.tcp ?? 0} TCP connections) with layout ${lay}, ${qemuFds(base.qemu)} after op ${base.op} with the same layout (${fdKindsDiff(base.qemu, qf)})`);
            }
            if ((nf.kinds.tcp ?? 0) > MAX_NODED_TCP)
              current.set(`fd-noded-tcp:${nf.kinds.tcp}`, `gnt-noded holds ${nf.kinds.tcp} TCP connections (more than ${MAX_NODED_TCP}: a connection leak?)`);
            fdNote = ` fds noded ${nodedFds(nf)}+${nf.kinds.tcp ?? 0} tcp qemu ${qemuFds(qf)}+${qf.kinds.tcp ?? 0} tcp${base ? ` (as after op ${base.op})` : ' (first time)'}`;
          }
        }

        // What is new, what is still there, what healed.
        const fresh = [...current].filter(([k]) => !known.has(k));
        const healed = [...known.keys()].filter((k) => !current.has(k));
        for (const k of healed) {
          log(`  healed: ${known.get(k)}`);
          known.delete(k);
          stats.healed++;
        }
        for (const [k, v] of current) if (!k.startsWith('job-effect:')) known.set(k, v);
        const when = `op ${i} (${op.text}, job ${jobId ?? '-'} ${status}${killNote})`;
        for (const [k, v] of fresh) divergences.push({ op: i, when, key: k, what: v });
        const err = snap.job?.error ? ` "${snap.job.error.slice(0, 160)}"` : !jobId ? ` "${(sub.stderr || sub.stdout).trim().slice(0, 160)}"` : '';
        log(`op ${i}/${OPERATIONS} ${op.text}: job ${jobId ?? '-'} ${status}${err}${killNote} | ${settled ? `settled in ${settleMs} ms` : `NOT settled after ${settleMs} ms`}, ${lay}${snap.qemuCpus === undefined ? '' : ` qemu-vcpu-threads=${snap.qemuCpus}`}${fdNote}` +
          (fresh.length ? ` | ${fresh.length} NEW DIVERGENCE(S)` : '') + (known.size ? ` | ${known.size} open` : ''));
        for (const [, v] of fresh) log(`  DIVERGENCE: ${v}`);
      }
    } catch (err) {
      // A daemon that does not start again, a CLI that hangs...: the run cannot go on; report what it found so far.
      const what = `the run stopped: ${(err as Error).stack ?? String(err)}`;
      divergences.push({ op: opNo, when: `op ${opNo}`, key: 'fatal', what });
      log(`FATAL at op ${opNo}: ${what}`);
      if (!c.masterdPid) await c.startMaster().catch((e: Error) => log(`gnt-masterd does not start: ${e.message}`));
      if (!c.nodedPid) await c.restartNode().catch((e: Error) => log(`gnt-noded does not start: ${e.message}`));
    }

    // The end: gnt-cluster verify once, if it exists.
    if (clusterVerifyAvailable) {
      const r = c.gnt('gnt-cluster', 'verify', '--output', 'json');
      const v = parseVerify(r);
      log(`gnt-cluster verify at the end: exit ${r.code}, ${v.errors.length} difference(s)${[...v.errors, ...v.notes].map((l) => `\n        ${l}`).join('')}`);
      for (const l of v.errors)
        if (!known.has(`verify:${l}`)) divergences.push({ op: OPERATIONS, when: 'gnt-cluster verify at the end', key: `cluster-verify:${l}`, what: l });
      if (r.code !== 0 && !v.errors.length) divergences.push({ op: OPERATIONS, when: 'gnt-cluster verify at the end', key: 'cluster-verify-exit', what: `exit ${r.code}: ${(r.stderr || r.stdout).trim()}` });
    }

    finished = true;
    log('');
    log(`repairs observed (${repairs.length}):`);
    for (const r of repairs) log(`  ${r.slice(0, 300)}`);
    log(`divergences (${divergences.length}):`);
    for (const d of divergences) log(`  [${d.when}] ${d.what}`);
    if (known.size) log(`still open at the end: ${known.size}`);
    log(
      `KILL TEST SUMMARY (${new Date().toISOString()}, seed ${seed}, ${FULL ? 'full' : 'short'}): operations ${stats.ops} ` +
        `(${Object.entries(stats.byKind).map(([k, n]) => `${k} ${n}`).join(', ')}; jobs succeeded ${stats.success}, failed ${stats.failed} (of which the change was applied anyway ${stats.failedButApplied}), refused at submission ${stats.submitRefused}), ` +
        `noded kills ${stats.nodedKillsEarly + stats.nodedKillsLate + stats.nodedKillsAtRestart} (${stats.nodedKillsEarly} at ${EARLY_KILL_MS.join('-')} ms after submission, ${stats.nodedKillsLate} at ${LATE_KILL_MS.join('-')} ms, ${stats.nodedKillsAtRestart} right after a restart), masterd kills ${stats.masterdKills} ` +
        `(${stats.killsMidJob} of all kills while the job ran), repairs observed ${repairs.length} lines in ${stats.repairOps.size} operations, divergences ${divergences.length} (${new Set(divergences.map((d) => d.op)).size} operations; healed later ${stats.healed}, open at the end ${known.size}), ` +
        `not settled within ${SETTLE_TIMEOUT_MS / 1000} s ${stats.unsettled}, settle median ${median(stats.settleMs)} ms max ${Math.max(0, ...stats.settleMs)} ms, fd checks ${stats.fdChecks} over ${fdBaseline.size} layouts, ` +
        `gnt-instance verify ${verifyAvailable ? 'used' : 'SKIPPED (no such command)'}`,
    );
    assert.equal(divergences.length, 0, `${divergences.length} divergence(s):\n${divergences.map((d) => `[${d.when}] ${d.what}`).join('\n')}`);
  });
});
