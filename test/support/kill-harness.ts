/**
 * Helpers for the kill test (test/integration/kill.test.ts, issue 10): a
 * one-node cluster as real processes that can run from a frozen copy of the
 * build, a seeded random generator, and black-box readers of every record of
 * an instance's devices: the master's configuration (CLI), the node's runtime
 * file (JSON on disk), QEMU (its open fds, and `gnt-instance verify` when the
 * CLI has it), the host (taps, disk files) and the guest's own console.
 *
 * Nothing here imports product code: the test must keep working while the
 * internals change. It relies only on the CLI's commands and JSON output,
 * the daemons' command lines, the node's data directory layout
 * (<data>/<instance>/{runtime.json,console.log,qemu.pid}), the storage
 * directory layout (<storage>/<instance>/<disk>.img) and the test guest's
 * console format (docs/testing.md).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GUEST_DIR, REPO, tempDir } from './guest';
import { startDaemon, stopDaemon, type CliRun, type Daemon } from './cli-cluster';
import { freePort } from './noded';
import { countCpuList, emptyState, parseLine, type GuestState } from '../../src/hypervisor/guest-console';
import { runtimeTextOf } from './runtime-text';

// ---------------------------------------------------------------- randomness

/** mulberry32: small, seeded, reproducible. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  /** One of `items` with probability proportional to its weight. */
  weighted<T>(items: ReadonlyArray<{ item: T; weight: number }>): T {
    const total = items.reduce((n, x) => n + x.weight, 0);
    let r = this.next() * total;
    for (const x of items) {
      r -= x.weight;
      if (r < 0) return x.item;
    }
    return items[items.length - 1].item;
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}

// ---------------------------------------------------- a frozen copy of the build

/**
 * Other engineers rebuild dist/ while the test runs; a CLI or daemon started
 * in the middle of a rebuild would load half-written files. The test runs
 * every product process from a copy of dist/, proto/, the native addon and
 * node_modules made once at its start. GNT_KILL_TEST_SNAPSHOT=0
 * runs straight from the build instead. GNT_KILL_TEST_BUILD_ROOT=DIR takes
 * the build from another tree (e.g. `git archive HEAD` built elsewhere, to
 * test the last commit while the working tree is being edited).
 */
export function snapshotBuild(): { root: string; cli: string; noded: string; note: string } {
  const src = process.env.GNT_KILL_TEST_BUILD_ROOT ? path.resolve(process.env.GNT_KILL_TEST_BUILD_ROOT) : REPO;
  const inRepo = { root: src, cli: path.join(src, 'dist/src/master/cli/main.js'), noded: path.join(src, 'dist/src/noded/main.js') };
  if (process.env.GNT_KILL_TEST_SNAPSHOT === '0') return { ...inRepo, note: `running the build in ${src}/dist directly (GNT_KILL_TEST_SNAPSHOT=0)` };
  const root = tempDir('kill-build');
  const copy = (rel: string) => {
    const from = path.join(src, rel);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(root, rel), { recursive: true, dereference: false });
  };
  copy('dist/src');
  copy('proto');
  copy('build/Release/gnt_native.node');
  copy('package.json');
  // Copied too: an `npm ci` elsewhere empties node_modules for a while.
  fs.cpSync(fs.realpathSync(path.join(src, 'node_modules')), path.join(root, 'node_modules'), { recursive: true, verbatimSymlinks: true });
  const cli = path.join(root, 'dist/src/master/cli/main.js');
  const probe = spawnSync(process.execPath, [cli, 'gnt-cluster', 'help'], { encoding: 'utf8', timeout: 60_000 });
  if (probe.status !== 0) throw new Error(`the copy of the build in ${root} does not run (was ${src} being rebuilt or reinstalled?): ${probe.stderr || probe.stdout}`);
  return {
    root,
    cli,
    noded: path.join(root, 'dist/src/noded/main.js'),
    note: `running a copy of ${src}/dist made at ${new Date().toISOString()} in ${root}`,
  };
}

// ------------------------------------------------------------- the cluster

export interface KillNode {
  name: string;
  address: string;
  dataDir: string;
  storageDir: string;
  logFile: string;
  args: string[];
  daemon: Daemon;
}

const alive = (d: Daemon | undefined): d is Daemon => !!d && d.child.exitCode === null && d.child.signalCode === null;

/** A one-node cluster as processes (like TestCluster in cli-cluster.ts, but with a selectable build). */
export class KillCluster {
  readonly work = tempDir('kill');
  readonly clusterDir = path.join(this.work, 'cluster');
  readonly masterLog = path.join(this.work, 'masterd.log');
  master: Daemon | undefined;
  node!: KillNode;

  constructor(readonly build: { cli: string; noded: string }) {}

  gnt(prog: string, ...args: string[]): CliRun {
    const r = spawnSync(process.execPath, [this.build.cli, prog, ...args, '--cluster-dir', this.clusterDir], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
  }

  /** A CLI command as a child process; `onLine` sees each stdout line as it arrives. */
  gntAsync(args: string[], onLine?: (line: string) => void): Promise<CliRun> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [this.build.cli, ...args, '--cluster-dir', this.clusterDir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let partial = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        partial += d.toString();
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) onLine?.(l);
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  ok(r: CliRun, what: string): CliRun {
    if (r.code !== 0) throw new Error(`${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r;
  }

  async init(): Promise<void> {
    const port = await freePort();
    this.ok(this.gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${port}`, '--name', 'kill'), 'gnt-cluster init');
    await this.startMaster();
  }

  async startMaster(): Promise<void> {
    if (alive(this.master)) throw new Error('gnt-masterd is already running');
    this.master = await startDaemon([this.build.cli, 'gnt-masterd', '--cluster-dir', this.clusterDir], /gnt-masterd listening on/, this.masterLog);
  }

  /** SIGKILL of the gnt-masterd this cluster started (by its own child handle). */
  async killMaster(): Promise<void> {
    await stopDaemon(this.master, 'SIGKILL');
  }

  async addNode(name: string, extraArgs: string[] = []): Promise<KillNode> {
    const certs = path.join(this.work, `${name}-certs`);
    this.ok(this.gnt('gnt-cluster', 'issue-node-cert', name, '--out', certs), 'issue-node-cert');
    const port = await freePort();
    const dataDir = path.join(this.work, `${name}-data`);
    const storageDir = path.join(this.work, `${name}-storage`);
    fs.mkdirSync(dataDir, { recursive: true });
    fs.mkdirSync(storageDir, { recursive: true });
    const address = `127.0.0.1:${port}`;
    const args = [this.build.noded, '--name', name, '--listen', address, '--data-dir', dataDir, '--storage-dir', storageDir, '--image-dir', GUEST_DIR,
      '--ca', path.join(certs, 'ca.pem'), '--cert', path.join(certs, 'node.pem'), '--key', path.join(certs, 'node.key'), ...extraArgs];
    const logFile = path.join(this.work, `${name}.log`);
    const daemon = await startDaemon(args, new RegExp(`gnt-noded ${name} listening on`), logFile);
    this.node = { name, address, dataDir, storageDir, logFile, args, daemon };
    this.ok(this.gnt('gnt-node', 'add', name, '--address', address), 'gnt-node add');
    return this.node;
  }

  get nodedPid(): number | undefined {
    return alive(this.node?.daemon) ? this.node.daemon.child.pid : undefined;
  }

  get masterdPid(): number | undefined {
    return alive(this.master) ? this.master.child.pid : undefined;
  }

  /** SIGKILL of the gnt-noded this cluster started (its QEMUs keep running). */
  async killNode(): Promise<void> {
    await stopDaemon(this.node.daemon, 'SIGKILL');
  }

  async restartNode(): Promise<void> {
    if (alive(this.node.daemon)) throw new Error('gnt-noded is still running');
    this.node.daemon = await startDaemon(this.node.args, new RegExp(`gnt-noded ${this.node.name} listening on`), this.node.logFile);
  }

  instanceDir(instance: string): string {
    return path.join(this.node.dataDir, instance);
  }

  async destroy(keepWork = false): Promise<void> {
    await stopDaemon(this.node?.daemon);
    await stopDaemon(this.master);
    if (!keepWork) fs.rmSync(this.work, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------ the guest's view

export interface GuestView {
  seq: number;
  nets: GuestState['nets'];
  blks: GuestState['blks'];
  cpusPresent: number;
  cpusOnline: number;
  memTotalKiB: number;
}

/**
 * Follows the guest's console log (docs/testing.md format): the latest state
 * block, the heartbeat counter ("gnt-guest tick N", whole seconds since the
 * report loop started), and every sign of a reboot: a second
 * "gnt-guest init:" line or a heartbeat that goes back.
 */
/** The counts the kill test compares, from a parsed state block (guest-console.ts). */
function viewOf(s: GuestState): GuestView {
  return {
    seq: s.seq,
    nets: s.nets.map((n) => ({ ...n, mac: (n.mac || '').toLowerCase() })),
    blks: s.blks,
    cpusPresent: countCpuList(s.cpusPresent),
    cpusOnline: countCpuList(s.cpusOnline),
    memTotalKiB: s.memTotalKiB,
  };
}

export class ConsoleFollower {
  private offset = 0;
  private partial = '';
  private block: GuestState | undefined;
  latest: GuestView | undefined;
  lastTick = -1;
  inits = 0;
  readonly rebootSigns: string[] = [];

  constructor(readonly file: string) {}

  poll(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) {
        this.rebootSigns.push(`console log shrank from ${this.offset} to ${size} bytes (replaced?)`);
        this.offset = 0;
      }
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        this.partial += buf.toString('utf8');
      }
    } finally {
      fs.closeSync(fd);
    }
    const lines = this.partial.split('\n');
    this.partial = lines.pop() ?? '';
    for (const raw of lines) this.line(raw.replace(/\r/g, ''));
  }

  private line(line: string): void {
    if (/gnt-guest init:/.test(line)) {
      this.inits++;
      if (this.inits > 1) this.rebootSigns.push(`the guest booted again ("${line.trim()}", boot #${this.inits})`);
      return;
    }
    const tick = /gnt-guest tick (\d+)/.exec(line);
    if (tick) {
      const n = Number(tick[1]);
      if (n < this.lastTick) this.rebootSigns.push(`the guest's heartbeat went back from ${this.lastTick} to ${n}`);
      this.lastTick = n;
      return;
    }
    const begin = /gnt-guest begin (\d+)/.exec(line);
    if (begin) {
      this.block = emptyState(Number(begin[1]));
      return;
    }
    const b = this.block;
    if (!b) return;
    if (/gnt-guest end \d+/.test(line)) {
      this.latest = viewOf(b);
      this.block = undefined;
      return;
    }
    parseLine(b, line);
  }
}

export const slotAddr = (slot: number): string => `0000:00:${slot.toString(16).padStart(2, '0')}.0`;

// ------------------------------------------------------------ the runtime file

export interface RtNic {
  uuid: string;
  mac: string;
  pci: number | null;
  tap?: string;
  state?: string;
  /** Bridge ('' none), link state, rate limit (Mbit/s, 0 none): issue 12's live NIC changes. */
  link: string;
  linkState: 'up' | 'down';
  rateMbit: number;
}

export interface RtDisk {
  uuid: string;
  path: string;
  pci: number | null;
  state?: string;
  /** virtio-blk (block_devices), a SCSI LUN (scsi_disks: target and LUN) or virtio-pmem (pmem_devices). */
  flavour: 'virtio' | 'scsi' | 'pmem';
  target?: number;
  lun?: number;
  /** 'blockdev' or 'rbd' when not a file disk; the RBD image's name (rbd only). */
  template?: string;
  rbdImage?: string;
  /** The node's size_bytes (set once grown) and grow_to (a grow still open). */
  sizeBytes?: number;
  growTo?: number;
}

export interface RtOperation {
  id: string;
  kind: string;
  action: string;
  uuid: string;
  state: string;
}

export interface RuntimeView {
  error?: string;
  nics: RtNic[];
  disks: RtDisk[];
  bootVcpus: number;
  vcpus: number;
  maxVcpus: number;
  bootMemoryMiB: number;
  memoryMiB: number;
  maxMemoryMiB: number;
  dimms: Array<{ id: string; sizeMiB: number }>;
  pendingVcpus?: number;
  pendingMemoryMiB?: number;
  /** vCPU threads the QEMU process has created (TCG limit), when the file records it. */
  cpuThreads?: { pid: number; created: number };
  /** Operation records (issue 10's journal), if the file has any. */
  operations: RtOperation[];
  /** The virtio-scsi controller is recorded: while QEMU runs it stays when its last LUN goes or when the LUN add that brought it rolled back. */
  scsiController?: boolean;
  migration?: unknown;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown, dflt = 0): number => (typeof v === 'number' ? v : typeof v === 'string' && v !== '' && !isNaN(Number(v)) ? Number(v) : dflt);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/**
 * Reads the node's runtime file, tolerating the shapes it may take while
 * issue 10 lands (version 2 object: nics, block_devices, resources; an
 * operation journal under operations/journal/intents).
 */
export function readRuntime(file: string): RuntimeView {
  const empty: RuntimeView = { nics: [], disks: [], bootVcpus: 0, vcpus: 0, maxVcpus: 0, bootMemoryMiB: 0, memoryMiB: 0, maxMemoryMiB: 0, dimms: [], operations: [] };
  let raw: unknown;
  try {
    // As the node reads it: the runtime file with its journal folded in.
    raw = JSON.parse(runtimeTextOf(file));
  } catch (err) {
    return { ...empty, error: `cannot read ${file}: ${(err as Error).message}` };
  }
  if (!isObj(raw)) return { ...empty, error: `${file} is not a JSON object (Ganeti list format?)` };
  const nics: RtNic[] = list(raw.nics).filter(isObj).map((n) => ({
    uuid: str(n.uuid), mac: str(n.mac).toLowerCase(), pci: typeof n.pci === 'number' ? n.pci : null,
    ...(typeof n.tap === 'string' ? { tap: n.tap } : {}), ...(typeof n.state === 'string' && n.state ? { state: n.state } : {}),
    link: str(n.link), linkState: n.link_state === 'down' ? 'down' : 'up', rateMbit: num(n.rate_mbit),
  }));
  const diskOf = (flavour: RtDisk['flavour']) => (d: Obj): RtDisk => ({
    uuid: str(d.uuid), path: str(d.path), pci: typeof d.pci === 'number' ? d.pci : null,
    ...(typeof d.state === 'string' && d.state ? { state: d.state } : {}),
    flavour,
    ...(flavour === 'scsi' ? { target: num(d.target), lun: num(d.lun) } : {}),
    ...(typeof d.template === 'string' ? { template: d.template } : {}),
    ...(isObj(d.rbd) && typeof d.rbd.image === 'string' ? { rbdImage: d.rbd.image } : {}),
    ...(typeof d.size_bytes === 'number' ? { sizeBytes: d.size_bytes } : {}),
    ...(typeof d.grow_to === 'number' ? { growTo: d.grow_to } : {}),
  });
  const disks: RtDisk[] = [
    ...list(raw.block_devices ?? raw.disks).map((d) => (Array.isArray(d) ? d[0] : d)).filter(isObj).map(diskOf('virtio')),
    ...list(raw.scsi_disks).filter(isObj).map(diskOf('scsi')),
    ...list(raw.pmem_devices).filter(isObj).map(diskOf('pmem')),
  ];
  const r = isObj(raw.resources) ? raw.resources : {};
  const cpus = list(r.cpus);
  const dimms = list(r.dimms).filter(isObj).map((d) => ({ id: str(d.id), sizeMiB: num(d.sizeMiB ?? d.size_mib) }));
  const vm = isObj(r.virtioMem) ? r.virtioMem : undefined;
  const bootVcpus = num(r.bootVcpus);
  const bootMemoryMiB = num(r.bootMemoryMiB);
  const journal = isObj(raw.operations) ? raw.operations : isObj(raw.journal) ? raw.journal : undefined;
  const records = journal ? list(journal.records) : list(raw.operations ?? raw.intents);
  const operations: RtOperation[] = records.filter(isObj).map((o) => ({
    id: str(o.id ?? o.operation_id), kind: str(o.kind), action: str(o.action), uuid: str(o.uuid ?? o.device_uuid), state: str(o.state),
  }));
  const ct = isObj(r.cpuThreads) ? { pid: num(r.cpuThreads.pid), created: num(r.cpuThreads.created) } : undefined;
  return {
    nics, disks, bootVcpus, vcpus: bootVcpus + cpus.length, maxVcpus: num(r.maxVcpus),
    bootMemoryMiB, memoryMiB: bootMemoryMiB + dimms.reduce((n, d) => n + d.sizeMiB, 0) + num(vm?.requestedMiB), maxMemoryMiB: num(r.maxMemoryMiB),
    dimms,
    ...(r.pendingVcpus !== undefined ? { pendingVcpus: num(r.pendingVcpus) } : {}),
    ...(r.pendingMemoryMiB !== undefined ? { pendingMemoryMiB: num(r.pendingMemoryMiB) } : {}),
    ...(ct ? { cpuThreads: ct } : {}),
    operations,
    ...(isObj(raw.scsi_controller) ? { scsiController: true } : {}),
    ...(raw.migration ? { migration: raw.migration } : {}),
  };
}

// --------------------------------------------------------------------- host

/**
 * The process's open fds: the count and a count per kind of target (tcp,
 * tcp-listen, unix, pipe, tun, disk-file, anon:eventfd, ...).
 */
export interface FdSample {
  count: number;
  kinds: Record<string, number>;
  targets: string[];
}

/** Socket inodes of the network namespace of `pid`: TCP (listening or not) and unix. */
function socketInodes(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const [file, kind] of [['tcp', 'tcp'], ['tcp6', 'tcp']] as const) {
    try {
      for (const line of fs.readFileSync(`/proc/${pid}/net/${file}`, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9) out.set(f[9], f[3] === '0A' ? `${kind}-listen` : kind);
      }
    } catch {
      // no such table
    }
  }
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/net/unix`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 6) out.set(f[6], 'unix');
    }
  } catch {
    // no unix table
  }
  return out;
}

export function fdKind(target: string, storageDir: string, sockets?: Map<string, string>): string {
  const sock = /^socket:\[(\d+)\]$/.exec(target);
  if (sock) return sockets?.get(sock[1]) ?? 'socket';
  if (target.startsWith('pipe:')) return 'pipe';
  if (target.startsWith('anon_inode:')) return target.replace(/^anon_inode:\[?([^\]]*)\]?$/, 'anon:$1');
  if (target === '/dev/net/tun') return 'tun';
  if (target.startsWith(storageDir + '/')) return target.endsWith(' (deleted)') ? 'disk-file (deleted)' : 'disk-file';
  if (target.startsWith('/memfd:')) return 'memfd';
  if (target.startsWith('/dev/')) return target;
  return 'file';
}

export function fdSample(pid: number, storageDir: string): FdSample | undefined {
  const dir = `/proc/${pid}/fd`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const targets: string[] = [];
  for (const n of names) {
    try {
      targets.push(fs.readlinkSync(path.join(dir, n)));
    } catch {
      // closed between readdir and readlink
    }
  }
  const kinds: Record<string, number> = {};
  const sockets = targets.some((t) => t.startsWith('socket:')) ? socketInodes(pid) : undefined;
  for (const t of targets) {
    const k = fdKind(t, storageDir, sockets);
    kinds[k] = (kinds[k] ?? 0) + 1;
  }
  return { count: targets.length, kinds, targets: targets.sort() };
}

/** A sample taken twice, 300 ms apart, until two in a row agree (transient connections settle). */
export async function stableFdSample(pid: number, storageDir: string, tries = 6): Promise<FdSample | undefined> {
  let prev = fdSample(pid, storageDir);
  for (let i = 0; i < tries && prev; i++) {
    await sleep(300);
    const cur = fdSample(pid, storageDir);
    if (cur && cur.count === prev.count) return cur;
    prev = cur;
  }
  return prev;
}

export function fdKindsDiff(a: FdSample, b: FdSample): string {
  const keys = [...new Set([...Object.keys(a.kinds), ...Object.keys(b.kinds)])].sort();
  return keys.filter((k) => (a.kinds[k] ?? 0) !== (b.kinds[k] ?? 0)).map((k) => `${k} ${a.kinds[k] ?? 0} -> ${b.kinds[k] ?? 0}`).join(', ');
}

export function taps(): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => n.startsWith('gnttap')).sort();
}

/** The host side of a tap: the bridge it is enslaved to ('' none) and the rate of its tbf root qdisc in Mbit/s (0 none). */
export function tapHostState(tap: string): { bridge: string; rateMbit: number } {
  let bridge = '';
  try {
    bridge = path.basename(fs.readlinkSync(`/sys/class/net/${tap}/master`));
  } catch {
    // not enslaved (or gone)
  }
  const tc = spawnSync('tc', ['qdisc', 'show', 'dev', tap], { encoding: 'utf8' });
  const m = /qdisc tbf .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit/.exec(tc.stdout ?? '');
  const scale: Record<string, number> = { '': 1e-6, K: 1e-3, M: 1, G: 1000 };
  return { bridge, rateMbit: m ? Math.round(Number(m[1]) * scale[m[2]]) : 0 };
}

/** Every file under `dir` (relative paths are joined back to absolute ones). */
export function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out.sort();
}

export function pidFromFile(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** New text appended to a log file since the last call. */
export class LogTail {
  private offset = 0;
  constructor(readonly file: string) {}
  read(): string {
    try {
      const size = fs.statSync(this.file).size;
      if (size < this.offset) this.offset = 0;
      if (size === this.offset) return '';
      const fd = fs.openSync(this.file, 'r');
      try {
        const buf = Buffer.alloc(size - this.offset);
        fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        return buf.toString('utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return '';
    }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * QEMU's vCPU threads ("CPU N/TCG" or "CPU N/KVM"): the vCPUs QEMU runs now.
 * QEMU names its threads only with `-name ...,debug-threads=on`; without it
 * every thread is "qemu-system-x86" and this returns undefined (a guest
 * always has at least one vCPU, so 0 named threads means "not named").
 */
export function qemuVcpuThreads(pid: number): number | undefined {
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let n = 0;
  for (const t of tasks) {
    try {
      if (/^CPU \d+\/(TCG|KVM)/.test(fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8'))) n++;
    } catch {
      // the thread ended meanwhile
    }
  }
  return n || undefined;
}
