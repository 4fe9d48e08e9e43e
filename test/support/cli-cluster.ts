/**
 * A whole cluster as real processes for end-to-end tests: gnt-cluster init,
 * gnt-masterd, any number of gnt-noded, and the CLI run as child processes.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { freePort } from './noded';
import { GUEST_DIR, REPO, tempDir } from './guest';

const CLI = path.join(REPO, 'dist/src/master/cli/main.js');
const NODED = path.join(REPO, 'dist/src/noded/main.js');

export const CLI_MAIN = CLI;
export const NODED_MAIN = NODED;

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A long-running process (gnt-masterd, gnt-noded) started by a test. */
export interface Daemon {
  child: ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** Resolves with the exit code and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node ARGS` and resolves once it prints a line matching `ready`. */
export function startDaemon(args: string[], ready: RegExp, logFile: string, env: Record<string, string> = {}): Promise<Daemon> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const log = fs.createWriteStream(logFile, { flags: 'a' });
    let out = '';
    let err = '';
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.once('exit', (code, signal) => r({ code, signal })),
    );
    const timer = setTimeout(() => reject(new Error(`no "${ready}" within 30 s: ${out}${err}`)), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      log.write(d);
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve({ child, stderr: () => err, exited });
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      log.write(d);
      err += d.toString();
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(args.find((a) => a.endsWith('.js')) ?? args[0])} exited with ${code ?? signal}: ${out}${err}`));
    });
  });
}

/** Signals the daemon (by its own handle) and waits for it to exit. */
export async function stopDaemon(d: Daemon | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill(signal);
  await d.exited;
}

/** Runs one gnt-* command to completion against the cluster in `clusterDir`. */
export function runCli(clusterDir: string, prog: string, ...args: string[]): CliRun {
  const r = spawnSync(process.execPath, [CLI, prog, ...args, '--cluster-dir', clusterDir], { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The same as a concurrent child process (what an operator's shell runs). */
export function runCliAsync(clusterDir: string, prog: string, ...args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, prog, ...args, '--cluster-dir', clusterDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export function expectOk(r: CliRun): CliRun {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

export function expectJson<T>(r: CliRun): T {
  return JSON.parse(expectOk(r).stdout) as T;
}

export interface AddNodeOptions {
  /** Storage directory (disks); give two nodes the same one for shared storage (Ganeti's sharedfile). Default: <work>/<name>-storage. */
  storageDir?: string;
  /** Extra gnt-noded arguments. */
  extraArgs?: string[];
  /** Extra environment of the daemon. */
  env?: Record<string, string>;
}

/** A node daemon of a TestCluster: how it was started, so it can be killed and started again the same way. */
export interface TestNode {
  name: string;
  port: number;
  /** host:port the master calls. */
  address: string;
  dataDir: string;
  storageDir: string;
  certsDir: string;
  logFile: string;
  /** The exact `node` arguments it runs with. */
  args: string[];
  env: Record<string, string>;
  daemon: Daemon;
}

const isAlive = (d: Daemon | undefined): d is Daemon => !!d && d.child.exitCode === null && d.child.signalCode === null;

export class TestCluster {
  readonly work = tempDir('cluster');
  readonly clusterDir = path.join(this.work, 'cluster');
  readonly masterLog = path.join(this.work, 'masterd.log');
  private master: Daemon | undefined;
  private readonly nodes = new Map<string, TestNode>();

  /** Runs a CLI command to completion (synchronously). */
  gnt(prog: string, ...args: string[]): CliRun {
    return runCli(this.clusterDir, prog, ...args);
  }

  /** Runs a CLI command as a concurrent process. */
  gntAsync(prog: string, ...args: string[]): Promise<CliRun> {
    return runCliAsync(this.clusterDir, prog, ...args);
  }

  ok(r: CliRun): CliRun {
    return expectOk(r);
  }

  json<T>(r: CliRun): T {
    return expectJson<T>(r);
  }

  /** `gnt-instance info NAME --output json`: the configuration next to the node's runtime view. */
  instanceInfo<T>(name: string): T {
    return this.json<T>(this.gnt('gnt-instance', 'info', name, '--output', 'json'));
  }

  /** Polls instanceInfo until the node knows what the guest reports and `pred` holds. */
  async waitGuest<T extends { runtime: { guest: { known: boolean } } }>(name: string, pred: (d: T) => boolean, what: string, timeoutMs = 90_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = this.instanceInfo<T>(name);
      if (d.runtime.guest.known && pred(d)) return d;
      if (Date.now() > deadline) throw new Error(`${name}: guest never showed ${what}: ${JSON.stringify(d.runtime)}`);
      await new Promise((r) => setTimeout(r, 400));
    }
  }

  /** gnt-cluster init and a running gnt-masterd (with `env`, e.g. { GNT_MASTERD_CRASH_POINT: 'after-migration-start' }). */
  async init(env: Record<string, string> = {}, masterArgs: string[] = []): Promise<void> {
    const port = await freePort();
    this.ok(this.gnt('gnt-cluster', 'init', '--master-address', `127.0.0.1:${port}`, '--name', 'e2e'));
    this.masterArgs = masterArgs;
    await this.startMaster(env);
  }

  /** Extra gnt-masterd arguments given to init(), used at every (re)start. */
  private masterArgs: string[] = [];

  /** The running master daemon, if any. */
  get masterDaemon(): Daemon | undefined {
    return this.master;
  }

  /** Starts gnt-masterd (it must not be running); resolves once it listens. */
  async startMaster(env: Record<string, string> = {}): Promise<Daemon> {
    if (isAlive(this.master)) throw new Error('gnt-masterd is already running');
    this.master = await startDaemon([CLI, 'gnt-masterd', '--cluster-dir', this.clusterDir, ...this.masterArgs], /gnt-masterd listening on/, this.masterLog, env);
    return this.master;
  }

  /** Kills the master (SIGKILL by default) and waits until it is gone. */
  async killMaster(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await stopDaemon(this.master, signal);
  }

  /** Stops the master (SIGKILL by default) and starts it again, with `env` (none by default: no crash point). */
  async restartMaster(env: Record<string, string> = {}, signal: NodeJS.Signals = 'SIGKILL'): Promise<Daemon> {
    await this.killMaster(signal);
    return this.startMaster(env);
  }

  /** Waits until the master exits by itself (e.g. at a crash point); rejects after `timeoutMs`. */
  async waitMasterExit(timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const m = this.master;
    if (!m) throw new Error('no master was started');
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        m.exited,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`gnt-masterd did not exit within ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts a node daemon with a certificate issued by the cluster, and adds it (gnt-node add). */
  async addNode(name: string, opts: AddNodeOptions = {}): Promise<TestNode> {
    const certsDir = path.join(this.work, `${name}-certs`);
    this.ok(this.gnt('gnt-cluster', 'issue-node-cert', name, '--out', certsDir));
    const port = await freePort();
    const dataDir = path.join(this.work, `${name}-data`);
    const storageDir = opts.storageDir ?? path.join(this.work, `${name}-storage`);
    fs.mkdirSync(dataDir, { recursive: true });
    fs.mkdirSync(storageDir, { recursive: true });
    const address = `127.0.0.1:${port}`;
    const args = [NODED, '--name', name, '--listen', address, '--data-dir', dataDir, '--storage-dir', storageDir, '--image-dir', GUEST_DIR,
      '--ca', path.join(certsDir, 'ca.pem'), '--cert', path.join(certsDir, 'node.pem'), '--key', path.join(certsDir, 'node.key'),
      ...(opts.extraArgs ?? [])];
    const logFile = path.join(this.work, `${name}.log`);
    const env = opts.env ?? {};
    const daemon = await startDaemon(args, new RegExp(`gnt-noded ${name} listening on`), logFile, env);
    const node: TestNode = { name, port, address, dataDir, storageDir, certsDir, logFile, args, env, daemon };
    this.nodes.set(name, node);
    this.ok(this.gnt('gnt-node', 'add', name, '--address', address));
    return node;
  }

  /** A directory under the test's work dir, created; e.g. one storage dir for two nodes. */
  dir(name: string): string {
    const d = path.join(this.work, name);
    fs.mkdirSync(d, { recursive: true });
    return d;
  }

  /** A node added with addNode. */
  node(name: string): TestNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no test node "${name}" (added: ${[...this.nodes.keys()].join(', ') || 'none'})`);
    return n;
  }

  /** Kills a node daemon (SIGKILL by default: its QEMUs keep running) and waits until it is gone. */
  async killNode(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await stopDaemon(this.node(name).daemon, signal);
  }

  /** Starts a killed node daemon again with the same arguments, port and directories. */
  async restartNode(name: string): Promise<TestNode> {
    const n = this.node(name);
    if (isAlive(n.daemon)) throw new Error(`gnt-noded ${name} is still running: killNode first`);
    n.daemon = await startDaemon(n.args, new RegExp(`gnt-noded ${name} listening on`), n.logFile, n.env);
    return n;
  }

  async destroy(): Promise<void> {
    for (const n of this.nodes.values()) await stopDaemon(n.daemon);
    if (this.master) await stopDaemon(this.master);
    // A test that failed before removing its instances leaves their QEMUs
    // running (they outlive gnt-noded): kill those our nodes started, by the
    // pid files in their data directories, before the directories go.
    for (const n of this.nodes.values()) await killLeftQemus(n.dataDir);
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

/** SIGKILLs every QEMU whose pid file (DATA_DIR/INSTANCE/qemu.pid) names a live process running QEMU, and waits for it to go. */
async function killLeftQemus(dataDir: string): Promise<void> {
  let names: string[] = [];
  try {
    names = fs.readdirSync(dataDir);
  } catch {
    return;
  }
  for (const name of names) {
    let pid: number;
    try {
      pid = Number(fs.readFileSync(path.join(dataDir, name, 'qemu.pid'), 'utf8').trim());
    } catch {
      continue;
    }
    const isQemu = (): boolean => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0].includes('qemu-system');
      } catch {
        return false;
      }
    };
    if (!Number.isInteger(pid) || pid <= 0 || !isQemu()) continue;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && isQemu(); i++) await new Promise((r) => setTimeout(r, 100));
  }
}
